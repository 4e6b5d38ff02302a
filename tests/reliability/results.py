"""A pytest plugin (registered by tests/conftest.py): the outcome of every test of a run, merged into
var/reliability/results.json (a partial run updates only what it ran), so that `manage.py
reliability_report` can tell, in RELIABILITY.md, when each listed proof last passed."""

import json
import os
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[2] / "var" / "reliability" / "results.json"
_outcomes: dict[str, dict] = {}


def pytest_runtest_logreport(report):
    entry = _outcomes.setdefault(report.nodeid, {"outcome": "passed", "seconds": 0.0})
    entry["seconds"] = round(entry["seconds"] + report.duration, 2)
    if report.failed:
        entry["outcome"] = "failed" if report.when == "call" else "error"
    elif report.skipped and entry["outcome"] == "passed":
        entry["outcome"] = "skipped"


def pytest_sessionfinish(session, exitstatus):
    if not _outcomes or hasattr(session.config, "workerinput"):
        return
    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    try:
        previous = json.loads(RESULTS.read_text())
    except (OSError, ValueError):
        previous = {}
    tests = previous.get("tests", {}) if isinstance(previous, dict) else {}
    for nodeid, entry in _outcomes.items():
        tests[nodeid] = {**entry, "at": now}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"updatedAt": now, "tests": tests}, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, RESULTS)
