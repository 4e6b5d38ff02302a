"""One organization's endpoints must not delay every other organization's webhooks: at most a few sends in
flight per endpoint and per organization (the rest deferred, not attempted), an endpoint that keeps timing
out is left alone for a short cool-off, and an organization has a bounded number of endpoints. Real
PostgreSQL connections in threads stand in for the `webhooks` worker's threads (make run: 4)."""

import queue
import socket
import time
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from accounts.webhooks import services, tasks
from accounts.webhooks.models import WebhookDelivery
from tests.concurrency import AtOnce, drain_in_threads, run_in_threads
from tests.webhooks.helpers import create_endpoint, delivery_of, record

pytestmark = pytest.mark.django_db(transaction=True)


# How long A's hanging sends hold a thread (the send timeout): B's webhook waiting that long waited behind one.
# Not shorter: on a busy machine deferring A's other sends alone took close to half a second.
HANG = 2.0


def hang(received):
    time.sleep(HANG + 1)  # past the attempt's deadline (LAYERS_WEBHOOK_TIMEOUT, set to HANG below)
    return 200, {}


def serve(broker: "queue.Queue[str]", threads: int, watch: str) -> dict:
    """Run the queued sends on `threads` threads, each with its own connection, as the worker would;
    returns when `watch` was done (seconds from the start)."""
    times = [at for delivery_id, at in drain_in_threads(broker, threads, tasks.webhook_deliver) if delivery_id == watch]
    return {"watched": times[-1]} if times else {}


def sent_into_a_cool_off(owner, endpoint, monkeypatch) -> tuple[list[str], list[str], object]:
    """FAILURES_BEFORE_COOL_OFF + 3 deliveries to an endpoint that does not answer, sent one after another:
    the first ones are tried (retry), then the endpoint is cooling off and the rest are deferred — not an
    attempt, no number used, their 3-day window not started. Returns the deliveries, what was queued, and
    when they were sent."""
    queued: list[str] = []
    monkeypatch.setattr(tasks.webhook_deliver, "delay", queued.append)
    deliveries = [delivery_of(record(owner), endpoint).pk for _ in range(services.FAILURES_BEFORE_COOL_OFF + 3)]
    outcomes = [services.delivery_deliver(delivery_id=pk) for pk in deliveries]
    trips = services.FAILURES_BEFORE_COOL_OFF
    assert outcomes == ["retry"] * trips + ["deferred"] * 3
    now = timezone.now()
    for row in WebhookDelivery.objects.filter(pk__in=deliveries[trips:]):
        assert (row.status, row.attempts, row.give_up_at) == ("pending", 0, None)
        assert row.next_attempt_at >= now + services.COOL_OFF - timedelta(seconds=5)
    return deliveries, queued, now


def tick_and_send(queued: list[str]) -> None:
    """One relay tick, then the sends it queued (the broker is a list here)."""
    queued.clear()
    tasks.webhooks_tick()
    for delivery_id in list(queued):
        tasks.webhook_deliver(delivery_id)


def test_org_b_webhook_is_not_delayed_by_org_a_hanging_endpoint(owner, sibling, receivers, monkeypatch, settings):
    settings.LAYERS_WEBHOOK_TIMEOUT = HANG  # production: 15 s
    a_receiver, b_receiver = receivers(respond=hang), receivers()
    a_endpoint = create_endpoint(owner, a_receiver.url())
    b_endpoint = create_endpoint(sibling, b_receiver.url())
    broker: queue.Queue[str] = queue.Queue()  # the webhooks queue, FIFO
    monkeypatch.setattr(tasks.webhook_deliver, "delay", broker.put)
    a_deliveries = [delivery_of(record(owner), a_endpoint) for _ in range(12)]  # e.g. 12 posts published
    b_delivery = delivery_of(record(sibling), b_endpoint)  # B: one event, a moment later

    done = serve(broker, threads=4, watch=b_delivery.pk)

    b_delivery.refresh_from_db()
    assert b_delivery.status == "delivered"
    assert done["watched"] < HANG, f"B's webhook waited {done['watched']:.1f} s behind A's hanging endpoint"
    # A's endpoint got at most ENDPOINT_IN_FLIGHT attempts at once: a send of A's first delivery was queued,
    # and no other while it waited (_sends_to_start); the others were not attempted: still pending and due (the
    # relay tick's, since A's send got no answer), no attempt counted, no retry window started.
    assert len(a_receiver.requests) == 1 <= services.ENDPOINT_IN_FLIGHT
    rows = WebhookDelivery.objects.filter(pk__in=[d.pk for d in a_deliveries])
    tried = [d for d in rows if d.attempts]
    waiting = [d for d in rows if not d.attempts]
    assert len(tried) == 1 and all(d.status == "pending" and "timeout" in d.last_error for d in tried)
    assert len(waiting) == 11
    now = timezone.now()
    for d in waiting:
        assert (d.status, d.give_up_at, d.first_attempt_at, d.queued_at) == ("pending", None, None, None)
        assert d.next_attempt_at < now
        assert not d.attempt_log.exists()


def test_an_organization_has_at_most_twenty_live_endpoints(owner, sibling, receivers):
    target = receivers()
    made = [create_endpoint(owner, target.url() + f"/{i}") for i in range(services.MAX_ENDPOINTS_PER_ORGANIZATION)]

    refused = owner.client.post(
        "/v1/webhook-endpoints", {"url": target.url() + "/21", "events": ["social_account.connected"]}, format="json"
    )

    assert services.MAX_ENDPOINTS_PER_ORGANIZATION == 20
    assert refused.status_code == 422, refused.content
    error = refused.json()["error"]
    assert error["code"] == "VALIDATION"
    assert "20" in error["message"] and "delete" in error["message"].lower()
    # Another organization is not affected; a deleted endpoint frees its place.
    create_endpoint(sibling, target.url() + "/b")
    assert owner.client.delete(f"/v1/webhook-endpoints/{made[0]['id']}").status_code == 200
    create_endpoint(owner, target.url() + "/again")


def test_concurrent_creations_never_pass_the_endpoint_cap(owner, receivers):
    target = receivers()
    for i in range(services.MAX_ENDPOINTS_PER_ORGANIZATION - 2):
        create_endpoint(owner, target.url() + f"/{i}")
    org = owner.org

    def create(i):
        def run():
            try:
                services.endpoint_create(
                    organization=org, url=target.url() + f"/race{i}", events=["scheduled_post.published"]
                )
                return "created"
            except Exception as exc:  # noqa: BLE001 - the refusal is what is counted
                return type(exc).__name__

        return run

    results = run_in_threads(*[create(i) for i in range(6)])

    assert sorted(results) == ["Validation"] * 4 + ["created"] * 2
    assert org.webhook_endpoints.filter(deleted_at__isnull=True).count() == 20


def test_one_event_of_org_a_fans_out_to_at_most_twenty_sends_ahead_of_org_b(owner, sibling, receivers, monkeypatch):
    a_receiver, b_receiver = receivers(), receivers()
    for i in range(services.MAX_ENDPOINTS_PER_ORGANIZATION):
        create_endpoint(owner, a_receiver.url() + f"/{i}")
    b_endpoint = create_endpoint(sibling, b_receiver.url())
    queued: list[str] = []
    monkeypatch.setattr(tasks.webhook_deliver, "delay", queued.append)

    record(owner)  # ONE event of A (e.g. one account connected)
    b_delivery = delivery_of(record(sibling), b_endpoint)

    assert queued.index(b_delivery.pk) <= 20  # was 300 (or any number): no cap on endpoints


def test_org_a_twenty_hanging_endpoints_hold_at_most_two_threads(owner, sibling, receivers, monkeypatch, settings):
    """Twenty endpoints of one organization, all hanging: the per-endpoint cap alone would let them take every
    thread; the organization's cap leaves the others free for B."""
    settings.LAYERS_WEBHOOK_TIMEOUT = HANG
    a_receiver, b_receiver = receivers(respond=hang), receivers()
    for i in range(services.MAX_ENDPOINTS_PER_ORGANIZATION):
        create_endpoint(owner, a_receiver.url() + f"/{i}")
    b_endpoint = create_endpoint(sibling, b_receiver.url())
    broker: queue.Queue[str] = queue.Queue()
    monkeypatch.setattr(tasks.webhook_deliver, "delay", broker.put)
    record(owner)
    record(owner)  # 40 sends of A queued first
    b_delivery = delivery_of(record(sibling), b_endpoint)

    done = serve(broker, threads=4, watch=b_delivery.pk)

    b_delivery.refresh_from_db()
    assert b_delivery.status == "delivered"
    assert done["watched"] < HANG, f"B's webhook waited {done['watched']:.1f} s behind A's endpoints"
    assert len(a_receiver.requests) <= settings.LAYERS_WEBHOOK_ORG_IN_FLIGHT == 2
    a_rows = WebhookDelivery.objects.filter(endpoint__organization_id=owner.org.id)
    assert a_rows.count() == 40 and set(a_rows.values_list("status", flat=True)) == {"pending"}


def test_concurrent_sends_to_one_endpoint_are_at_most_two(owner, receivers, monkeypatch, settings):
    settings.LAYERS_WEBHOOK_TIMEOUT = 5
    calls = AtOnce()

    def slow(received):
        with calls.counted():
            time.sleep(0.5)
        return 200, {}

    target = receivers(respond=slow)
    endpoint = create_endpoint(owner, target.url())
    queued: list[str] = []
    monkeypatch.setattr(tasks.webhook_deliver, "delay", queued.append)  # nobody takes them yet
    deliveries = [delivery_of(record(owner), endpoint).pk for _ in range(6)]

    outcomes = run_in_threads(*[lambda pk=pk: services.delivery_deliver(delivery_id=pk) for pk in deliveries])

    assert calls.most == 2 and len(target.requests) == 2
    assert sorted(outcomes) == ["deferred"] * 4 + ["delivered"] * 2
    rows = WebhookDelivery.objects.filter(pk__in=deliveries)
    assert sorted(rows.values_list("status", "attempts")) == [("delivered", 1)] * 2 + [("pending", 0)] * 4
    # Deferred, never lost: each answered send queued the next waiting ones (no relay tick needed); the
    # queue also holds the fan-out's own sends, now no-ops.
    while queued:
        tasks.webhook_deliver(queued.pop(0))
    assert sorted(rows.values_list("status", "attempts")) == [("delivered", 1)] * 6


def test_an_endpoint_that_keeps_timing_out_is_left_alone_for_a_cool_off(owner, receivers, monkeypatch, settings):
    settings.LAYERS_WEBHOOK_TIMEOUT = 0.2
    answer = {"hang": True}

    def respond(received):
        if answer["hang"]:
            time.sleep(0.6)
        return 200, {}

    target = receivers(respond=respond)
    deliveries, queued, now = sent_into_a_cool_off(owner, create_endpoint(owner, target.url()), monkeypatch)
    trips = services.FAILURES_BEFORE_COOL_OFF
    assert len(target.requests) == trips  # the cool-off's deliveries were not sent

    # After the cool-off, the endpoint answers again: the deferred deliveries go out and the streak ends.
    answer["hang"] = False
    with time_machine.travel(now + services.COOL_OFF + timedelta(seconds=30)):
        tick_and_send(queued)
    rows = {d.pk: d for d in WebhookDelivery.objects.filter(pk__in=deliveries[trips:])}
    assert {(d.status, d.attempts) for d in rows.values()} == {("delivered", 1)}


def test_an_endpoint_whose_dns_keeps_timing_out_is_left_alone_for_a_cool_off(owner, monkeypatch, settings):
    # The partner's own name server stops answering: each attempt's lookup waits for the resolver's timeout
    # (5-10 s in production) before EAI_AGAIN. That holds a thread as a hanging receiver does, so it counts
    # toward the cool-off the same way; the delivery itself is retried on its schedule, as any refusal.
    settings.LAYERS_WEBHOOK_ALLOW_PRIVATE = False
    settings.LAYERS_WEBHOOK_TIMEOUT = 0.2
    host = "slow-dns.partner.test"
    real = socket.getaddrinfo
    dns = {"slow": False}

    def getaddrinfo(name, port, *args, **kwargs):
        if name != host:
            return real(name, port, *args, **kwargs)
        if dns["slow"]:
            time.sleep(0.3)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    endpoint = create_endpoint(owner, f"https://{host}/hook")
    dns["slow"] = True
    deliveries, _, now = sent_into_a_cool_off(owner, endpoint, monkeypatch)

    rows = {d.pk: d for d in WebhookDelivery.objects.filter(pk__in=deliveries)}
    for pk in deliveries[: services.FAILURES_BEFORE_COOL_OFF]:
        assert (rows[pk].status, rows[pk].attempts) == ("pending", 1)
        assert rows[pk].last_error.startswith("refused:") and rows[pk].next_attempt_at > now


def test_a_delivery_deferred_past_its_window_still_gets_its_last_attempt(owner, receivers, monkeypatch, settings):
    """The window closes 3 days after the first attempt; a delivery whose last attempt falls in a cool-off is
    deferred, and that last attempt is still made after it (never failed unattempted)."""
    settings.LAYERS_WEBHOOK_TIMEOUT = 0.2
    target = receivers(respond=lambda r: (500, {}))
    endpoint = create_endpoint(owner, target.url())
    monkeypatch.setattr(tasks.webhook_deliver, "delay", lambda *args: None)
    delivery = delivery_of(record(owner), endpoint)
    assert services.delivery_deliver(delivery_id=delivery.pk) == "retry"
    delivery.refresh_from_db()
    closes = delivery.give_up_at
    # The endpoint is in a cool-off when the last attempt is due (other deliveries timed out meanwhile).
    from accounts.callgate import CallGate

    CallGate.objects.filter(key=services.endpoint_gate_key(endpoint["id"])).update(
        failures=services.FAILURES_BEFORE_COOL_OFF, down_until=closes + timedelta(minutes=1)
    )
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=closes)
    with time_machine.travel(closes + timedelta(seconds=1)):
        assert services.delivery_deliver(delivery_id=delivery.pk) == "deferred"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("pending", 1)
    with time_machine.travel(closes + timedelta(minutes=2)):
        assert services.delivery_deliver(delivery_id=delivery.pk) == "failed"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, len(target.requests)) == ("failed", 2, 2)


def test_a_burst_to_a_fast_healthy_endpoint_goes_out_at_its_pace_not_the_relay_ticks(owner, receivers, monkeypatch):
    """Only two sends of an organization are in flight at once: the rest of a burst were deferred and went
    out two per relay tick (every 15 s), so 40 events a healthy receiver answers in 50 ms took minutes (500:
    half an hour). Each finished send now starts the organization's next waiting one."""

    def fast(received):
        time.sleep(0.05)
        return 200, {}

    endpoint = create_endpoint(owner, receivers(respond=fast).url())
    broker: queue.Queue[str] = queue.Queue()  # the webhooks queue
    monkeypatch.setattr(tasks.webhook_deliver, "delay", broker.put)
    for n in range(40):  # a campaign of 40 posts published together
        record(owner, n=n)

    serve(broker, threads=4, watch="-")  # the on-commit sends on the worker's 4 threads: no relay tick

    assert WebhookDelivery.objects.filter(endpoint_id=endpoint["id"]).count() == 40
    assert WebhookDelivery.objects.filter(status="delivered").count() == 40
    # each sent once: no send was counted for the deferrals
    assert WebhookDelivery.objects.filter(attempts=1).count() == 40


def test_a_burst_of_one_organizations_events_queues_no_pile_of_sends_ahead_of_anothers(
    owner, sibling, receivers, monkeypatch
):
    """Each event's fan-out queued a send of every one of its deliveries, whatever the organization had in flight
    or waiting: a campaign of 5,000 posts to 20 endpoints put 100,000 sends on the FIFO webhooks queue, all but
    a few deferred when they started (each a transaction on the organization's gate row, one at a time: about
    5 minutes of them), and every other organization's webhooks waited behind them. A fan-out now queues sends
    only while its organization has none queued and not started, and no more than its gates can take; the rest
    go out as its sends are answered (or at the relay tick)."""
    a_receiver, b_receiver = receivers(), receivers()
    for i in range(services.MAX_ENDPOINTS_PER_ORGANIZATION):
        create_endpoint(owner, a_receiver.url() + f"/{i}")
    b_endpoint = create_endpoint(sibling, b_receiver.url())
    broker: queue.Queue[str] = queue.Queue()  # the webhooks queue, FIFO
    monkeypatch.setattr(tasks.webhook_deliver, "delay", broker.put)

    for n in range(10):  # 10 of A's posts published together: 200 deliveries
        record(owner, n=n)
    b_delivery = delivery_of(record(sibling), b_endpoint)

    queued = list(broker.queue)
    assert queued.index(b_delivery.pk) <= services.ENDPOINT_IN_FLIGHT, len(queued)  # was 200

    serve(broker, threads=4, watch=b_delivery.pk)  # no relay tick: A's answered sends start the next ones

    assert WebhookDelivery.objects.filter(status="delivered").count() == 201
    assert WebhookDelivery.objects.filter(attempts=1).count() == 201  # each sent once
