"""Relays racing on real PostgreSQL connections (one per thread): concurrent fan-outs of one event make one
delivery per endpoint, concurrent claimers never claim the same delivery, and concurrent ticks never queue
the same delivery twice."""

import threading
from collections import Counter

import pytest
from django.db import connection

from accounts.webhooks import services, tasks
from accounts.webhooks.models import WebhookDelivery, WebhookFanout
from tests.webhooks.helpers import create_endpoint, record

pytestmark = pytest.mark.django_db(transaction=True)


def race(workers: int, work):
    """Run `work()` in `workers` threads released at the same moment; returns their results."""
    barrier = threading.Barrier(workers)
    results, errors = [None] * workers, []

    def run(index):
        try:
            barrier.wait(timeout=30)
            results[index] = work()
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return results


@pytest.fixture
def lost_messages(monkeypatch):
    """The broker loses every queued message: deliveries stay pending until someone claims them."""
    monkeypatch.setattr("accounts.services._after_event_commit", lambda event_id: None)
    monkeypatch.setattr(tasks.webhook_deliver, "delay", lambda *args: None)


def test_concurrent_fan_outs_of_one_event_create_one_delivery_per_endpoint(owner, lost_messages):
    endpoints = [create_endpoint(owner, f"https://93.184.216.34/hooks/{i}") for i in range(3)]
    event = record(owner)

    results = race(6, lambda: services.event_fan_out(event_id=event.pk))

    created = [pk for ids in results for pk in ids]
    assert len(created) == len(set(created)) == 3
    assert sorted(WebhookDelivery.objects.values_list("endpoint_id", flat=True)) == sorted(e["id"] for e in endpoints)
    assert WebhookFanout.objects.get(event=event).deliveries == 3


@pytest.fixture
def forty_due(owner, lost_messages) -> list[str]:
    for i in range(4):
        create_endpoint(owner, f"https://93.184.216.34/hooks/{i}")
    for n in range(10):
        services.event_fan_out(event_id=record(owner, n=n).pk)
    ids = list(WebhookDelivery.objects.filter(status="pending").values_list("pk", flat=True))
    assert len(ids) == 40
    WebhookDelivery.objects.update(queued_at=None)  # the fan-outs' sends were lost a lease ago
    return ids


def test_concurrent_claimers_never_claim_the_same_delivery(forty_due, monkeypatch, settings):
    # Every send task (the on-commit one, the tick's copies) tries to claim: one attempt per delivery. The
    # claims are never sent here, so the in-flight caps (tests/webhooks/test_fairness.py) are lifted.
    monkeypatch.setattr(services, "ENDPOINT_IN_FLIGHT", 40)
    settings.LAYERS_WEBHOOK_ORG_IN_FLIGHT = 40

    def claim_each():
        return [claim.delivery_id for pk in forty_due if (claim := services.delivery_claim(delivery_id=pk))]

    results = race(4, claim_each)

    counts = Counter(pk for claimed in results for pk in claimed)
    assert len(counts) == 40
    assert set(counts.values()) == {1}
    assert set(WebhookDelivery.objects.values_list("status", "attempts")) == {("sending", 1)}


def test_concurrent_ticks_queue_each_due_delivery_once(forty_due):
    def queue_until_empty():
        queued = []
        while batch := services.deliveries_queue_due(limit=3):
            queued += batch
        return queued

    results = race(4, queue_until_empty)

    counts = Counter(pk for queued in results for pk in queued)
    assert sorted(counts) == sorted(forty_due)
    assert set(counts.values()) == {1}
    # queued is not attempted: nothing is claimed, numbered or timed until a send starts
    assert set(WebhookDelivery.objects.values_list("status", "attempts", "give_up_at")) == {("pending", 0, None)}
