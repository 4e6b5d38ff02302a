"""Whether the admin's statements on a big table can be answered through an index, checked on small data.

Timing is never asserted in tests: the planner's choice on a few rows says nothing about production. What
does carry over is whether an index path exists at all. With sequential scans and plain index scans priced
out (`SET LOCAL enable_seqscan = off`, and `enable_indexscan`, `enable_indexonlyscan`: on a few rows
walking the primary key backwards for `ORDER BY id DESC` is the cheapest plan, and reads the whole table at
production volume) the planner takes a bitmap scan wherever an index can find the rows; a statement that
still reads the table whole, by a `Seq Scan` or an index scan without a condition, has no index path."""

import json

from django.db import connection, transaction


def _whole_reads(node: dict, table: str) -> list[str]:
    found = []
    if node.get("Relation Name") == table and not (node.get("Index Cond") or node.get("Recheck Cond")):
        using = f" using {node['Index Name']}" if "Index Name" in node else ""
        found.append(f"{node['Node Type']} on {table}{using}")
    for child in node.get("Plans", ()):
        found += _whole_reads(child, table)
    return found


def statements_on(captured, table: str) -> list[str]:
    """The SQL of the captured statements that read `table` (CaptureQueriesContext)."""
    return [q["sql"] for q in captured.captured_queries if f'"{table}"' in q["sql"] or f" {table}" in q["sql"]]


def reading_whole_table(statements: list[str], table: str) -> list[tuple[str, list[str]]]:
    """(statement, how it reads `table` whole) for each statement of `statements` that has no index path to
    its rows of `table`; [] when every one has."""
    found = []
    with transaction.atomic(), connection.cursor() as cursor:
        for setting in ("enable_seqscan", "enable_indexscan", "enable_indexonlyscan"):
            cursor.execute(f"SET LOCAL {setting} = off")
        for sql in statements:
            cursor.execute("EXPLAIN (FORMAT JSON) " + sql)
            plan = cursor.fetchone()[0]
            plan = json.loads(plan) if isinstance(plan, str) else plan
            whole = _whole_reads(plan[0]["Plan"], table)
            if whole:
                found.append((sql, whole))
        transaction.set_rollback(True)  # the setting ends with this savepoint
    return found
