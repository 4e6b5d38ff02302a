"""The "attempted since the click" mark of ops' bulk resend, against a relay claiming a delivery at the click, on
real PostgreSQL connections.

Ops resend a partner's whole list of undelivered deliveries; the worker doing the rest of it may run minutes later
and leaves alone a delivery attempted after the click (deliveries_resend's `attempted_after`). Attempt ids are
handed out when a row is inserted, not when it commits: a relay's claim that had inserted its attempt and
committed a moment after the click, while another delivery's claim with a higher id had committed before it, was
read as attempted before the click, and the worker resent a delivery staff had never seen attempted: a fresh
3-day retry window and more sends to the partner."""

import pytest

from accounts.webhooks import services, tasks
from accounts.webhooks.models import WebhookDelivery, WebhookDeliveryAttempt
from tests.concurrency import held_open
from tests.webhooks.helpers import create_endpoint, delivery_of, record

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_delivery_whose_claim_commits_after_the_click_is_not_resent(owner, sibling, receivers, monkeypatch):
    monkeypatch.setattr(tasks.webhook_deliver, "delay", lambda *args: None)  # sends only where the test says
    down = receivers(respond=lambda request: (500, {}))
    endpoint = create_endpoint(owner, down.url())
    elsewhere = create_endpoint(sibling, down.url())
    failed, due = delivery_of(record(owner), endpoint), delivery_of(record(owner), endpoint)
    WebhookDelivery.objects.filter(pk=failed.pk).update(status="failed", next_attempt_at=None)  # before the click
    other = delivery_of(record(sibling), elsewhere)

    def claimed():
        return services.delivery_claim(delivery_id=due.pk)

    # The relay's claim of `due` has inserted its attempt and not committed; another relay's claim of another
    # organization's delivery commits meanwhile (a higher id), then ops press Go on the resend.
    with held_open(claimed) as claim:
        assert services.delivery_claim(delivery_id=other.pk) is not None
        mark = services.delivery_attempts_mark()
    assert claim.result is not None
    assert WebhookDeliveryAttempt.objects.get(delivery=due).pk < WebhookDeliveryAttempt.objects.get(delivery=other).pk
    # The claimed attempt goes out after the click, and fails: the delivery waits for its next try.
    assert services.delivery_send(delivery_id=due.pk, attempt=claim.result.attempt) == "retry"

    # The worker doing the rest of the list, later.
    outcome = services.deliveries_resend(delivery_ids=[failed.pk, due.pk], attempted_after=mark, send_now=False)

    assert outcome.done == [failed.pk], outcome  # failed before the click: what ops looked at
    assert outcome.skipped.get(due.pk) is not None and outcome.skipped[due.pk].code == "DELIVERY_CHANGED", outcome
    assert WebhookDelivery.objects.get(pk=due.pk).give_up_at is not None  # its retry window goes on, not reset
