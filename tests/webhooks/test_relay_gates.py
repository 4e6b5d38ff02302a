"""The relay tick queues no send that its endpoint's (or organization's) gate would refuse: each such send was
a no-op message on the FIFO `webhooks` queue that every other organization's sends waited behind, queued
again at every tick while the endpoint stayed down or full. Skipped, never lost: the delivery stays pending
and a later tick queues it. Counts of what reaches webhook_deliver.delay; real PostgreSQL."""

from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.utils import timezone

from accounts.callgate import CallGate
from accounts.webhooks import services, tasks
from accounts.webhooks.models import WebhookDelivery
from tests.webhooks.helpers import create_endpoint, delivery_of, record

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def queued(monkeypatch) -> list[str]:
    """The webhooks queue: what reaches webhook_deliver.delay (nobody takes it unless the test does)."""
    sent: list[str] = []
    monkeypatch.setattr(tasks.webhook_deliver, "delay", sent.append)
    return sent


def pending_to(tenant, endpoint: dict, n: int) -> list[str]:
    return [delivery_of(record(tenant), endpoint).pk for _ in range(n)]


def to(endpoint: dict) -> list[str]:
    return list(WebhookDelivery.objects.filter(endpoint_id=endpoint["id"]).values_list("pk", flat=True))


def forget_the_fan_outs_sends() -> None:
    """The sends the fan-outs queued were lost a lease ago: the tick queues those deliveries again."""
    WebhookDelivery.objects.update(queued_at=None)


def holding(n: int) -> dict:
    """n live slots (sends in flight elsewhere)."""
    until = (timezone.now() + timedelta(minutes=4)).timestamp()
    return {f"whd_in_flight_{i}": until for i in range(n)}


def test_a_tick_queues_nothing_for_an_endpoint_cooling_off_and_everything_after(owner, sibling, receivers, queued):
    a_receiver, b_receiver = receivers(), receivers()
    a_endpoint, b_endpoint = create_endpoint(owner, a_receiver.url()), create_endpoint(sibling, b_receiver.url())
    a_ids = pending_to(owner, a_endpoint, 50)
    b_id = pending_to(sibling, b_endpoint, 1)[0]
    queued.clear()  # the fan-out's own sends went out (or were lost): the tick is the safety net
    forget_the_fan_outs_sends()
    now = timezone.now()
    cool_off_ends = now + services.COOL_OFF
    CallGate.objects.create(
        key=services.endpoint_gate_key(a_endpoint["id"]),
        failures=services.FAILURES_BEFORE_COOL_OFF,
        down_until=cool_off_ends,
    )
    before = {d.pk: d.next_attempt_at for d in WebhookDelivery.objects.filter(pk__in=a_ids)}

    tasks.webhooks_tick()

    assert queued == [b_id], f"{len(queued)} sends queued, {len(queued) - 1} of them no-ops behind B's"
    rows = WebhookDelivery.objects.filter(pk__in=a_ids)
    assert {(d.status, d.attempts, d.queued_at) for d in rows} == {("pending", 0, None)}
    assert {d.pk: d.next_attempt_at for d in rows} == before  # untouched: still due, not pushed back
    with time_machine.travel(now + timedelta(seconds=15)):  # the next tick: still cooling off
        tasks.webhooks_tick()
    assert queued == [b_id]

    with time_machine.travel(cool_off_ends + timedelta(seconds=1)):
        tasks.webhooks_tick()
        assert sorted(queued[1:]) == sorted(a_ids)
        for delivery_id in queued[1:]:
            tasks.webhook_deliver(delivery_id)
    assert {(d.status, d.attempts) for d in rows.all()} == {("delivered", 1)}
    assert len(a_receiver.requests) == 50


def test_a_tick_skips_an_endpoint_or_organization_with_its_sends_in_flight(owner, sibling, receivers, queued):
    target = receivers()
    busy, free = create_endpoint(owner, target.url() + "/busy"), create_endpoint(owner, target.url() + "/free")
    other = create_endpoint(sibling, target.url() + "/b")
    for _ in range(3):
        record(owner)  # each event: one delivery to each of the organization's two endpoints
        record(sibling)
    busy_ids, free_ids, other_ids = (to(busy), to(free), to(other))
    queued.clear()
    forget_the_fan_outs_sends()
    gate = CallGate.objects.create(
        key=services.endpoint_gate_key(busy["id"]), slots=holding(services.ENDPOINT_IN_FLIGHT)
    )

    tasks.webhooks_tick()
    assert sorted(queued) == sorted(free_ids + other_ids)  # the busy endpoint's wait; its organization's others go

    # Its organization has all its sends in flight (at another endpoint): none of its deliveries is queued.
    gate.slots = {}
    gate.save()
    CallGate.objects.create(
        key=services.org_gate_key(owner.org.id), slots=holding(settings.LAYERS_WEBHOOK_ORG_IN_FLIGHT)
    )
    WebhookDelivery.objects.update(queued_at=None)
    queued.clear()
    tasks.webhooks_tick()
    assert sorted(queued) == sorted(other_ids)

    # Slots whose lease ended (a relay that died mid-send) do not count: the next tick queues them all.
    CallGate.objects.update(slots={"whd_dead": (timezone.now() - timedelta(seconds=1)).timestamp()})
    WebhookDelivery.objects.update(queued_at=None)
    queued.clear()
    tasks.webhooks_tick()
    assert sorted(queued) == sorted(busy_ids + free_ids + other_ids)


def test_a_tick_reads_the_gates_once_whatever_the_number_of_deliveries(
    owner, sibling, outsider, receivers, queued, monkeypatch
):
    for tenant in (owner, sibling, outsider):  # a batch each (a tick gives an organization about one)
        pending_to(tenant, create_endpoint(tenant, receivers().url()), 2)
    queued.clear()
    forget_the_fan_outs_sends()
    monkeypatch.setattr(services, "CLAIM_BATCH", 2)  # three batches in one tick
    reads = []
    real = CallGate.objects.filter

    def counting(*args, **kwargs):
        reads.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(CallGate.objects, "filter", counting)
    tasks.webhooks_tick()
    assert len(queued) == 6
    assert len(reads) == 1


def test_a_tick_queues_one_batch_of_an_organizations_backlog_and_reaches_the_others(
    owner, sibling, receivers, queued, monkeypatch
):
    """The tick queued the due deliveries oldest first, up to MAX_BATCHES_PER_TICK batches: an organization with
    a backlog older than another's delivery (a burst, its endpoint slow) filled every batch, with sends its gate
    mostly deferred, and the other organization's delivery waited until the whole backlog had been queued, 2,000
    a tick (100,000: 12 minutes). Each organization now gets about one batch of a tick."""
    monkeypatch.setattr(services, "CLAIM_BATCH", 5)
    monkeypatch.setattr(tasks, "MAX_BATCHES_PER_TICK", 3)
    a_endpoint = create_endpoint(owner, receivers().url())
    b_endpoint = create_endpoint(sibling, receivers().url())
    backlog = pending_to(owner, a_endpoint, 30)
    b_id = pending_to(sibling, b_endpoint, 1)[0]
    queued.clear()
    forget_the_fan_outs_sends()

    tasks.webhooks_tick()

    assert b_id in queued
    assert len([pk for pk in queued if pk in backlog]) == services.CLAIM_BATCH
