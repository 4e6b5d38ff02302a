"""The relay tick's search for events whose fan-out never committed (the beat runs it every 15 s, forever):
when nothing is missing it reads next to nothing, however many events the outbox holds. A scale audit found
it reading every event of the last 3 days and the whole fan-out marker table on every tick (131 ms at 200k
events, ~10 % of a database core at a big partner's 30 days). Rows read are asserted, never time."""

import json
import random
from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts import crypto
from accounts.models import Event
from accounts.webhooks import services
from accounts.webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookFanout

pytestmark = pytest.mark.django_db

EVENTS = 30_000


def rows_examined(sql: str) -> dict[str, int]:
    """Rows each table's scans produced when `sql` ran (EXPLAIN ANALYZE), summed over the plan's loops."""
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql)
        plan = cursor.fetchone()[0]
    plan = json.loads(plan) if isinstance(plan, str) else plan
    out: dict[str, int] = {}

    def walk(node):
        if "Relation Name" in node:
            rows = round(float(node["Actual Rows"]) * float(node.get("Actual Loops", 1)))
            out[node["Relation Name"]] = out.get(node["Relation Name"], 0) + rows
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    return out


def _subscribed_endpoint(owner) -> WebhookEndpoint:
    return WebhookEndpoint.objects.create(
        organization=owner.org,
        url="https://hooks.example/h",
        events=["scheduled_post.published"],
        secret_enc=crypto.encrypt("whsec_x"),
    )


def test_the_idle_tick_reads_next_to_nothing_of_a_big_outbox_and_still_finds_a_missed_event(owner):
    # given 30 days of a partner subscribed to its posts' events: 30k events, each fanned out when it happened
    now = timezone.now()
    _subscribed_endpoint(owner)
    rnd = random.Random(1)
    events = Event.objects.bulk_create(
        [
            Event(
                organization=owner.org,
                type="scheduled_post.published",
                data={"id": f"sp_{n}"},
                created_at=now - timedelta(days=30 * rnd.random(), minutes=1),
                position=n + 1,
            )
            for n in range(EVENTS)
        ],
        batch_size=5000,
    )
    recent = [e for e in events if e.created_at >= now - services.RETRY_WINDOW]
    for event in recent:  # those the tick could still save: fanned out by the fan-out itself
        services.event_fan_out(event_id=event.pk, recorded=event)
    # the older ones, past saving, carry the marker the fan-out has always written
    WebhookFanout.objects.bulk_create(
        [WebhookFanout(event=e) for e in events if e.created_at < now - services.RETRY_WINDOW], batch_size=5000
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE accounts_event")
        cursor.execute("ANALYZE webhooks_webhookfanout")

    # when the tick looks for missed fan-outs and there are none
    with CaptureQueriesContext(connection) as ctx:
        assert services.events_fan_out_missed() == 0

    # then it reads a handful of rows, not the 3 days of events and every marker
    [query] = [q["sql"] for q in ctx.captured_queries if "accounts_event" in q["sql"]]
    examined = rows_examined(query)
    assert sum(examined.values()) < 1_000, examined  # {'accounts_event': 3046, 'webhooks_webhookfanout': 30000} before

    # and an event whose fan-out never ran (the worker died) is still found, and fanned out once
    missed = Event.objects.create(
        organization=owner.org,
        type="scheduled_post.published",
        data={"id": "sp_missed"},
        created_at=now - timedelta(minutes=1),
    )
    WebhookEndpoint.objects.update(created_at=now - timedelta(days=31))  # subscribed before it happened
    assert services.events_fan_out_missed() == 1
    assert WebhookDelivery.objects.filter(event=missed).count() == 1
    assert services.events_fan_out_missed() == 0


def _event(owner, type_="scheduled_post.published", **fields) -> Event:
    return Event.objects.create(organization=owner.org, type=type_, data={"id": "sp_1"}, **fields)


def test_a_fan_out_marks_its_event_with_its_markers_time(owner):
    _subscribed_endpoint(owner)
    WebhookEndpoint.objects.update(created_at=timezone.now() - timedelta(days=1))
    heard, quiet = _event(owner), _event(owner, "social_account.connected")  # a subscriber / none

    for event in (heard, quiet):
        services.event_fan_out(event_id=event.pk, recorded=event)

    for event in (heard, quiet):
        event.refresh_from_db()
        assert event.fanned_out_at == WebhookFanout.objects.get(event=event).fanned_out_at
    assert WebhookDelivery.objects.filter(event=heard).count() == 1


def test_a_fan_out_that_did_not_commit_leaves_its_event_to_the_tick(owner, monkeypatch):
    _subscribed_endpoint(owner)
    WebhookEndpoint.objects.update(created_at=timezone.now() - timedelta(days=1))
    event = _event(owner, created_at=timezone.now() - timedelta(minutes=1))

    class WorkerDied(Exception):
        pass

    def die(*args, **kwargs):
        raise WorkerDied()

    # the fan-out's transaction fails after its marker was written: both are rolled back, the mark with them
    with monkeypatch.context() as patched:
        patched.setattr(WebhookDelivery.objects, "bulk_create", die)
        with pytest.raises(WorkerDied):
            services.event_fan_out(event_id=event.pk)
    event.refresh_from_db()
    assert event.fanned_out_at is None and not WebhookFanout.objects.filter(event=event).exists()

    assert services.events_fan_out_missed() == 1
    assert WebhookDelivery.objects.filter(event=event).count() == 1
    event.refresh_from_db()
    assert event.fanned_out_at is not None


def test_an_event_the_previous_release_fanned_out_is_marked_by_the_tick_not_fanned_out_again(owner):
    # During a deploy (or after a rollback) the release without fanned_out_at fans events out with the
    # marker alone: the tick finds them unmarked.
    _subscribed_endpoint(owner)
    WebhookEndpoint.objects.update(created_at=timezone.now() - timedelta(days=1))
    event = _event(owner, created_at=timezone.now() - timedelta(minutes=2))
    marker = WebhookFanout.objects.create(event=event, fanned_out_at=timezone.now() - timedelta(minutes=1))

    assert services.events_fan_out_missed() == 0

    event.refresh_from_db()
    assert event.fanned_out_at == marker.fanned_out_at
    assert not WebhookDelivery.objects.filter(event=event).exists()
    assert not Event.objects.filter(fanned_out_at__isnull=True).exists()  # out of the tick's search


def test_enabling_an_endpoint_again_does_not_send_it_the_events_whose_fan_out_was_lost_while_it_was_off(owner):
    """endpoint_enable promises deliveries "from the next event on". An event whose fan-out never committed
    while the organization had no live endpoint was left by the tick (it looks only at organizations with
    one); the endpoint enabled again, the tick fanned it out to it, up to 3 days late. The endpoint now
    receives the events from its enabling on, as it receives those from its creation on."""
    endpoint = _subscribed_endpoint(owner)
    WebhookEndpoint.objects.update(created_at=timezone.now() - timedelta(days=1))
    services.endpoint_disable(endpoint_id=endpoint.pk, reason="staff")
    lost = [_event(owner, created_at=timezone.now() - timedelta(hours=h)) for h in (1, 2)]  # fan-outs lost
    assert services.events_fan_out_missed() == 0  # no live endpoint in the organization: left

    with CaptureQueriesContext(connection) as enabling:
        services.endpoint_enable(endpoint_id=endpoint.pk)

    assert len(enabling) < 10  # however many events were lost: nothing is settled in the staff's request
    assert services.events_fan_out_missed() == 2  # found by the tick now, and fanned out to no one
    assert not WebhookDelivery.objects.exists()
    for event in lost:
        event.refresh_from_db()
        assert event.fanned_out_at is not None  # out of the tick's search
    heard = _event(owner)  # the next event reaches it
    assert services.event_fan_out(event_id=heard.pk) and WebhookDelivery.objects.get().event_id == heard.pk


def test_the_events_lost_while_an_endpoint_was_off_still_reach_its_organizations_other_live_endpoints(owner):
    off, on = _subscribed_endpoint(owner), _subscribed_endpoint(owner)
    WebhookEndpoint.objects.update(created_at=timezone.now() - timedelta(days=1))
    services.endpoint_disable(endpoint_id=off.pk, reason="staff")
    lost = _event(owner, created_at=timezone.now() - timedelta(seconds=5))  # the tick has not reached it yet
    services.endpoint_enable(endpoint_id=off.pk)

    with time_machine.travel(timezone.now() + services.FANOUT_GRACE):
        assert services.events_fan_out_missed() == 1

    assert list(WebhookDelivery.objects.values_list("endpoint_id", "event_id")) == [(on.pk, lost.pk)]
