"""The event outbox: an event exists exactly when the change it reports was committed, and GET /v1/events
lists the caller's organization's events only."""

import re

import pytest
from django.db import transaction

from accounts.models import Event
from accounts.services import event_record
from config.api.pagination import _encode
from tests.conftest import assert_error


class Boom(Exception):
    pass


def test_event_recorded_in_a_rolled_back_transaction_leaves_no_event(owner, transactional_db):
    # given a change that records its event and then fails
    with pytest.raises(Boom), transaction.atomic():
        event = event_record(organization_id=owner.org.id, type="social_account.connected", data={"n": 1})
        assert Event.objects.filter(pk=event.pk).exists()  # visible inside the transaction
        raise Boom()
    # then neither the change nor its event survives
    assert not Event.objects.filter(pk=event.pk).exists()
    assert Event.objects.count() == 0


def test_event_recorded_in_a_committed_transaction_is_kept_and_handed_to_delivery(owner, transactional_db, monkeypatch):
    delivered = []
    monkeypatch.setattr("accounts.services._after_event_commit", delivered.append)
    with transaction.atomic():
        event = event_record(organization_id=owner.org.id, type="social_account.connected", data={"n": 1})
        assert delivered == []  # nothing leaves before the commit
    assert Event.objects.filter(pk=event.pk).exists()
    assert [e.pk for e in delivered] == [event.pk]


def test_rolled_back_event_is_never_handed_to_delivery(owner, transactional_db, monkeypatch):
    delivered = []
    monkeypatch.setattr("accounts.services._after_event_commit", delivered.append)
    with pytest.raises(Boom), transaction.atomic():
        event_record(organization_id=owner.org.id, type="social_account.connected", data={})
        raise Boom()
    assert delivered == []


def test_event_record_outside_a_transaction_raises(owner, transactional_db):
    with pytest.raises(RuntimeError):
        event_record(organization_id=owner.org.id, type="social_account.connected", data={})
    assert Event.objects.count() == 0


def test_event_record_with_an_unknown_type_raises(owner):
    with pytest.raises(ValueError), transaction.atomic():
        event_record(organization_id=owner.org.id, type="social_account.exploded", data={})
    assert Event.objects.count() == 0


def record(tenant, type_, **data):
    with transaction.atomic():
        return event_record(organization_id=tenant.org.id, type=type_, data=data)


def test_events_list_shows_only_the_callers_organization(owner, sibling, outsider):
    mine = [record(owner, "social_account.connected", n=i) for i in range(3)]
    record(sibling, "social_account.connected", n=9)
    record(outsider, "scheduled_post.failed", n=9)

    body = owner.client.get("/v1/events").json()

    assert [e["id"] for e in body["data"]] == [e.id for e in reversed(mine)]
    assert body["nextCursor"] is None


def test_events_list_filters_by_type(owner, outsider):
    connected = record(owner, "social_account.connected")
    failed = record(owner, "scheduled_post.failed", code="MEDIA_INVALID")
    record(outsider, "scheduled_post.failed")

    only_failed = owner.client.get("/v1/events?type=scheduled_post.failed").json()["data"]
    only_connected = owner.client.get("/v1/events?type=social_account.connected").json()["data"]
    unknown = owner.client.get("/v1/events?type=no.such.type")

    assert [e["id"] for e in only_failed] == [failed.id]
    assert [e["id"] for e in only_connected] == [connected.id]
    # a misspelt type is refused, naming the types, rather than answering an empty list that reads as "none"
    error = assert_error(unknown, 422, "VALIDATION")
    assert "scheduled_post.failed" in error["details"]["fields"]["type"][0]


def test_event_envelope_fields(owner):
    record(owner, "lease_request.assigned", requestId="lreq_X", socialAccountIds=["sa_1"])

    (event,) = owner.client.get("/v1/events").json()["data"]

    assert set(event) == {"id", "type", "createdAt", "data"}
    assert re.fullmatch(r"evt_[0-9A-HJKMNP-TV-Z]{26}", event["id"])
    assert event["type"] == "lease_request.assigned"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", event["createdAt"])
    assert event["data"] == {"requestId": "lreq_X", "socialAccountIds": ["sa_1"]}


def test_events_list_needs_a_key(anon, owner):
    record(owner, "social_account.connected")
    assert_error(anon.get("/v1/events"), 401, "UNAUTHENTICATED")


def _poll_new(client, last_seen, **filters):
    """What a poller does with the list: read newest first until the last event it saw before."""
    new, cursor = [], None
    query = "".join(f"&{name}={value}" for name, value in filters.items())
    while True:
        body = client.get(f"/v1/events?limit=2{query}" + (f"&cursor={cursor}" if cursor else "")).json()
        for event in body["data"]:
            if event["id"] == last_seen:
                return new
            new.append(event["id"])
        cursor = body["nextCursor"]
        if cursor is None:
            return new


@pytest.mark.parametrize("filters", [{}, {"type": "lease_request.assigned"}])
def test_an_event_that_commits_late_is_still_new_to_a_poller(owner, transactional_db, filters):
    """An event is recorded in a transaction that stays open while a later one commits and is polled. It
    commits afterwards, older by its createdAt: a poller reading newest first down to the last event it saw
    must still find it (ordered by createdAt, it sorted below that event and was never seen)."""
    from tests.concurrency import held_open

    with transaction.atomic():
        seen = event_record(organization_id=owner.org.id, type="lease_request.assigned", data={"n": 0}).id
    with held_open(
        lambda: event_record(organization_id=owner.org.id, type="lease_request.assigned", data={"n": 1}).id
    ) as late:
        with transaction.atomic():
            fast = event_record(organization_id=owner.org.id, type="lease_request.assigned", data={"n": 2}).id
        first_poll = _poll_new(owner.client, last_seen=seen, **filters)
    second_poll = _poll_new(owner.client, last_seen=fast, **filters)

    assert first_poll == [fast]  # the open transaction's event is not visible yet
    assert second_poll == [late.result]
    assert _poll_new(owner.client, last_seen=None, **filters) == [late.result, fast, seen]


def test_pollers_see_every_event_exactly_once_while_writers_commit_out_of_order(owner, transactional_db):
    """Writers record events in transactions that take different times to commit while pollers poll: each
    poller ends up having seen every event exactly once, with no event skipped by its position."""
    import random
    import threading
    import time

    from django.db import connection

    from tests.concurrency import run_in_threads

    writing = threading.Event()
    writing.set()

    def writer(seed):
        rng, ids = random.Random(seed), []
        for n in range(15):
            with transaction.atomic():
                ids.append(event_record(organization_id=owner.org.id, type="lease_request.assigned", data={"n": n}).id)
                time.sleep(rng.random() * 0.02)  # commits land in another order than createdAt
        return ids

    def writers_then_stop():
        try:
            return [event for ids in run_in_threads(*(lambda s=s: writer(s) for s in range(4))) for event in ids]
        finally:
            writing.clear()

    def poller():
        from rest_framework.test import APIClient

        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {owner.raw_key}")
        seen, last = [], None
        while True:
            still_writing = writing.is_set()
            new = _poll_new(client, last_seen=last)
            seen.extend(reversed(new))
            last = new[0] if new else last
            if not still_writing:
                connection.close()
                return seen

    written, *polled = run_in_threads(writers_then_stop, poller, poller)

    assert len(written) == 60
    for seen in polled:
        assert sorted(seen) == sorted(written)  # every event, each once


def test_the_newest_event_heads_the_list_whatever_the_backlog_of_unplaced_events(owner):
    # A partner who only uses webhooks and polls for the first time (or any organization right after the
    # deploy that added positions) has more unplaced events than one batch: the first page must still start
    # with the newest, not with the oldest batch placed.
    from datetime import timedelta

    from django.utils import timezone

    from accounts.services import EVENT_SEQUENCE_BATCH

    base = timezone.now() - timedelta(days=2)
    Event.objects.bulk_create(
        Event(
            organization=owner.org,
            type="social_account.connected",
            data={"n": n},
            created_at=base + timedelta(seconds=n),
        )
        for n in range(EVENT_SEQUENCE_BATCH + 1)
    )
    newest = Event.objects.filter(organization=owner.org).order_by("-created_at", "-id").first()

    page = owner.client.get("/v1/events?limit=3").json()

    assert page["data"][0]["id"] == newest.id


def test_the_webhook_tick_places_the_events_of_partners_who_never_poll(owner, outsider):
    from accounts.webhooks.tasks import webhooks_tick

    with transaction.atomic():
        for tenant in (owner, outsider):
            event_record(organization_id=tenant.org.id, type="social_account.connected", data={})

    webhooks_tick.apply()

    assert not Event.objects.filter(position__isnull=True).exists()


def _legacy_cursor(event) -> str:
    """A cursor as GET /v1/events issued before it paged by position (adac3da): the [createdAt, id] of the
    last event served, as every other list's cursor still is."""
    return _encode(event.created_at, event.id)


def test_an_events_cursor_issued_before_the_upgrade_still_pages(owner):
    # given a partner that read a page of events before the deploy and holds its cursor
    events = [record(owner, "social_account.connected", n=i) for i in range(4)]

    # when it asks for the next page after the deploy
    response = owner.client.get(f"/v1/events?cursor={_legacy_cursor(events[2])}")

    # then it goes on from that event, older events next, newest first, instead of having to start over
    assert response.status_code == 200, response.content
    body = response.json()
    assert [e["id"] for e in body["data"]] == [events[1].id, events[0].id]
    assert body["nextCursor"] is None
    # and the cursor it is given now is a new one, which pages on from there
    first = owner.client.get(f"/v1/events?limit=1&cursor={_legacy_cursor(events[3])}").json()
    assert [e["id"] for e in first["data"]] == [events[2].id]
    second = owner.client.get(f"/v1/events?limit=1&cursor={first['nextCursor']}").json()
    assert [e["id"] for e in second["data"]] == [events[1].id]


def test_an_old_events_cursor_keeps_the_type_filter_it_was_read_with(owner):
    connected = [record(owner, "social_account.connected", n=i) for i in range(3)]
    record(owner, "scheduled_post.failed", n=9)

    page = owner.client.get(f"/v1/events?type=social_account.connected&cursor={_legacy_cursor(connected[2])}")

    assert [e["id"] for e in page.json()["data"]] == [connected[1].id, connected[0].id]


def test_an_old_events_cursor_whose_event_is_gone_goes_on_from_the_next_older_one(owner):
    # given the cursor's event purged since (events are kept 30 days)
    events = [record(owner, "social_account.connected", n=i) for i in range(4)]
    cursor = _legacy_cursor(events[2])
    Event.objects.filter(pk=events[2].pk).delete()

    page = owner.client.get(f"/v1/events?cursor={cursor}").json()

    assert [e["id"] for e in page["data"]] == [events[1].id, events[0].id]


def test_an_old_events_cursor_of_another_organization_shows_nothing_of_it(owner, outsider):
    # given the outsider's own events around the time of one of the owner's events
    before = record(outsider, "social_account.connected", n=0)
    foreign = record(owner, "social_account.connected", n=1)
    record(outsider, "social_account.connected", n=2)

    # when the outsider pages with a cursor made from the owner's event
    page = outsider.client.get(f"/v1/events?cursor={_legacy_cursor(foreign)}")
    # or from an id that exists nowhere, at the same time
    made_up = outsider.client.get(f"/v1/events?cursor={_encode(foreign.created_at, 'evt_' + '0' * 26)}")

    # then it sees its own events older than that time only, and the answer does not tell whether the id is
    # another organization's event: the same as for an id that does not exist
    assert page.status_code == 200, page.content
    assert [e["id"] for e in page.json()["data"]] == [before.id]
    assert page.json() == made_up.json()
