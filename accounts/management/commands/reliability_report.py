"""Render RELIABILITY.md's generated tables from the latest test run: the figures each reliability test
wrote to var/reliability/<name>.json, and the latest outcome of every test RELIABILITY.md cites
(var/reliability/results.json, written by the suite's own pytest plugin). `make test` runs it after pytest.

Missing or unreadable files never fail the command: their rows say "not run"."""

import json
import re
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

# name of var/reliability/<name>.json → what it proves; this order in the table, then any other file.
KNOWN = {
    "db_drop_publish": "PostgreSQL connection dropped mid-publish (real publisher process)",
    "db_drop_charges": "PostgreSQL connection dropped in the middle of a charge run (real job process)",
    "broker_restart": "Redis broker killed and restarted while posts are due (real Celery worker)",
    "platform_faults": "Platform timeouts, 5xx, 429 and late answers (real HTTP)",
    "key_rotation": "Token-encryption keys rotated, old key removed",
    "secrets_dump": "Raw database dump holds no secret",
    "staff_mfa": "MFA required before any admin page",
    "admin_audit": "Admin actions and the money view audited",
    "fuzz": "Schema fuzzing of every API operation",
    "cross_org": "Cross-organization access matrix",
}
COLUMN_KEYS = {"name", "test", "finishedAt", "cases", "faultsInjected", "losses", "failures", "figures"}
BEGIN, END = "<!-- generated:{} -->", "<!-- /generated:{} -->"
CITED = re.compile(r"`(tests/[\w/]+/test_\w+\.py(?:::\w+)?)`")


def _humanize(key: str) -> str:
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", key).replace("_", " ").lower()


def _details(data: dict) -> str:
    figures = data.get("figures") if isinstance(data.get("figures"), dict) else {}
    extra = {k: v for k, v in data.items() if k not in COLUMN_KEYS and k not in figures}
    parts = []
    for key, value in {**figures, **extra}.items():
        if isinstance(value, dict) and (len(value) > 8 or any(isinstance(v, dict | list) for v in value.values())):
            parts.append(f"{_humanize(key)}: {len(value)} entries (in the JSON file)")
        elif isinstance(value, dict):
            value = ", ".join(f"{_humanize(str(k))} {v}" for k, v in value.items()) or "none"
            parts.append(f"{_humanize(key)}: {value}")
        else:
            parts.append(f"{_humanize(key)} {value}")
    return "; ".join(parts)


def _cell(value) -> str:
    return "—" if value is None else str(value).replace("|", "\\|")


def _load(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def figures_table(directory: Path) -> str:
    rows = [
        "| Proof | Cases tried | Faults injected | Losses | Details | Run (UTC) |",
        "|---|---:|---:|---:|---|---|",
    ]
    others = sorted(p.stem for p in directory.glob("*.json") if p.stem not in KNOWN and p.stem != "results")
    for name in [*KNOWN, *others]:
        data = _load(directory / f"{name}.json")
        title = KNOWN.get(name, name)
        if data is None:
            rows.append(f"| {title} (`{name}`) | not run | — | — | — | — |")
            continue
        test = data.get("test", "")
        losses = data.get("losses", data.get("failures"))
        when = data.get("finishedAt") or datetime.fromtimestamp((directory / f"{name}.json").stat().st_mtime, UTC)
        rows.append(
            f"| {title}<br>`{_cell(test)}` | {_cell(data.get('cases'))} | {_cell(data.get('faultsInjected'))} "
            f"| **{_cell(losses)}** | {_cell(_details(data))} | {_cell(str(when)[:19].replace('T', ' '))} |"
        )
    return "\n".join(rows)


def results_table(cited: list[str], results: dict) -> str:
    rows = ["| Cited test | Latest outcome | Run (UTC) |", "|---|---|---|"]
    for ref in cited:
        matching = {
            nodeid: entry
            for nodeid, entry in results.items()
            if nodeid == ref or nodeid.startswith(ref + "[") or ("::" not in ref and nodeid.startswith(ref + "::"))
        }
        if not matching:
            rows.append(f"| `{ref}` | not run | — |")
            continue
        outcomes: dict[str, int] = {}
        for entry in matching.values():
            outcomes[entry.get("outcome", "?")] = outcomes.get(entry.get("outcome", "?"), 0) + 1
        summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(outcomes.items()))
        latest = max(str(entry.get("at", "")) for entry in matching.values())
        rows.append(f"| `{ref}` | {summary} | {latest[:19].replace('T', ' ')} |")
    return "\n".join(rows)


def replace_block(text: str, name: str, body: str) -> str:
    begin, end = BEGIN.format(name), END.format(name)
    block = f"{begin}\n{body}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        return head + block + rest.split(end, 1)[1]
    return text.rstrip("\n") + f"\n\n{block}\n"


class Command(BaseCommand):
    help = "Rewrite the generated tables of RELIABILITY.md from the latest run's var/reliability/*.json."

    def add_arguments(self, parser):
        parser.add_argument("--file", default=str(Path(settings.BASE_DIR) / "RELIABILITY.md"))
        parser.add_argument("--figures-dir", default=str(Path(settings.BASE_DIR) / "var" / "reliability"))

    def handle(self, *args, file, figures_dir, **options):
        path, directory = Path(file), Path(figures_dir)
        text = path.read_text() if path.exists() else "# Reliability\n"
        # the tests cited outside the generated blocks, in order, once each
        hand_written = re.sub(r"<!-- generated:(\w+) -->.*?<!-- /generated:\1 -->", "", text, flags=re.S)
        cited = list(dict.fromkeys(CITED.findall(hand_written)))
        results = (_load(directory / "results.json") or {}).get("tests", {})
        text = replace_block(text, "figures", figures_table(directory))
        text = replace_block(text, "results", results_table(cited, results if isinstance(results, dict) else {}))
        path.write_text(text)
        self.stdout.write(f"{path.name}: figures and the latest outcome of {len(cited)} cited test(s) rewritten")
