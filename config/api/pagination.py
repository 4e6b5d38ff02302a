"""Keyset pagination, newest first. The cursor is the (created_at, id) of the last row served, so rows
inserted while a partner pages through a list are never skipped nor repeated: new rows sort before the
cursor and every later page continues strictly after it."""

import base64
import binascii
import json
import re
from datetime import datetime

from django.db.models import Q
from rest_framework.response import Response

from config.api.errors import Validation
from config.api.fields import parse_rfc3339, with_partner_messages

DEFAULT_LIMIT, MAX_LIMIT = 50, 200
# The cursors this module writes are under 200 characters (a timestamp and an id of at most 64, or a
# position). Anything much longer is forged: refused before it is decoded.
MAX_CURSOR_LENGTH = 512


def _encode(created_at: datetime, pk: str) -> str:
    raw = json.dumps([created_at.isoformat(), pk]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _encode_pair(pair: tuple[datetime, str]) -> str:
    return _encode(*pair)


def _cursor_json(cursor: str):
    """What `cursor` encodes (base64 of JSON), or a 422. A forged cursor of "[[[[…" a couple of thousand
    deep stops Python's JSON decoder with a RecursionError, not the ValueError of any other bad JSON."""
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise Validation({"cursor": ["Invalid cursor."]})
    try:
        return json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError, binascii.Error, RecursionError):
        raise Validation({"cursor": ["Invalid cursor."]})


def _decode(cursor: str) -> tuple[datetime, str]:
    try:
        created, pk = _cursor_json(cursor)
    except (ValueError, TypeError):
        raise Validation({"cursor": ["Invalid cursor."]})
    # The time is written by datetime.isoformat() of an aware time: RFC 3339, read as every timestamp is.
    created = parse_rfc3339(created) if isinstance(created, str) else None
    # A forged cursor must not reach the database as something it cannot take (PostgreSQL refuses NUL, a
    # lone surrogate cannot be encoded: a 500). Every list's ids are printable ASCII.
    if created is None or not isinstance(pk, str) or not (pk.isascii() and pk.isprintable()):
        raise Validation({"cursor": ["Invalid cursor."]})
    return created, pk


def parse_limit(request) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    # ASCII digits only: int() would also take "1_0", " 7" or other scripts' digits.
    if re.fullmatch(r"-?[0-9]{1,12}", raw) is None or not 1 <= int(raw) <= MAX_LIMIT:
        raise Validation({"limit": [f"Must be an integer from 1 to {MAX_LIMIT}."]})
    return int(raw)


def parse_filters(request, serializer_class) -> dict:
    """A list's filters, validated by `serializer_class` as sent. A plain dict, not the QueryDict: DRF
    reads a QueryDict as an HTML form and would take `?status=` for "no filter" instead of refusing it.
    One value per name: ApiView has already refused a parameter given twice (check_query_parameters)."""
    data = {key: request.query_params.get(key) for key in request.query_params if key not in ("limit", "cursor")}
    if not data:
        # The common case (a dashboard polling the whole list). Every list filter is optional and has no
        # default, so there is nothing to validate; building the serializer cost a few percent of a page.
        return {}
    # Filters speak as bodies do: `?status=Queued` is told the statuses, as `"mode": "Publish"` is the modes.
    serializer = with_partner_messages(serializer_class)(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def page_window(request) -> tuple[int, tuple[datetime, str] | None]:
    """(limit, after) of the page asked for: `after` is the (time, id) of the last row served before, from
    the cursor, or None for the first page."""
    limit = parse_limit(request)
    cursor = request.query_params.get("cursor")
    return limit, (_decode(cursor) if cursor else None)


def page_response(rows: list, *, limit: int, serialize, key, parent_check=None, encode=None) -> Response:
    """The page of up to `limit + 1` rows read newest first (the extra row only says that there is more),
    as `{"data": [...], "nextCursor": ...}`. `key(row)` is a row's (time, id), or what `encode` takes.

    `parent_check` is for lists under a parent (a project's accounts): the rows are filtered by the
    parent's id and the organization, so a page with rows proves the parent is the organization's, and the
    parent is read only for an empty page, where `parent_check()` raises NotFound if it is unknown. That
    saves a query on every page that has rows."""
    more = len(rows) > limit
    rows = rows[:limit]
    if not rows and parent_check is not None:
        parent_check()
    next_cursor = ((encode or _encode_pair)(key(rows[-1]))) if more else None
    return Response({"data": serialize(rows), "nextCursor": next_cursor})


def paginate(
    request, queryset, serialize, *, time_field: str = "created_at", id_field: str = "pk", parent_check=None
) -> Response:
    """One page of `queryset` (newest first) as `{"data": [...], "nextCursor": ...}`.
    `serialize` turns the list of rows into a list of dicts; `parent_check` as in page_response.
    `id_field` breaks ties between rows of the same time: a unique public string id of the row (a row
    whose own key is an integer pages on the string id it is known by)."""
    limit, after = page_window(request)
    qs = queryset.order_by(f"-{time_field}", f"-{id_field}")
    if after:
        created, pk = after
        # `time <= created` says nothing the OR does not, but PostgreSQL can start an index scan there: the OR
        # alone is a filter, and a page deep in a list went through every row newer than its cursor.
        qs = qs.filter(
            Q(**{f"{time_field}__lte": created}),
            Q(**{f"{time_field}__lt": created}) | Q(**{time_field: created, f"{id_field}__lt": pk}),
        )
    return page_response(
        list(qs[: limit + 1]),
        limit=limit,
        serialize=serialize,
        key=lambda row: (getattr(row, time_field), getattr(row, id_field)),
        parent_check=parent_check,
    )


def paginate_by_position(
    request, queryset, serialize, *, field: str = "position", legacy_time_field: str = "created_at"
) -> Response:
    """One page of `queryset` by a unique, increasing integer `field`, highest first (rows without one are
    not listed yet). The cursor is the position of the last row served: rows that get a higher position
    while a partner pages sort before it, and every later page continues strictly after it.

    Also takes a cursor issued before the list paged by position: the (`legacy_time_field`, id) of the last
    row served, like every other list's (see _legacy_position)."""
    limit = parse_limit(request)
    cursor = request.query_params.get("cursor")
    qs = queryset.filter(**{f"{field}__isnull": False}).order_by(f"-{field}")
    if cursor:
        try:
            below = _decode_position(cursor)
        except Validation:
            # Not a position: an old cursor, or neither (then _decode answers the same 422).
            below = _legacy_position(qs, _decode(cursor), field=field, time_field=legacy_time_field)
        qs = qs.filter(**{f"{field}__lt": below})
    return page_response(
        list(qs[: limit + 1]),
        limit=limit,
        serialize=serialize,
        key=lambda row: getattr(row, field),
        encode=_encode_position,
    )


def _legacy_position(queryset, after: tuple[datetime, str], *, field: str, time_field: str) -> int:
    """The position a page continues below, for a cursor issued when the list paged by (time, id) (GET
    /v1/events before adac3da): a partner paging across that deploy goes on where it was instead of being
    refused and starting over. The rows listed then were given their positions in (time, id) order, so the
    rows older than the cursor's are those below its row's position. The cursor's row if it is still there;
    if it is gone (purged), the first row older than it, included. Read from `queryset`, the caller's
    organization's rows only: a cursor made from another organization's row is read like one whose row is
    gone, from its time, and the page holds only the caller's rows, the same as for an id that exists
    nowhere (nothing tells the two apart)."""
    created, pk = after
    older = queryset.filter(Q(**{f"{time_field}__lt": created}) | Q(**{time_field: created, "pk__lte": pk}))
    row = older.order_by(f"-{time_field}", "-pk").values_list("pk", field).first()
    if row is None:
        return 0  # nothing is older: positions start at 1, an empty page
    row_pk, position = row
    return position if row_pk == pk else position + 1


def _encode_position(position: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"position": position}).encode()).decode().rstrip("=")


def _decode_position(cursor: str) -> int:
    try:
        position = _cursor_json(cursor)["position"]
    except (TypeError, KeyError):
        raise Validation({"cursor": ["Invalid cursor."]})
    # bool is an int; a position beyond bigint would reach the database as something it cannot take.
    if type(position) is not int or not 0 <= position < 2**63:
        raise Validation({"cursor": ["Invalid cursor."]})
    return position
