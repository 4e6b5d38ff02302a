"""Celery tasks of the webhook relay: each takes ids and calls one service. None of them retries through
Celery: the schedule of a delivery lives in its row (next_attempt_at), and the periodic tick picks up
whatever a lost message or a dead worker left behind, so every task is safe to run twice."""

import logging

from celery import shared_task

from accounts.services import events_sequence_pending
from accounts.webhooks import services

log = logging.getLogger(__name__)

# Bounds one tick's work; what is left is taken by the next tick.
MAX_BATCHES_PER_TICK = 10


@shared_task
def webhook_fan_out(event_id: str) -> int:
    """A committed event → its deliveries (queued by accounts.services._after_event_commit)."""
    return len(services.event_fan_out(event_id=event_id))


@shared_task
def webhook_deliver(delivery_id: str) -> str:
    """Claim the delivery if it is due and send it (fresh deliveries and staff resends)."""
    return services.delivery_deliver(delivery_id=delivery_id)


@shared_task
def webhook_send(delivery_id: str, attempt: int) -> str:
    """Send an attempt the tick already claimed; a no-op when the claim is no longer current."""
    return services.delivery_send(delivery_id=delivery_id, attempt=attempt)


@shared_task
def webhooks_tick() -> dict:
    """Periodic safety net: fan out events whose fan-out never committed, give committed events their place
    in GET /v1/events (accounts.services.events_sequence_pending), then claim due deliveries (and those
    whose relay died mid-send) and queue their sends."""
    fanned_out = services.events_fan_out_missed()
    events_sequence_pending()
    claimed = 0
    for _ in range(MAX_BATCHES_PER_TICK):
        claims = services.deliveries_claim_due()
        for claim in claims:
            webhook_send.delay(claim.delivery_id, claim.attempt)
        claimed += len(claims)
        if len(claims) < services.CLAIM_BATCH:
            break
    return {"fannedOut": fanned_out, "claimed": claimed}


@shared_task
def events_purge_expired() -> int:
    """Periodic: delete events (and their deliveries) past LAYERS_EVENT_RETENTION."""
    return services.events_purge_expired()
