"""Figures of the hardening runs for RELIABILITY.md: var/reliability/<name>.json (the same shape as
tests/reliability/figures.py writes, plus the figures at the top level), and a line in pytest's summary."""

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings

FIGURES_DIR = Path(settings.BASE_DIR) / "var" / "reliability"
SUMMARY: list[str] = []  # printed by conftest.pytest_terminal_summary


def record(name: str, *, test: str, cases: int, failures: int, line: str, **figures) -> dict:
    data = {
        "name": name,
        "test": test,
        "finishedAt": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        **figures,
        "cases": cases,
        "failures": failures,
        "faultsInjected": None,
        "losses": failures,
        "figures": figures,
    }
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    path = FIGURES_DIR / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
    SUMMARY.append(line)
    return data
