"""Celery tasks of the webhook relay: each takes ids and calls one service. None of them retries through
Celery: the schedule of a delivery lives in its row (next_attempt_at), and the periodic tick picks up
whatever a lost message or a dead worker left behind, so every task is safe to run twice."""

import logging
from collections import Counter

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
    """Claim the delivery if it is due and send it (fresh deliveries, staff resends, and every send the
    tick queues): the attempt counts from here, when it starts, not from when it was queued."""
    return services.delivery_deliver(delivery_id=delivery_id)


@shared_task
def webhook_send(delivery_id: str, attempt: int) -> str:
    """Send an attempt already claimed; a no-op when the claim is no longer current. The tick no longer
    queues it (it queues webhook_deliver); kept so that messages queued before that change still run."""
    return services.delivery_send(delivery_id=delivery_id, attempt=attempt)


@shared_task
def webhooks_tick() -> dict:
    """Periodic safety net: fan out events whose fan-out never committed, give committed events their place
    in GET /v1/events (accounts.services.events_sequence_pending), then queue a send of each due delivery
    (and of those whose relay died mid-send) whose endpoint and organization can take one now, no more than
    leave LAYERS_WEBHOOK_MAX_WAITING queued and not started; the send claims its attempt when it starts."""
    fanned_out = services.events_fan_out_missed()
    events_sequence_pending()
    queued = 0
    # Read once for the whole tick: sends to an endpoint (or organization) that is down or full now are
    # not queued (they would be deferred when they start); they stay due for a later tick.
    gates = services.deliveries_closed_gates()
    closed = gates
    # At most the room left by the sends queued and not started yet (deliveries_queue_room): with the webhook
    # workers down, each lease queued every due delivery again.
    room = services.deliveries_queue_room()
    # About one turn (a batch, less when the room is short) per organization and tick: taken oldest first, an
    # organization's backlog (a burst to a slow endpoint) filled every batch with sends its gate mostly
    # deferred, and another organization's delivery due after it waited until the whole backlog had been
    # queued. An organization that had its turn is left out of the tick's next batches.
    turn = services.deliveries_queue_turn(room=room, batches=MAX_BATCHES_PER_TICK)
    per_organization: Counter[str] = Counter()
    for _ in range(MAX_BATCHES_PER_TICK):
        limit = min(turn, room - queued)
        if limit <= 0:
            break
        rows = services.deliveries_queue_due_of_organizations(limit=limit, closed=closed)
        ids = [pk for pk, _ in rows]
        sent = services.deliveries_send_queued(ids)
        queued += sent
        if sent < len(ids):
            break  # the broker refuses: the rest are the next tick's
        if len(ids) < limit:
            break
        per_organization.update(organization_id for _, organization_id in rows)
        closed = gates.and_organizations(
            organization_id for organization_id, n in per_organization.items() if n >= turn
        )
    return {"fannedOut": fanned_out, "queued": queued}


@shared_task
def events_purge_expired() -> int:
    """Periodic: delete events (and their deliveries) past LAYERS_EVENT_RETENTION."""
    return services.events_purge_expired()


@shared_task(bind=True)
def deliveries_resend_by_staff(self, delivery_ids: list[str], staff_user_id: int, mark, description: str) -> dict:
    """The rest of a staff resend of many deliveries (admin: more than one web request does), a batch at a time.
    Only rows change here: the relay sends them, at each receiver's pace, from its next tick."""
    from accounts.admin_bulk import by_a_worker
    from accounts.webhooks.models import WebhookDelivery

    return by_a_worker(
        model=WebhookDelivery,
        ids=delivery_ids,
        staff_user_id=staff_user_id,
        mark=mark,
        description=description,
        service=lambda ids, actor, mark: services.deliveries_resend(
            delivery_ids=ids, actor=actor, attempted_after=mark, send_now=False
        ),
        task=self,
    )
