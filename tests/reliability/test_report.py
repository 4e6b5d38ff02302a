"""`manage.py reliability_report` rewrites only RELIABILITY.md's generated blocks, from whatever the latest
run left in var/reliability/: a missing figures file or test reads "not run", a loss is shown as it is."""

import io
import json

from django.core.management import call_command

DOC = """# Reliability

**1. A promise.** `tests/reliability/test_x.py::test_a` and `tests/other/test_y.py`.

<!-- generated:figures -->
old figures
<!-- /generated:figures -->

Hand-written text stays.

<!-- generated:results -->
old results
<!-- /generated:results -->
"""


def test_the_report_renders_figures_and_outcomes_and_says_not_run_for_what_is_missing(tmp_path):
    doc, figures = tmp_path / "RELIABILITY.md", tmp_path / "figures"
    figures.mkdir()
    doc.write_text(DOC)
    (figures / "db_drop_publish.json").write_text(
        json.dumps(
            {
                "name": "db_drop_publish",
                "test": "tests/reliability/test_x.py::test_a",
                "finishedAt": "2026-01-02T03:04:05Z",
                "cases": 24,
                "faultsInjected": 8,
                "losses": 1,
                "figures": {"posts": 24, "duplicates": 1, "faultsByKind": {"timeout": 2}},
            }
        )
    )
    (figures / "results.json").write_text(
        json.dumps(
            {"tests": {"tests/reliability/test_x.py::test_a": {"outcome": "failed", "at": "2026-01-02T03:04:05Z"}}}
        )
    )

    call_command("reliability_report", file=str(doc), figures_dir=str(figures), stdout=io.StringIO())

    text = doc.read_text()
    assert "old figures" not in text and "old results" not in text and "Hand-written text stays." in text
    row = next(line for line in text.splitlines() if line.startswith("| PostgreSQL connection dropped mid-publish"))
    assert "| 24 | 8 | **1** |" in row and "duplicates 1" in row and "faults by kind: timeout 2" in row
    assert (
        "| Redis broker killed and restarted while posts are due (real Celery worker) (`broker_restart`) | not run"
        in text
    )
    assert "| `tests/reliability/test_x.py::test_a` | 1 failed | 2026-01-02 03:04:05 |" in text
    assert "| `tests/other/test_y.py` | not run | — |" in text
    # and running it again changes nothing
    call_command("reliability_report", file=str(doc), figures_dir=str(figures), stdout=io.StringIO())
    assert doc.read_text() == text
