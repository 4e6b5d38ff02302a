"""What staff's bulk actions compare rows with to leave alone those changed since the click: a mark of the
attempts recorded so far (publishing attempts for a retry, webhook delivery attempts for a resend), read at
the click, or with the confirmation page of an action that asks first ("retry anyway"), which carries it.

A row's id is handed out when it is inserted, not when its transaction commits. The newest id alone (Max(id))
was no mark: a publisher that had inserted a post's failure (id 100) and committed a moment after the click,
while another post's attempt (101) had committed before it, was read as recorded before the click. "Retry
anyway" then sent that post again although staff never saw it failed, and it may have been live.

So the mark is the newest id committed when it was read, and the ids below it not committed then (`unseen`:
attempts still being written, or ids rolled back or deleted, which never come back), read in one statement,
one snapshot: an attempt is recorded since the mark when its id is above the newest, or one of those (ids are
handed out one at a time, in order: an identity column without a cache). Nothing waits: the mark holds no
lock, and no publisher waits for a click. A mark read under a lock that waited for the attempts being written
would not do: it places them before the click, and "retry anyway" would send those posts all the same.

Its limits: it looks for unseen ids among the WINDOW newest, and keeps the MOST_RANGES highest runs of them.
An attempt inserted earlier than either and not committed at the click would be missed. No writer of attempts
holds its transaction that long (the publisher's and the resolver's transitions are a few statements, the
batch services and the hold after a restore write at most BATCH_ROWS at a time, a webhook claim one row);
the gaps lower down are ids a retention purge deleted, or rolled back, which never fill."""

import json

from django.db import connection
from django.db.models import Model, Q

# How far below the newest committed id the mark looks for ids not committed yet: many minutes of attempts at
# the publisher's highest rate, far more than any transaction writing them lasts.
WINDOW = 100_000
# The runs of unseen ids the mark keeps, the highest first: an attempt being written at the click is among the
# newest ids, while a webhook retention purge leaves a gap per deleted attempt far below them. Bounds the mark,
# which travels in the worker's task messages.
MOST_RANGES = 1_000


def attempts_mark(model: type[Model]) -> dict:
    """The mark of `model`'s rows (an attempts table, ids from a sequence) now: {"newest": id, "unseen":
    [[low, high], …]}, a JSON value for the tasks that carry it. Read in one statement: one snapshot."""
    table = connection.ops.quote_name(model._meta.db_table)  # a model's own table: no outside input
    # Each id of the window's, with the one before it (for the lowest, the window's edge): a step of more than
    # one is a gap. Standard SQL: SQLite runs it too (`make run`).
    sql = (
        f"WITH newest AS (SELECT coalesce(max(id), 0) AS id FROM {table}), "  # noqa: S608
        "recent AS (SELECT t.id, lag(t.id, 1, CASE WHEN newest.id > %s THEN newest.id - %s ELSE 0 END) "
        f"OVER (ORDER BY t.id) AS before FROM {table} t, newest WHERE t.id > newest.id - %s), "
        "gaps AS (SELECT before + 1 AS low, id - 1 AS high FROM recent WHERE id > before + 1 ORDER BY id DESC "
        "LIMIT %s) "
        "SELECT newest.id, gaps.low, gaps.high FROM newest LEFT JOIN gaps ON true ORDER BY gaps.low"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [WINDOW, WINDOW, WINDOW, MOST_RANGES])
        rows = cursor.fetchall()
    newest = rows[0][0]
    return {"newest": newest, "unseen": [[low, high] for _, low, high in rows if low is not None]}


def recorded_since(mark: dict | int) -> Q:
    """The rows of the marked table recorded after `mark` (attempts_mark) was read: committed since. A plain
    number is the newest id alone, as tasks queued by the release before this one carry it."""
    if isinstance(mark, int):
        return Q(id__gt=mark)
    since = Q(id__gt=mark["newest"])
    for low, high in mark["unseen"]:
        since |= Q(id__gte=low, id__lte=high)
    return since


def mark_from_text(text: str | None) -> dict | None:
    """A mark (attempts_mark) as a confirmation page carried it (its JSON), or None when there is none or it is
    not one (a page of the release before, a mangled field): the caller then reads a mark of its own."""
    try:
        mark = json.loads(text or "")
        unseen = [[int(low), int(high)] for low, high in mark["unseen"]]
        return {"newest": int(mark["newest"]), "unseen": unseen[:MOST_RANGES]}
    except (ValueError, TypeError, KeyError):
        return None
