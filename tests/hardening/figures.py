"""Figures of the hardening runs for RELIABILITY.md: var/reliability/<name>.json (the same shape as
tests/reliability/figures.py writes, plus the figures at the top level), and a line in pytest's summary."""

from tests.reliability import figures as reliability_figures

SUMMARY: list[str] = []  # printed by conftest.pytest_terminal_summary


def record(name: str, *, test: str, cases: int, failures: int, line: str, **figures) -> dict:
    data = reliability_figures.record(
        name,
        test=test,
        cases=cases,
        faults_injected=None,
        losses=failures,
        top_level={**figures, "failures": failures},
        **figures,
    )
    SUMMARY.append(line)
    return data
