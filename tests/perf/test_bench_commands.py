"""The bench commands run end to end in their quick mode: real PostgreSQL, Redis, gunicorn and Celery
processes, and they report a run without duplicates or lost posts. Speed is what the commands measure
(BENCHMARKS.md); nothing here asserts a timing."""

import json
import os
import signal
import subprocess
import sys

from django.conf import settings

TIMEOUT = 150


def run_command(*args: str) -> dict:
    proc = subprocess.Popen(
        [sys.executable, "manage.py", *args, "--quick", "--json", "--db-name", f"layers_bench_smoke_{os.getpid()}"],
        cwd=settings.BASE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the command and everything it starts form one group, killed on timeout
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def test_bench_publish_quick_publishes_every_post_once_in_every_variant():
    report = run_command("bench_publish")

    assert [phase["phase"] for phase in report["phases"]] == ["pipeline", "baseline", "baseline_threads", "floor"]
    for phase in report["phases"]:
        assert phase["duplicates"] == 0, phase
        assert phase["lost"] == 0, phase
        assert phase["published"] == phase["posts"] > 0, phase
        assert not phase["timed_out"], phase
    assert report["duplicates"] == 0 and report["lost"] == 0
    assert set(report["ratios"]) == {"pipeline_vs_floor", "pipeline_vs_baseline", "pipeline_vs_baseline_threads"}


def test_bench_api_quick_reports_every_endpoint_in_process_and_under_load():
    report = run_command("bench_api")

    names = [row["name"] for row in report["in_process"]]
    assert names[0] == "trivial DRF view (floor)"
    assert any(name.startswith("list social accounts") for name in names)
    for row in report["in_process"]:
        assert row["p50_ms"] > 0 and row["queries"] >= 1, row
    assert [row["name"] for row in report["load"]][0] == "/healthz"
    for row in report["load"]:
        assert row["requests"] > 0 and row["errors"] == 0, row


def test_bench_billing_quick_charges_every_due_lease_once_and_nothing_on_the_second_run():
    report = run_command("bench_billing")

    assert report["problems"] == []
    assert report["leases"] > 0 and len(report["rounds"]) == 1
    (round_,) = report["rounds"]
    assert round_["first_charged"] == round_["floor_rows"] == report["leases"]
    assert round_["second_charged"] == 0
    assert report["floor_seconds"] > 0 and report["first_seconds"] > 0
    # Finance's monthly report on the charged data: the CSV holds every charge of the month, the page 500.
    finance = report["finance_report"]
    assert finance["csv_rows"] == finance["charges"] > 0
    assert finance["page_rows"] == min(500, finance["charges"])


def test_a_refused_bench_command_with_json_prints_its_one_json_object_and_exits_1():
    """README: every Layers command with --json prints exactly one JSON object, `{"error": {"message": …}}`
    (exit status 1) when it is refused. The bench commands printed nothing on stdout (a bad value) or argparse's
    usage on stderr with exit status 2 (an unknown option). Refused before anything is started."""
    for args in (("bench_publish", "--posts", "0"), ("bench_billing", "--no-such-option"), ("bench_api", "--x")):
        done = subprocess.run(
            [sys.executable, "manage.py", *args, "--json"],
            cwd=settings.BASE_DIR,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert done.returncode == 1, (args, done.returncode, done.stderr[-500:])
        [line] = done.stdout.strip().splitlines()
        assert json.loads(line)["error"]["message"], args


def test_bench_billing_times_the_same_month_on_every_run_the_latest_of_those_tied(owner):
    # Months tied for the most charges were picked in whatever order the database grouped them: two runs over
    # the same data could time different months' reports, and their figures not compare.
    from datetime import UTC, datetime

    from billing.bench import time_finance_report
    from tests.billing.factories import lease_assign

    for month in (3, 9, 6, 4, 8):
        lease_assign(owner, at=datetime(2026, month, 10, tzinfo=UTC))

    assert time_finance_report().month == "2026-09"
