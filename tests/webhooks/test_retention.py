"""Events and their webhook deliveries are deleted once past LAYERS_EVENT_RETENTION (30 days), except while
a delivery of theirs is still to be sent; nothing younger is touched."""

import json
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import Event
from accounts.webhooks import services, tasks
from accounts.webhooks.models import WebhookDelivery, WebhookDeliveryAttempt, WebhookFanout
from tests.admin_plans import statements_on
from tests.webhooks.helpers import create_endpoint, delivery_of, record

pytestmark = pytest.mark.django_db(transaction=True)


def age(*events, days: float) -> None:
    Event.objects.filter(pk__in=[e.pk for e in events]).update(created_at=timezone.now() - timedelta(days=days))


def listed(tenant) -> set[str]:
    body = tenant.client.get("/v1/events?limit=100").json()
    return {event["id"] for event in body["data"]}


def test_old_events_go_with_their_deliveries_and_attempts_the_rest_stays(owner, sibling, receivers):
    receiver = receivers(respond=lambda r: (200, {}))
    create_endpoint(owner, receiver.url())
    delivered, failed, still_retrying, recent = (record(owner, n=i) for i in range(4))
    no_subscriber = record(sibling)
    WebhookDelivery.objects.filter(event=failed).update(status="failed", next_attempt_at=None)
    WebhookDelivery.objects.filter(event=still_retrying).update(
        status="pending", next_attempt_at=timezone.now() + timedelta(hours=1)
    )
    age(delivered, failed, still_retrying, no_subscriber, days=31)
    age(recent, days=29)
    assert WebhookDeliveryAttempt.objects.filter(delivery__event=delivered).exists()

    assert tasks.events_purge_expired() == 3

    assert set(Event.objects.values_list("pk", flat=True)) == {still_retrying.pk, recent.pk}
    assert set(WebhookDelivery.objects.values_list("event_id", flat=True)) == {still_retrying.pk, recent.pk}
    gone = [delivered.pk, failed.pk]
    assert not WebhookDeliveryAttempt.objects.filter(delivery__event_id__in=gone).exists()
    assert not WebhookFanout.objects.filter(event_id__in=gone).exists()
    assert listed(owner) == {still_retrying.pk, recent.pk} and listed(sibling) == set()
    assert tasks.events_purge_expired() == 0


def test_the_purge_works_through_a_backlog_in_batches(owner):
    events = [record(owner, n=i) for i in range(7)]
    age(*events, days=40)
    assert services.events_purge_expired(batch_size=3) == 7
    assert not Event.objects.exists()


def test_a_run_stops_at_its_budget_and_the_next_run_goes_on(owner, monkeypatch):
    """The first purge after months of events held a worker of the default queue for minutes (918,765 events,
    5.4 minutes): a run stops taking batches once its budget is spent, and the hourly runs work the backlog
    off. A budget of 0 is one batch a run."""
    monkeypatch.setattr(services, "PURGE_RUN_BUDGET", timedelta(0))
    events = [record(owner, n=i) for i in range(7)]
    age(*events, days=40)

    assert [services.events_purge_expired(batch_size=3) for _ in range(4)] == [3, 3, 1, 0]
    assert not Event.objects.exists()


def test_the_check_for_unsent_deliveries_reads_those_only(owner, receivers):
    """Whether an expired event still has a delivery to send was answered by walking the event_id index of
    every delivery kept until an unsent one (the newest, at its end): 0.1 to 0.45 s per batch of 2,000 events
    at 300,000 deliveries. It reads the partial index of the unsent ones. The plan is asserted, never time;
    sequential scans are priced out (on a few rows reading the table is the cheapest plan)."""
    create_endpoint(owner, receivers(respond=lambda r: (200, {})).url())
    events = [record(owner, n=i) for i in range(3)]
    age(*events, days=40)
    WebhookDelivery.objects.filter(event=events[0]).update(status="pending")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE webhooks_webhookdelivery")
    with CaptureQueriesContext(connection) as captured:
        services.events_purge_expired()
    checks = [sql for sql in statements_on(captured, "webhooks_webhookdelivery") if "NOT EXISTS" in sql]
    assert checks

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        for sql in checks:
            cursor.execute("EXPLAIN (FORMAT JSON) " + sql)
            plan = cursor.fetchone()[0]
            plan = json.loads(plan) if isinstance(plan, str) else plan
            assert delivery_reads(plan[0]["Plan"]) == ["whd_unfinished_event"], sql
        transaction.set_rollback(True)


def delivery_reads(node: dict) -> list[str]:
    """The index each read of webhooks_webhookdelivery in the plan goes through ("" for none)."""
    found = [node.get("Index Name", "")] if node.get("Relation Name") == "webhooks_webhookdelivery" else []
    for child in node.get("Plans", ()):
        found += delivery_reads(child)
    return found


def test_retention_zero_keeps_every_event(owner):
    event = record(owner)
    age(event, days=4000)
    with override_settings(LAYERS_EVENT_RETENTION=timedelta(0)):
        assert services.events_purge_expired() == 0
    assert Event.objects.filter(pk=event.pk).exists()


@pytest.fixture
def unsent(monkeypatch):
    """Resent deliveries stay pending (the broker loses the message): what the purge sees is the row."""
    monkeypatch.setattr(tasks.webhook_deliver, "delay", lambda *args: None)


def failed_old_delivery(owner, receivers):
    receiver = receivers(respond=lambda r: (500, {}))
    endpoint = create_endpoint(owner, receiver.url())
    event = record(owner)
    WebhookDelivery.objects.filter(event=event).update(status="failed", next_attempt_at=None)
    age(event, days=45)
    return event, delivery_of(event, endpoint)


def test_a_resend_committed_while_the_purge_runs_keeps_its_event(owner, receivers, unsent, monkeypatch):
    event, delivery = failed_old_delivery(owner, receivers)
    purge_batch = services._purge_batch

    def resend_in_between(candidates, cutoff):  # after the purge picked the event, before it deletes
        services.delivery_resend(delivery_id=delivery.pk)
        return purge_batch(candidates, cutoff)

    monkeypatch.setattr(services, "_purge_batch", resend_in_between)
    assert services.events_purge_expired() == 0
    assert WebhookDelivery.objects.get(pk=delivery.pk).status == "pending"


def test_a_resend_holding_its_lock_when_the_purge_starts_keeps_its_event(owner, receivers, unsent):
    """On two PostgreSQL connections: the resend has locked and changed the delivery but not yet committed;
    the purge waits for it, then sees the delivery pending."""
    event, delivery = failed_old_delivery(owner, receivers)
    locked, errors, purged = threading.Event(), [], []

    def resend_slowly():
        try:
            with transaction.atomic():
                services.delivery_resend(delivery_id=delivery.pk)
                locked.set()
                time.sleep(1.0)  # the purge runs into the lock meanwhile
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            locked.set()
            connection.close()

    def purge():
        try:
            locked.wait(timeout=10)
            purged.append(services.events_purge_expired())
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=resend_slowly), threading.Thread(target=purge)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == [] and purged == [0]
    assert WebhookDelivery.objects.get(pk=delivery.pk).status == "pending"
    assert Event.objects.filter(pk=event.pk).exists()


def test_resending_a_delivery_the_purge_removed_says_so(owner, receivers, unsent):
    event, delivery = failed_old_delivery(owner, receivers)
    assert services.events_purge_expired() == 1

    from config.api.errors import Conflict

    with pytest.raises(Conflict) as refused:
        services.delivery_resend(delivery_id=delivery.pk)
    assert refused.value.code == "DELIVERY_GONE" and "retention" in refused.value.message
