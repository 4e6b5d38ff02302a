"""The guarded HTTP client for URLs partners and platforms hand us (avatars, media, webhooks) connects to the
very address it judged public, never to what a later lookup of the name answers (DNS rebinding)."""

import socket

import httpx
import pytest

from config import netguard
from tests.hardening.test_limits import Listener


@pytest.fixture
def internal():
    listener = Listener()  # an internal service on 127.0.0.1
    yield listener
    listener.close()


def test_a_name_that_rebinds_after_the_guards_lookup_never_reaches_the_internal_address(monkeypatch, internal):
    """The attacker's DNS answers `127.0.0.2` (taken as public here) to the guard's lookup and the internal
    127.0.0.1 to any lookup after it. The guard must connect to the address it checked (nothing listens
    there: the connection fails); resolving the name again to connect would hand the request to the internal
    service."""
    real = socket.getaddrinfo
    lookups: list[str] = []

    def getaddrinfo(host, port, *args, **kwargs):
        if host != "rebind-late.example.test":
            return real(host, port, *args, **kwargs)
        address = "127.0.0.2" if not lookups else "127.0.0.1"
        lookups.append(address)
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(netguard, "_ip_is_public", lambda ip: str(ip) == "127.0.0.2")

    with netguard.public_client(allow_private=False, timeout=2) as client, pytest.raises(httpx.ConnectError):
        client.get(f"http://rebind-late.example.test:{internal.port}/avatar.png")

    assert lookups[0] == "127.0.0.2"
    assert internal.requests == []
