"""Rows changed many at a time: what a batch service did to each of the ids it was given.

Staff act on whole filtered lists from the admin (after an outage: the day's 40,000 failed posts, the 200,000
deliveries a partner's receiver missed). One service call per row cost a transaction and several statements
each (7.7 ms a post), so the batch services (`posts_retry`, `posts_cancel`, `deliveries_resend`) take a few
hundred ids at once, in one transaction, under the same rules as their one-row versions, and say per id what
they did (accounts/admin_bulk.py runs them from the admin and from a worker)."""

from collections.abc import Iterator
from dataclasses import dataclass, field

from django.db.models import QuerySet

from config.api.errors import ApiError

# The ids one batch service call takes (one transaction, its locks held that long).
BATCH_ROWS = 500


@dataclass
class BatchOutcome:
    """`done`: the ids changed, in the order given; `skipped`: why each of the others was left alone (the
    ApiError its one-row service raises); `notes`: what staff are told of a row done, beside what was done
    ("its publish id was …"), where there is something."""

    done: list[str] = field(default_factory=list)
    skipped: dict[str, ApiError] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def add(self, other: "BatchOutcome") -> None:
        self.done.extend(other.done)
        self.skipped.update(other.skipped)
        self.notes.update(other.notes)


def pk_batches(queryset: QuerySet, size: int, *, after=None) -> Iterator[list]:
    """The primary keys of `queryset` (past `after`, if given), `size` at a time, in key order: each batch is
    its own query, resumed after the last key read (never an OFFSET, never the whole selection in memory). A
    row changed by what was done to an earlier batch so that it no longer matches is simply not read again."""
    return _keyset(queryset.values_list("pk", flat=True), size, after=after, key=lambda pk: pk)


def row_batches(queryset: QuerySet, size: int | None = None) -> Iterator[list]:
    """The rows of `queryset` (as model instances, with what it selects related), `size` at a time (BATCH_ROWS
    unless given), in key order, as pk_batches reads them: for an action that needs more of each row than its
    key (its label, its state), over a selection of tens of thousands (a list of 50,000 accounts read at once
    held hundreds of MB in one web process)."""
    return _keyset(queryset, size or BATCH_ROWS, after=None, key=lambda row: row.pk)


def _keyset(queryset: QuerySet, size: int, *, after, key) -> Iterator[list]:
    rows = queryset.order_by("pk")
    last = after
    while True:
        batch = list((rows if last is None else rows.filter(pk__gt=last))[:size])
        if not batch:
            return
        yield batch
        if len(batch) < size:
            return
        last = key(batch[-1])


def batches(ids: list, size: int = BATCH_ROWS) -> Iterator[list]:
    """`ids` cut into lists of at most `size`."""
    for start in range(0, len(ids), size):
        yield ids[start : start + size]
