"""The admin's paginator for tables that grow with every partner's traffic and are never (or slowly) purged:
scheduled posts, content containers, layers, events, webhook deliveries, the ledger.

Django's admin counts the list's rows on every visit to show "N posts" and the page links; unfiltered, that
is a COUNT(*) over the whole table — a sequential scan, seconds at tens of millions of rows, on the page
support opens first. Past settings.LAYERS_ADMIN_EXACT_COUNT_BELOW rows an unfiltered list takes PostgreSQL's
own estimate (pg_class.reltuples, kept by autovacuum's ANALYZE) instead: the pages still list the newest rows
exactly, only the total and the number of the last page are approximate. A filtered or searched list is
counted up to FILTERED_COUNT_CAP rows: posts filtered by mode, platform or failure code match hundreds of
thousands of rows, and counting them all took 100 to 240 ms at 500,000 posts on every visit, growing with the
table. Past the cap the list says "10000+ posts" and pages as far as the cap (a filter that matches more is
narrowed, not paged through)."""

from django.conf import settings
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import QuerySet
from django.utils.functional import cached_property

# A filtered list's count stops here (templates/admin/pagination.html shows it with a "+").
FILTERED_COUNT_CAP = 10_000


class LargeTablePaginator(Paginator):
    capped = False  # whether count is FILTERED_COUNT_CAP and more rows match

    @cached_property
    def count(self) -> int:
        rows = self.object_list
        if not isinstance(rows, QuerySet):
            return super().count
        if not rows.query.where:
            estimate = _estimated_rows(rows)
            if estimate is not None and estimate >= settings.LAYERS_ADMIN_EXACT_COUNT_BELOW:
                return estimate
            return super().count
        # SELECT COUNT(*) FROM (... LIMIT cap + 1): the scan stops once it has seen one row past the cap.
        found = rows.order_by()[: FILTERED_COUNT_CAP + 1].count()
        if found > FILTERED_COUNT_CAP:
            self.capped = True
            return FILTERED_COUNT_CAP
        return found


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
