"""Cursor pagination (config/api/pagination.py) through GET /v1/events: newest first, limit bounds,
nextCursor null on the last page, and no row skipped or repeated while rows are being added."""

import base64
import json
import queue
import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts import services
from accounts.models import Event
from accounts.services import event_record
from tests.conftest import assert_error, make_tenant

EVENT_TYPE = "social_account.connected"


def seed_events(org, count: int, *, at=None, step=timedelta(seconds=1)) -> list[Event]:
    """`count` events of `org`, the first one newest; all at `at` when step is zero."""
    start = at or timezone.now() - timedelta(days=1)
    rows = [Event(organization=org, type=EVENT_TYPE, data={"n": i}, created_at=start - step * i) for i in range(count)]
    return Event.objects.bulk_create(rows)


def walk(client, *, limit: int, between_pages=None, path="/v1/events") -> tuple[list[str], int]:
    """Follow nextCursor from the first page to the last; returns (ids in order, number of pages)."""
    ids, pages, cursor = [], 0, None
    while True:
        url = f"{path}?limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        response = client.get(url)
        assert response.status_code == 200, response.content
        body = response.json()
        assert set(body) == {"data", "nextCursor"}
        assert len(body["data"]) <= limit
        ids.extend(row["id"] for row in body["data"])
        pages += 1
        cursor = body["nextCursor"]
        if cursor is None:
            return ids, pages
        if between_pages:
            between_pages(pages)


def test_list_is_newest_first(owner):
    # given events created a second apart
    seeded = seed_events(owner.org, 5)
    # when the first page is read
    body = owner.client.get("/v1/events").json()
    # then the newest comes first
    assert [row["id"] for row in body["data"]] == [e.id for e in seeded]
    stamps = [row["createdAt"] for row in body["data"]]
    assert stamps == sorted(stamps, reverse=True)


def test_default_limit_is_50_and_200_is_the_maximum(owner):
    seed_events(owner.org, 210)
    assert len(owner.client.get("/v1/events").json()["data"]) == 50
    assert len(owner.client.get("/v1/events?limit=200").json()["data"]) == 200
    assert len(owner.client.get("/v1/events?limit=1").json()["data"]) == 1


@pytest.mark.parametrize("limit", ["0", "201", "-5", "1.5", "ten", "1e2"])
def test_limit_out_of_bounds_is_422(owner, limit):
    error = assert_error(owner.client.get(f"/v1/events?limit={limit}"), 422, "VALIDATION")
    assert list(error["details"]["fields"]) == ["limit"]


def test_next_cursor_is_null_on_the_last_page(owner):
    seeded = seed_events(owner.org, 3)
    # exactly one full page: no cursor
    full = owner.client.get("/v1/events?limit=3").json()
    assert full["nextCursor"] is None and len(full["data"]) == 3
    # a short last page: one cursor, then null
    first = owner.client.get("/v1/events?limit=2").json()
    assert first["nextCursor"] is not None
    last = owner.client.get(f"/v1/events?limit=2&cursor={first['nextCursor']}").json()
    assert [row["id"] for row in last["data"]] == [seeded[2].id]
    assert last["nextCursor"] is None


def test_empty_list_has_null_cursor(owner):
    assert owner.client.get("/v1/events").json() == {"data": [], "nextCursor": None}


def test_every_row_is_served_exactly_once_across_pages(owner):
    seeded = seed_events(owner.org, 23)
    ids, pages = walk(owner.client, limit=5)
    assert ids == [e.id for e in seeded]
    assert pages == 5


def test_rows_with_identical_created_at_are_paged_exactly_once(owner):
    # given twelve events stamped with the very same instant, between two others
    instant = timezone.now() - timedelta(hours=1)
    newer = seed_events(owner.org, 1, at=instant + timedelta(seconds=1))
    same = seed_events(owner.org, 12, at=instant, step=timedelta(0))
    older = seed_events(owner.org, 1, at=instant - timedelta(seconds=1))
    # when paged with a page size that splits the tie several times
    ids, _ = walk(owner.client, limit=5)
    # then each is served once, ties broken by id (newest ULID first)
    assert len(ids) == len(set(ids)) == 14
    assert ids[0] == newer[0].id and ids[-1] == older[0].id
    assert ids[1:-1] == sorted((e.id for e in same), reverse=True)


def test_a_cursor_is_a_position_not_an_offset(owner):
    """A cursor is a position: reading the same cursor twice gives the same page even after new rows."""
    seed_events(owner.org, 8)
    first = owner.client.get("/v1/events?limit=3").json()
    second = owner.client.get(f"/v1/events?limit=3&cursor={first['nextCursor']}").json()
    with transaction.atomic():
        event_record(organization_id=owner.org.id, type=EVENT_TYPE, data={"late": True})
    again = owner.client.get(f"/v1/events?limit=3&cursor={first['nextCursor']}").json()
    assert again == second


@pytest.mark.parametrize(
    "payload",
    [
        ["2026-01-01T00:00:00+00:00", "evt_\x00"],  # a NUL byte must never reach PostgreSQL
        ["2026-01-01T00:00:00+00:00", "evt_\ud800"],  # nor a lone surrogate (it cannot be encoded)
        ["not-a-date", "evt_x"],
        ["2026-01-01T00:00:00", "evt_x"],  # naive time
        ["2026-01-01T00:00:00+00:00", 5],
        ["2026-01-01T00:00:00+00:00"],
        {"a": 1},
        [1, 2],
        None,
    ],
)
def test_forged_cursor_is_422_not_500(owner, payload):
    cursor = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    error = assert_error(owner.client.get(f"/v1/events?cursor={cursor}"), 422, "VALIDATION")
    assert list(error["details"]["fields"]) == ["cursor"]


def test_a_deeply_nested_or_oversized_cursor_is_422_on_every_list_not_500(owner):
    # Python's JSON decoder gives up on "[[[[…" a couple of thousand deep with a RecursionError, not the
    # ValueError of any other bad JSON: a tampered cursor was a 500 on every list.
    from tests.hardening.routes import v1_routes

    cursors = [
        base64.urlsafe_b64encode(b"[" * 2000).decode().rstrip("="),
        base64.urlsafe_b64encode(b'{"position": ' * 2000).decode().rstrip("="),
        base64.urlsafe_b64encode(json.dumps(["2026-01-01T00:00:00+00:00", "x" * 5000]).encode()).decode(),
    ]
    lists = 0
    for route in v1_routes():
        handler = getattr(route.view, "get", None)
        if "cursor" not in (getattr(handler, "query_parameters", None) or ()):
            continue
        lists += 1
        path = route.path({"projectId": owner.project.id})
        for cursor in cursors:
            error = assert_error(owner.client.get(path, {"cursor": cursor}), 422, "VALIDATION")
            assert list(error["details"]["fields"]) == ["cursor"], route.route
    assert lists >= 9


def test_no_row_skipped_or_repeated_while_another_connection_inserts(transactional_db):
    """Given 40 events, when a second thread (its own PostgreSQL connection) commits new events between
    every page the main thread reads, then the walk serves each of the 40 exactly once, in order."""
    owner = make_tenant("Acme")
    seeded = seed_events(owner.org, 40)
    requests_: queue.Queue = queue.Queue()
    done: queue.Queue = queue.Queue()
    inserted: list[str] = []

    def writer():
        try:
            while (batch := requests_.get()) is not None:
                for _ in range(batch):
                    with transaction.atomic():
                        inserted.append(
                            event_record(organization_id=owner.org.id, type=EVENT_TYPE, data={"late": True}).id
                        )
                done.put(None)
        finally:
            connection.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:

        def insert_between_pages(_page):
            requests_.put(3)
            done.get(timeout=30)

        ids, pages = walk(owner.client, limit=7, between_pages=insert_between_pages)
    finally:
        requests_.put(None)
        thread.join(timeout=30)

    assert not thread.is_alive()
    assert pages == 6
    assert len(inserted) == 15  # the writer did commit rows while we paged
    assert len(ids) == len(set(ids)), "a row was repeated"
    assert ids == [e.id for e in seeded], "a row was skipped or a newer row was served mid-walk"
    # the rows added meanwhile are all there, at the head of a fresh walk
    fresh, _ = walk(owner.client, limit=7)
    assert fresh[: len(inserted)] == list(reversed(inserted))
    assert fresh[len(inserted) :] == ids


def test_query_count_does_not_depend_on_page_size(owner):
    seed_events(owner.org, 120)
    owner.client.get("/v1/events?limit=1")  # first use records last_used_at once; keep it out of the count
    with CaptureQueriesContext(connection) as small:
        assert len(owner.client.get("/v1/events?limit=5").json()["data"]) == 5
    with CaptureQueriesContext(connection) as large:
        assert len(owner.client.get("/v1/events?limit=100").json()["data"]) == 100
    assert len(small.captured_queries) == len(large.captured_queries) <= 3


def test_projects_list_pages_the_same_way(owner):
    # given the owner's two projects (fixture) and three newer ones
    extra = [services.project_create(organization=owner.org, name=f"extra {i}") for i in range(3)]
    ids, pages = walk(owner.client, limit=2, path="/v1/projects")
    assert len(ids) == len(set(ids)) == 5
    assert pages == 3
    assert ids == [p.id for p in reversed(extra)] + [p.id for p in reversed(owner.projects)]


PROJECT_LISTS = ("social-accounts", "scheduled-posts", "posts")


@pytest.mark.parametrize("resource", PROJECT_LISTS)
def test_project_lists_tell_an_empty_project_from_a_foreign_one(owner, outsider, resource):
    # A page with rows proves the project is the caller's, so the project is only read for an empty page:
    # an empty project of the caller's is an empty list, anybody else's project is 404, with rows or not.
    from tests.factories import make_account

    make_account(outsider)  # the outsider's project has rows
    empty = owner.projects[1]

    response = owner.client.get(f"/v1/projects/{empty.id}/{resource}")
    assert response.status_code == 200, response.content
    assert response.json() == {"data": [], "nextCursor": None}
    assert_error(owner.client.get(f"/v1/projects/{outsider.project.id}/{resource}"), 404, "NOT_FOUND")
    past_the_end = base64.urlsafe_b64encode(json.dumps(["2000-01-01T00:00:00+00:00", "x"]).encode()).decode()
    assert_error(
        owner.client.get(f"/v1/projects/{outsider.project.id}/{resource}?cursor={past_the_end}"), 404, "NOT_FOUND"
    )


def test_a_page_of_accounts_is_three_queries_with_its_layers(owner):
    from scheduling.services import layers_provision_for_account
    from tests.factories import make_account

    for n in range(3):
        layers_provision_for_account(account=make_account(owner, handle=f"acct{n}"))
    owner.client.get("/v1/projects")  # the key's first use also records lastUsedAt (once a minute)
    with CaptureQueriesContext(connection) as queries:
        body = owner.client.get(f"/v1/projects/{owner.project.id}/social-accounts").json()

    assert [len(row["layers"]) for row in body["data"]] == [4, 4, 4]
    # the API key, the page, the page's layers (the project is not read: the page's rows prove it)
    assert len(queries) == 3, [q["sql"][:120] for q in queries]


def test_the_leased_accounts_list_follows_its_own_cursor_through_equal_assignment_times(owner):
    # A lease's own key is an integer: the list's cursor used to carry it, and then refuse it as forged.
    from leasing import services as leasing
    from leasing.models import Lease
    from tests.leasing.helpers import add_pool, request_accounts

    add_pool(5)
    leasing.lease_assign(request_id=request_accounts(owner, 5)["requestId"], auto=True)
    Lease.objects.filter(pk__in=list(Lease.objects.values_list("pk", flat=True)[:3])).update(
        assigned_at=timezone.now() - timedelta(hours=1)
    )  # three of them at the same instant: the id breaks the tie
    path = f"/v1/projects/{owner.project.id}/leased-accounts"
    for limit in (1, 2):
        seen, cursor = [], None
        while True:
            response = owner.client.get(path, {"limit": limit, **({"cursor": cursor} if cursor else {})})
            assert response.status_code == 200, response.content
            seen += [row["socialAccountId"] for row in response.json()["data"]]
            cursor = response.json()["nextCursor"]
            if cursor is None:
                break
        assert sorted(seen) == sorted(Lease.objects.values_list("social_account_id", flat=True)), limit
        assert len(seen) == 5
    forged = base64.urlsafe_b64encode(json.dumps(["2026-01-01T00:00:00+00:00", "x"]).encode()).decode()
    assert owner.client.get(path, {"cursor": forged}).json()["data"] == []  # a position, not a 500
