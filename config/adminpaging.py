"""The admin's paginator for tables that grow with every partner's traffic and are never (or slowly) purged:
scheduled posts, content containers, layers, events, webhook deliveries, the ledger.

Django's admin counts the list's rows on every visit to show "N posts" and the page links; unfiltered, that
is a COUNT(*) over the whole table — a sequential scan, seconds at tens of millions of rows, on the page
support opens first. Past settings.LAYERS_ADMIN_EXACT_COUNT_BELOW rows an unfiltered list takes PostgreSQL's
own estimate (pg_class.reltuples, kept by autovacuum's ANALYZE) instead: the pages still list the newest rows
exactly, only the total and the number of the last page are approximate. A filtered or searched list is
counted exactly (what support reads there matters, and the indexes narrow it)."""

from django.conf import settings
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import QuerySet
from django.utils.functional import cached_property


class LargeTablePaginator(Paginator):
    @cached_property
    def count(self) -> int:
        rows = self.object_list
        if isinstance(rows, QuerySet) and not rows.query.where:
            estimate = _estimated_rows(rows)
            if estimate is not None and estimate >= settings.LAYERS_ADMIN_EXACT_COUNT_BELOW:
                return estimate
        return super().count


def _estimated_rows(rows: QuerySet) -> int | None:
    """The planner's row count of the queryset's table; None where there is none (another database, or a
    table never analyzed: reltuples is -1 then)."""
    connection = connections[rows.db]
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [rows.model._meta.db_table])
        row = cursor.fetchone()
    return row[0] if row and row[0] >= 0 else None
