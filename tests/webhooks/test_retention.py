"""Events and their webhook deliveries are deleted once past LAYERS_EVENT_RETENTION (30 days), except while
a delivery of theirs is still to be sent; nothing younger is touched."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test import override_settings
from django.utils import timezone

from accounts.models import Event
from accounts.webhooks import services, tasks
from accounts.webhooks.models import WebhookDelivery, WebhookDeliveryAttempt, WebhookFanout
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
