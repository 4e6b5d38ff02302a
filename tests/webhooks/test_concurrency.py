"""Relays racing on real PostgreSQL connections (one per thread): concurrent fan-outs of one event make one
delivery per endpoint, and concurrent claimers never claim the same delivery."""

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


def test_concurrent_claimers_never_claim_the_same_delivery(owner, lost_messages):
    for i in range(4):
        create_endpoint(owner, f"https://93.184.216.34/hooks/{i}")
    for n in range(10):
        services.event_fan_out(event_id=record(owner, n=n).pk)
    assert WebhookDelivery.objects.filter(status="pending").count() == 40

    def claim_until_empty():
        claimed = []
        while batch := services.deliveries_claim_due(limit=3):
            claimed += [c.delivery_id for c in batch]
        return claimed

    results = race(4, claim_until_empty)

    counts = Counter(pk for claimed in results for pk in claimed)
    assert len(counts) == 40
    assert set(counts.values()) == {1}
    assert set(WebhookDelivery.objects.values_list("status", "attempts")) == {("sending", 1)}
