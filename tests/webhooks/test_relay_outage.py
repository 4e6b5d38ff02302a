"""The webhook workers down for an hour (nothing starts) with a backlog of due deliveries: the relay tick must
not put a copy of every due delivery on the `webhooks` queue again each lease. It did — the gates count sends
in progress, so they stayed open — and 200,000 due deliveries became about 2.4M messages, which the workers,
once back, went through (no-op copies) before the real sends: partners' webhooks came late after the outage.
The sends queued and not started are now bounded (LAYERS_WEBHOOK_MAX_WAITING), and organizations still take
turns."""

from collections import Counter
from datetime import timedelta

import pytest
import time_machine
from django.conf import settings as django_settings
from django.utils import timezone

from accounts.models import Event
from accounts.webhooks import services, tasks
from accounts.webhooks.models import WebhookDelivery, WebhookFanout
from tests.platform_helpers import held_tasks
from tests.webhooks.helpers import create_endpoint

pytestmark = pytest.mark.django_db(transaction=True)

BOUND = 60
TICK = timedelta(seconds=15)  # the beat's relay tick


def due_deliveries(tenant, endpoint: dict, n: int, *, due: "timezone.datetime") -> list[str]:
    """`n` deliveries of `tenant`'s events to `endpoint`, pending and due from `due` on (one a second), their
    fan-out done: a backlog as the relay leaves it when nobody sends."""
    events = Event.objects.bulk_create(
        [
            Event(organization=tenant.org, type="social_account.connected", data={"n": i}, created_at=due)
            for i in range(n)
        ]
    )
    WebhookFanout.objects.bulk_create([WebhookFanout(event=e) for e in events])
    deliveries = WebhookDelivery.objects.bulk_create(
        [
            WebhookDelivery(
                endpoint_id=endpoint["id"],
                event=event,
                body=services.event_body(event),
                next_attempt_at=due + timedelta(seconds=i),
            )
            for i, event in enumerate(events)
        ]
    )
    return [d.pk for d in deliveries]


def test_an_hour_without_webhook_workers_queues_a_bounded_number_of_sends_each_delivered_once_after(
    owner, sibling, receivers, settings
):
    settings.LAYERS_WEBHOOK_MAX_WAITING = BOUND
    lease = django_settings.LAYERS_WEBHOOK_LEASE
    a_receiver, b_receiver = receivers(), receivers()
    a_endpoint = create_endpoint(owner, a_receiver.url())
    b_endpoint = create_endpoint(sibling, b_receiver.url())
    start = timezone.now()
    # A's backlog is the older one: strictly oldest first, B's deliveries would wait behind all of it
    a_ids = due_deliveries(owner, a_endpoint, 400, due=start - timedelta(hours=1))
    b_ids = due_deliveries(sibling, b_endpoint, 20, due=start - timedelta(minutes=1))

    with time_machine.travel(start, tick=False) as traveller, held_tasks() as held:
        # the workers are down for an hour: the beat still ticks every 15 s, nothing queued starts
        queued_at: list = []  # each message's time on the queue
        for n in range(int(timedelta(hours=1) / TICK)):
            before = len(held)
            tasks.webhooks_tick()
            now = timezone.now()
            queued_at += [now] * (len(held) - before)
            # never more than the bound queued and not started within a lease
            waiting = sum(1 for at in queued_at if at > now - lease)
            assert waiting <= BOUND, (n, waiting)
            traveller.shift(TICK)

        assert {task for task, _ in held} == {tasks.webhook_deliver}
        leases = timedelta(hours=1) / lease
        # about the bound each lease: was every due delivery each lease (420 x 12 = 5,040)
        assert len(held) <= BOUND * (leases + 1), len(held)
        # B's deliveries were not kept behind A's older backlog: the organizations took turns, and B's went out
        # while A's backlog had had no more than B's share
        order = [args[0] for _, args in held]
        b_last = max(order.index(pk) for pk in b_ids)
        assert len({pk for pk in order[:b_last] if pk in a_ids}) <= len(b_ids) + BOUND // 10, b_last

        # the workers are back: they run what waited, oldest first, and the relay goes on ticking
        outcomes: Counter = Counter()
        for _ in range(200):
            while held:
                task, args = held.pop(0)
                outcomes[task.apply(args=args).result] += 1
            if not WebhookDelivery.objects.exclude(status="delivered").exists():
                break
            traveller.shift(TICK)
            tasks.webhooks_tick()

    # every delivery sent once, to its receiver, as attempt 1: the copies that waited did nothing
    for receiver, ids in ((a_receiver, a_ids), (b_receiver, b_ids)):
        sent = Counter(request.headers["layers-delivery-id"] for request in receiver.requests)
        assert sent == Counter(ids)
    assert set(WebhookDelivery.objects.values_list("status", "attempts")) == {("delivered", 1)}
    assert outcomes["delivered"] == 420, outcomes
