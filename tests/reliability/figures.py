"""What a reliability test did and what came out, written to var/reliability/<name>.json for
`manage.py reliability_report`, which renders RELIABILITY.md's figures table from the latest run.

Each file: {"name", "test" (the pytest node id), "finishedAt", "cases", "faultsInjected", "losses",
"figures": {...}}. A test writes its figures before it asserts on them, so a failing run is reported with
the losses it found rather than leaving the previous run's figures in place."""

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings

FIGURES_DIR = Path(settings.BASE_DIR) / "var" / "reliability"


def record(
    name: str, *, test: str, cases: int, faults_injected: int | None, losses: int, top_level=None, **figures
) -> dict:
    """Write the file; `top_level` adds keys beside "cases" (the hardening runs repeat their figures there)."""
    data = {
        "name": name,
        "test": test,
        "finishedAt": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        **(top_level or {}),
        "cases": cases,
        "faultsInjected": faults_injected,
        "losses": losses,
        "figures": figures,
    }
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    path = FIGURES_DIR / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
    return data
