"""A whole-list resend locks up to 500 deliveries at once (deliveries_resend, in key order). The retention purge
and a data deletion request lock deliveries too, many at a time: unless they take them in the same order, each
can hold a delivery the other waits for, and PostgreSQL ends one of them, a 500 for ops' resend page or a failed
purge / Meta deletion request. Two real connections (three, with the one that holds a row to order the waits)."""

import pytest
from django.db import transaction

from accounts.models import Event
from accounts.webhooks import services, tasks
from accounts.webhooks.models import WebhookDelivery
from tests.concurrency import held_open, on_its_own_connection, wait_until_waiting
from tests.webhooks.helpers import create_endpoint, delivery_of, record
from tests.webhooks.test_retention import age

pytestmark = pytest.mark.django_db(transaction=True)


def plan_order(event_ids) -> list[str]:
    """The deliveries of `event_ids` in the order an unordered read of them returns them (the plan's order)."""
    return list(WebhookDelivery.objects.filter(event_id__in=event_ids).values_list("pk", flat=True))


def test_a_whole_list_resend_and_the_retention_purge_never_deadlock(owner, receivers, monkeypatch):
    monkeypatch.setattr(tasks.webhook_deliver, "delay", lambda *args: None)
    endpoint = create_endpoint(owner, receivers(respond=lambda r: (500, {})).url())
    events = [record(owner) for _ in range(3)]
    WebhookDelivery.objects.filter(event__in=events).update(status="failed", next_attempt_at=None)
    age(*events, days=45)
    deliveries = [delivery_of(event, endpoint) for event in events]
    # Keys chosen against the plan's order: the purge's read meets the highest key first, then the one held, then
    # the lowest; the resend (key order) takes the lowest first.
    first, middle, last = plan_order([e.pk for e in events])
    for pk, new in ((first, "whd_zzzz"), (middle, "whd_mmmm"), (last, "whd_aaaa")):
        WebhookDelivery.objects.filter(pk=pk).update(id=new)
    order = plan_order([e.pk for e in events])
    assert order == ["whd_zzzz", "whd_mmmm", "whd_aaaa"], order  # the setup this race needs
    assert len(deliveries) == 3
    errors: list = []

    with held_open(lambda: list(WebhookDelivery.objects.select_for_update().filter(pk="whd_mmmm"))):
        purge = on_its_own_connection(services.events_purge_expired, errors)
        wait_until_waiting('"event_id" IN')
        resend = on_its_own_connection(
            lambda: services.deliveries_resend(delivery_ids=["whd_aaaa", "whd_zzzz"], send_now=False), errors
        )
        wait_until_waiting('ORDER BY "webhooks_webhookdelivery"."id" ASC FOR UPDATE', count=1)
    purge.join(30)
    resend.join(30)

    assert errors == [], errors


def test_a_whole_list_resend_and_a_data_deletion_rewriting_bodies_never_deadlock(owner, receivers, monkeypatch):
    """A data deletion request rewrites the stored body of every delivery of the person's events
    (deliveries_body_rewritten), while ops resend a whole list of that partner's failed deliveries."""
    monkeypatch.setattr(tasks.webhook_deliver, "delay", lambda *args: None)
    endpoint = create_endpoint(owner, receivers(respond=lambda r: (500, {})).url())
    created = [record(owner).pk for _ in range(3)]
    events = list(Event.objects.filter(pk__in=created).order_by("pk"))  # the database's order of the keys
    WebhookDelivery.objects.filter(event__in=events).update(status="failed", next_attempt_at=None)
    # The erasure rewrites them event by event (key order): the highest delivery key first, then the one held,
    # then the lowest; the resend takes the lowest first.
    for event, new in zip(events, ("whd_zzzz", "whd_mmmm", "whd_aaaa"), strict=True):
        WebhookDelivery.objects.filter(pk=delivery_of(event, endpoint).pk).update(id=new)
    errors: list = []

    def erase():  # in the erasure's transaction, as accounts.services._events_scrubbed calls it
        with transaction.atomic():
            services.deliveries_body_rewritten(event_ids=[event.pk for event in events])

    with held_open(lambda: list(WebhookDelivery.objects.select_for_update().filter(pk="whd_mmmm"))):
        erasure = on_its_own_connection(erase, errors)
        wait_until_waiting("webhooks_webhookdelivery")
        resend = on_its_own_connection(
            lambda: services.deliveries_resend(delivery_ids=["whd_aaaa", "whd_zzzz"], send_now=False), errors
        )
        wait_until_waiting("webhooks_webhookdelivery", count=2)
    erasure.join(30)
    resend.join(30)

    assert errors == [], errors
    assert set(WebhookDelivery.objects.filter(event__in=events).values_list("status", flat=True)) >= {"pending"}
