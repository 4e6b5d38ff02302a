"""One partner's managed-distribution provider hanging must not hold the publishing threads every partner
shares: at most a few calls in flight per provider (the other posts deferred: queued again a few seconds
later, no attempt counted), and a provider that keeps timing out is left alone for a short cool-off. Real
PostgreSQL connections in threads stand in for the worker's threads."""

import queue
import threading
import time
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from accounts.callgate import CallGate
from scheduling import services, tasks
from scheduling.models import ScheduledPost
from tests.accounts.oauth_helpers import connected_account
from tests.concurrency import AtOnce, drain_in_threads, run_in_threads
from tests.receivers import receiver
from tests.scheduling.publish_helpers import managed_provider, post, run_dispatcher, schedule_now

pytestmark = pytest.mark.django_db(transaction=True)


def serve(broker: "queue.Queue[list[str]]", threads: int) -> dict[str, float]:
    """Run the queued publish messages on `threads` threads, each with its own connection; returns when
    each post was done (seconds from the start)."""
    return {post_id: at for ids, at in drain_in_threads(broker, threads, tasks.publish_posts) for post_id in ids}


def test_org_b_post_is_not_held_up_by_org_a_hanging_managed_provider(owner, sibling, monkeypatch, settings):
    settings.LAYERS_PLATFORM_TIMEOUT = 0.5  # whole answer deadline: 2 x 0.5 s (production: 2 x 20 s)

    def hang(request):
        time.sleep(3)  # A's provider answers after our deadline (or never)
        return 200, {"id": "late"}, {}

    a_account = connected_account(owner, "tiktok", "noisy.a")
    b_account = connected_account(sibling, "tiktok", "quiet.b")
    with receiver(hang) as (url, received):
        managed_provider(project=owner.project, name="A's provider", endpoint_url=url)
        a_ids = [schedule_now(owner, a_account["id"], mode="managed", caption=f"a{i}")["id"] for i in range(12)]
        b_id = schedule_now(sibling, b_account["id"], caption="b")["id"]
        broker: queue.Queue[list[str]] = queue.Queue()
        monkeypatch.setattr(tasks.publish_posts, "delay", broker.put)
        tasks.dispatch_due_posts()

        done = serve(broker, threads=4)
        calls = len(received)

    assert ScheduledPost.objects.get(pk=b_id).status == "published"
    assert done[b_id] < 1.0, f"B's post went out {done[b_id]:.1f} s late, behind A's hanging provider calls"
    # A's provider had at most PROVIDER_IN_FLIGHT calls; the other posts were deferred, not attempted.
    assert calls == services.MANAGED_PROVIDER_IN_FLIGHT == 2
    rows = ScheduledPost.objects.filter(pk__in=a_ids)
    tried = [p for p in rows if p.attempts]
    deferred = [p for p in rows if not p.attempts]
    assert len(tried) == 2 and {(p.status, p.error_code) for p in tried} == {("queued", "PLATFORM_UNAVAILABLE")}
    assert len(deferred) == 10
    now = timezone.now()
    for p in deferred:
        assert (p.status, p.requeues, p.error_code, p.publish_attempted_at) == ("queued", 0, "", None)
        assert now < p.due_at < now + timedelta(seconds=30)


def test_deferred_managed_posts_are_each_sent_once_when_the_provider_has_room(owner):
    calls = AtOnce()

    def slow(request):
        with calls.counted():
            time.sleep(0.4)
        return 200, {"id": "mp-1"}, {}

    account = connected_account(owner, "tiktok", "managed.busy")
    with receiver(slow) as (url, received):
        managed_provider(project=owner.project, name="Boost", endpoint_url=url)
        ids = [schedule_now(owner, account["id"], mode="managed", caption=f"p{i}")["id"] for i in range(6)]
        claimed = services.posts_claim_due()
        assert sorted(claimed) == sorted(ids)

        outcomes = run_in_threads(*[lambda pk=pk: services.post_publish(post_id=pk) for pk in ids])

        assert calls.most == 2 and sorted(outcomes) == ["deferred"] * 4 + ["published"] * 2
        # Deferred posts come back within seconds, and each reaches the provider exactly once.
        for seconds in (10, 20, 30):
            with time_machine.travel(timezone.now() + timedelta(seconds=seconds)):
                run_dispatcher()
        bodies = [post(owner, pk) for pk in ids]
        keys = sorted(r["headers"]["Idempotency-Key"] for r in received)
    assert {(b["status"], b["attempts"]) for b in bodies} == {("published", 1)}
    assert keys == sorted(ids)


def test_a_duplicate_run_of_a_managed_post_never_calls_the_provider_a_second_time(owner):
    """Two runs of one claim (a redelivered message) race; the one that finds the provider busy with this very
    post neither calls it again nor requeues the post under the run that is calling."""
    entered, release = threading.Event(), threading.Event()

    def held(request):
        entered.set()
        release.wait(10)
        return 200, {"id": "mp-1"}, {}

    account = connected_account(owner, "tiktok", "managed.dup")
    with receiver(held) as (url, received):
        managed_provider(project=owner.project, name="Boost", endpoint_url=url)
        post_id = schedule_now(owner, account["id"], mode="managed")["id"]
        services.posts_claim_due()
        results = {}

        def first():
            results["first"] = services.post_publish(post_id=post_id)

        def second():
            assert entered.wait(10)
            results["second"] = services.post_publish(post_id=post_id)
            release.set()

        run_in_threads(first, second)
        body = post(owner, post_id)
    assert (results["first"], results["second"]) == ("published", "skipped")
    assert len(received) == 1
    assert (body["status"], body["attempts"]) == ("published", 1)


def test_a_provider_that_keeps_timing_out_is_left_alone_for_a_cool_off(owner, settings):
    settings.LAYERS_PLATFORM_TIMEOUT = 0.1
    answer = {"hang": True}

    def respond(request):
        if answer["hang"]:
            time.sleep(0.5)
        return 200, {"id": "mp"}, {}

    account = connected_account(owner, "tiktok", "managed.down")
    trips = services.FAILURES_BEFORE_COOL_OFF
    with receiver(respond) as (url, received):
        provider = managed_provider(project=owner.project, name="Boost", endpoint_url=url)
        ids = [schedule_now(owner, account["id"], mode="managed", caption=f"p{i}")["id"] for i in range(trips + 3)]
        services.posts_claim_due()
        outcomes = [services.post_publish(post_id=pk) for pk in ids]

        assert outcomes == ["retrying"] * trips + ["deferred"] * 3
        assert len(received) == trips
        gate = CallGate.objects.get(key=services.managed_gate_key(provider.pk))
        assert gate.down_until is not None
        for pk in ids[trips:]:
            row = ScheduledPost.objects.get(pk=pk)
            # Not an attempt: `attempts` shows only the tries that reached the provider (or died on the way).
            assert (row.status, row.attempts, row.requeues) == ("queued", 0, 0)
            assert row.due_at >= gate.down_until

        # The provider answers again after the cool-off: the deferred posts go out, each once.
        answer["hang"] = False
        with time_machine.travel(gate.down_until + timedelta(seconds=15)):
            run_dispatcher()
        bodies = [post(owner, pk) for pk in ids[trips:]]
    assert {(b["status"], b["attempts"]) for b in bodies} == {("published", 1)}


def test_a_worker_killed_mid_call_to_the_provider_costs_one_requeue_not_two(owner):
    """The dead run's provider slot stays held until its lease ends (nobody gave it back). The post's claim
    ran out earlier (it waited a minute for a worker); the resolver requeued it, and the new claim found
    "its" slot held — taken for a duplicate run — and skipped, leaving the post publishing for a second
    lease and a second requeue. A slot belongs to a claim, not to the post."""

    account = connected_account(owner, "tiktok", "managed.dies")
    with receiver(lambda request: (200, {"id": "mp-1"}, {})) as (url, received):
        provider = managed_provider(project=owner.project, name="Boost", endpoint_url=url)
        post_id = schedule_now(owner, account["id"], mode="managed")["id"]
        t0 = timezone.now()
        with time_machine.travel(t0, tick=False):
            assert services.posts_claim_due() == [post_id]
        # a minute later a worker takes it, enters the provider's gate, and is killed mid-call (no leave)
        with time_machine.travel(t0 + timedelta(seconds=60), tick=False):
            claimed = services._publishing_posts([post_id])[post_id]
            limits = services.managed_limits(provider.pk)
            assert services._managed_enter(claimed, limits, services._gate_holder(claimed)) is None
        with time_machine.travel(t0 + services.CLAIM_LEASE + timedelta(seconds=5), tick=False):
            run_dispatcher()  # the resolver requeues the dead run's post
        with time_machine.travel(t0 + services.CLAIM_LEASE + timedelta(seconds=10), tick=False):
            run_dispatcher()  # claimed again: published now

        row = ScheduledPost.objects.get(pk=post_id)
        assert (row.status, row.requeues, len(received)) == ("published", 1, 1)
