import socket

import pytest

LOOPBACK = {"localhost", "127.0.0.1", "::1", "testserver"}


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Fuzzed input names arbitrary hosts (webhook URLs, return URLs): no name outside loopback resolves,
    so nothing a test does can leave the machine."""
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name.lower().strip("[]") not in LOOPBACK:
            raise socket.gaierror(socket.EAI_NONAME, f"tests resolve loopback names only, not {name!r}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def pytest_terminal_summary(terminalreporter):
    from tests.hardening.figures import SUMMARY

    for line in SUMMARY:
        terminalreporter.write_line(line)
