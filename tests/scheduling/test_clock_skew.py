"""A worker or web host whose clock is off from the database's (NTP stopped, a VM resumed from a pause) decides
nothing about posts: publishing compares each process's own clock with times other hosts wrote (due_at, a
claim's lease, a publishing worker's mark), so a worker 90 s ahead published posts 90 s early, and one 5 minutes
ahead (or a publishing worker 5 minutes behind) failed a post another worker was publishing while it went live.

The test settings turn the guard off (the suite moves Python's clock with time_machine to model time passing);
these tests turn it on and use time_machine to put one "process" off. Each process measures its offset once per
LAYERS_CLOCK_CHECK_SECONDS and keeps it: switching process here forgets the measurement (clock.forget)."""

import logging
import socket
import time
from contextlib import contextmanager
from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from accounts.models import Event
from accounts.platforms.tiktok import TikTokClient
from config import clock
from scheduling import services
from scheduling.models import ScheduledPost
from tests.accounts.oauth_helpers import connected_account
from tests.scheduling.publish_helpers import post, run_dispatcher, sandbox_posts, schedule_now

pytestmark = pytest.mark.django_db(transaction=True)

LIMIT = 5  # seconds: the default of LAYERS_MAX_CLOCK_SKEW_SECONDS


@pytest.fixture(autouse=True)
def guard_on(settings):
    settings.LAYERS_MAX_CLOCK_SKEW_SECONDS = LIMIT
    clock.forget()
    yield
    clock.forget()


@contextmanager
def a_process_whose_clock_is_off_by(offset: timedelta):
    """What runs inside is another process, its clock `offset` from the database's (negative: behind)."""
    clock.forget()
    try:
        with time_machine.travel(timezone.now() + offset):
            yield
    finally:
        clock.forget()


@contextmanager
def a_healthy_process():
    clock.forget()
    try:
        yield
    finally:
        clock.forget()


def errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_tick_on_a_worker_90_s_ahead_publishes_nothing_early_and_a_healthy_tick_publishes_on_time(owner):
    account = connected_account(owner, "tiktok", "skew.ahead")
    scheduled_for = timezone.now() + timedelta(seconds=2)
    scheduled = schedule_now(owner, account["id"], when=scheduled_for)
    with a_process_whose_clock_is_off_by(timedelta(seconds=90)):
        assert run_dispatcher() == 0  # its clock says the post is due: it went live 88 s early
    assert sandbox_posts("tiktok", "skew.ahead") == []
    assert post(owner, scheduled["id"])["status"] == "queued"
    with a_healthy_process():
        assert run_dispatcher() == 0  # not due yet
        assert sandbox_posts("tiktok", "skew.ahead") == []
        time.sleep(max((scheduled_for - timezone.now()).total_seconds(), 0) + 0.1)
        run_dispatcher()
    body = post(owner, scheduled["id"])
    assert body["status"] == "published" and body["attempts"] == 1, body
    assert parse_datetime(body["publishedAt"]) >= parse_datetime(body["scheduledFor"])
    assert len(sandbox_posts("tiktok", "skew.ahead")) == 1


@pytest.mark.parametrize("by", ["tick", "resolve message"])
def test_a_worker_6_minutes_ahead_does_not_fail_a_post_another_worker_is_publishing(owner, monkeypatch, by):
    """The healthy worker is in TikTok's init (its point of no return marked) when the skewed worker runs: its
    clock put the healthy worker's lease 6 minutes in the past, and it failed the post PLATFORM_UNAVAILABLE
    ("The worker stopped while the platform was being called") as it went live on TikTok."""
    account = connected_account(owner, "tiktok", "skew.takeover")
    scheduled = schedule_now(owner, account["id"])
    (post_id,) = services.posts_claim_due()
    original = TikTokClient.publish

    def publish(self, *, before_create, **kwargs):
        def mark_then_the_skewed_worker_runs():
            before_create()
            with a_process_whose_clock_is_off_by(timedelta(minutes=6)):
                if by == "tick":
                    run_dispatcher()
                else:  # the resolve message a healthy tick sent, taken by the skewed worker
                    services.post_resolve(post_id=post_id)

        return original(self, before_create=mark_then_the_skewed_worker_runs, **kwargs)

    monkeypatch.setattr(TikTokClient, "publish", publish)
    assert services.post_publish(post_id=post_id) == "published"
    monkeypatch.setattr(TikTokClient, "publish", original)
    body = post(owner, scheduled["id"])
    assert body["status"] == "published" and body["error"] is None, body
    assert not Event.objects.filter(type="scheduled_post.failed").exists()
    assert len(sandbox_posts("tiktok", "skew.takeover")) == 1


def test_a_publishing_worker_6_minutes_behind_gives_the_post_back_and_a_healthy_worker_publishes_it_once(
    owner, monkeypatch, caplog
):
    """Its point of no return, written with its clock, looked 6 minutes old to a healthy tick: once the claim's
    lease had run out (the message waited in the broker), that tick failed the post while TikTok had it."""
    account = connected_account(owner, "tiktok", "skew.behind")
    scheduled = schedule_now(owner, account["id"])
    (post_id,) = services.posts_claim_due()
    # The message waited in the broker until the claim's lease ran out: the post is due for the resolver.
    lease_over = timezone.now() - timedelta(seconds=1)
    ScheduledPost.objects.filter(pk=post_id).update(claimed_until=lease_over, next_check_at=lease_over)
    original = TikTokClient.publish

    def publish(self, *, before_create, **kwargs):
        def mark_then_a_healthy_tick_runs():
            before_create()
            with time_machine.travel(timezone.now() + timedelta(minutes=6)), a_healthy_process():
                run_dispatcher()

        return original(self, before_create=mark_then_a_healthy_tick_runs, **kwargs)

    monkeypatch.setattr(TikTokClient, "publish", publish)
    with caplog.at_level(logging.INFO), a_process_whose_clock_is_off_by(-timedelta(minutes=6)):
        outcome = services.post_publish(post_id=post_id)
    monkeypatch.setattr(TikTokClient, "publish", original)
    assert sandbox_posts("tiktok", "skew.behind") == []  # the platform was not called
    body = post(owner, scheduled["id"])
    assert (outcome, body["status"], body["attempts"]) == ("given back", "queued", 0), (outcome, body)
    (line,) = errors(caplog)
    assert post_id in line and "behind" in line and "LAYERS_MAX_CLOCK_SKEW_SECONDS" in line, line

    with a_healthy_process():
        run_dispatcher()
    body = post(owner, scheduled["id"])
    assert body["status"] == "published" and body["error"] is None and body["attempts"] == 1, body
    assert not Event.objects.filter(type="scheduled_post.failed").exists()
    assert len(sandbox_posts("tiktok", "skew.behind")) == 1
    # Support sees why the claim came back, as no attempt of the post's.
    given_back = ScheduledPost.objects.get(pk=post_id).attempt_log.get(outcome="requeued")
    assert given_back.number is None and given_back.platform is None and "clock" in given_back.message


def test_a_status_check_handed_to_a_skewed_worker_is_given_back_due_at_once(owner, settings):
    settings.LAYERS_SANDBOX_PUBLISH_DELAY_SECONDS = 60  # TikTok is still processing the post
    account = connected_account(owner, "tiktok", "skew.check")
    scheduled = schedule_now(owner, account["id"])
    run_dispatcher()
    assert post(owner, scheduled["id"])["status"] == "publishing"
    ScheduledPost.objects.update(next_check_at=timezone.now())  # its next status check is due
    assert services.posts_claim_for_resolution() == [scheduled["id"]]  # a healthy tick's claim, for 5 minutes
    with a_process_whose_clock_is_off_by(timedelta(minutes=6)):
        assert services.post_resolve(post_id=scheduled["id"]) == "given back"
    # The next healthy tick checks it now, not once the claim's 5 minutes have run out.
    assert services.posts_claim_for_resolution() == [scheduled["id"]]
    assert post(owner, scheduled["id"])["status"] == "publishing"


def test_a_worker_whose_clock_is_off_makes_no_container_ahead_and_the_post_still_goes_out_at_its_time(owner):
    # Its clock would judge whether the post is due yet: it leaves the container to the publisher at the time.
    from accounts.platforms.sandbox.models import Container

    account = connected_account(owner, "instagram", "skew.prepare")
    scheduled = schedule_now(owner, account["id"], when=timezone.now() + timedelta(minutes=10))
    with a_process_whose_clock_is_off_by(-timedelta(minutes=14)):
        assert services.post_prepare(post_id=scheduled["id"]) == "unprepared"
    assert not Container.objects.filter(username="skew.prepare").exists()


def test_a_skewed_tick_logs_one_error_a_minute_naming_the_host_the_offset_and_the_setting(owner, caplog, monkeypatch):
    account = connected_account(owner, "tiktok", "skew.log")
    schedule_now(owner, account["id"])
    with caplog.at_level(logging.INFO), a_process_whose_clock_is_off_by(timedelta(seconds=90)):
        for _ in range(3):
            assert run_dispatcher() == 0
        (line,) = errors(caplog)
        assert socket.gethostname() in line and "LAYERS_MAX_CLOCK_SKEW_SECONDS" in line, line
        assert "90." in line or "89." in line, line  # seconds ahead, as measured
        assert "ahead" in line, line
        soon = time.monotonic() + 61
        monkeypatch.setattr(clock, "monotonic", lambda: soon)
        assert run_dispatcher() == 0
        assert len(errors(caplog)) == 2  # a minute later, again
    assert ScheduledPost.objects.get().status == "queued"


def test_the_offset_is_measured_again_after_the_check_interval_and_not_before(
    db, monkeypatch, django_assert_num_queries
):
    with time_machine.travel(timezone.now() + timedelta(seconds=90)):
        with django_assert_num_queries(1):  # SELECT clock_timestamp()
            assert not clock.clock_trustworthy()
        assert 85 < clock.offset_seconds() < 95
    # The clock is right again (NTP stepped it): the measurement stands until it is due again.
    with django_assert_num_queries(0):
        assert not clock.clock_trustworthy()
    due = time.monotonic() + clock.CHECK_EVERY_SECONDS + 1
    monkeypatch.setattr(clock, "monotonic", lambda: due)
    with django_assert_num_queries(1):
        assert clock.clock_trustworthy()
    assert abs(clock.offset_seconds()) < 1


def test_with_the_guard_off_nothing_is_measured(db, settings, django_assert_num_queries):
    settings.LAYERS_MAX_CLOCK_SKEW_SECONDS = 0
    with time_machine.travel(timezone.now() + timedelta(hours=1)), django_assert_num_queries(0):
        assert clock.clock_trustworthy()


def test_readyz_does_not_take_a_web_host_out_for_its_clock_and_healthz_reads_no_database(
    anon, django_assert_num_queries
):
    # Review: with the clock among the readiness checks, the database server's own clock drifting past the limit
    # made every web process unready at once, the whole API out of the load balancer. Web processes judge times
    # to minutes; the workers refuse to publish (and say so), the API stays up.
    with a_process_whose_clock_is_off_by(timedelta(seconds=90)):
        assert not clock.clock_trustworthy()
        assert anon.get("/readyz").json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}
        with django_assert_num_queries(0):
            assert anon.get("/healthz").status_code == 200


def test_the_refusal_names_the_database_servers_clock_as_the_one_that_may_be_wrong(db):
    with a_process_whose_clock_is_off_by(timedelta(seconds=90)):
        problem = clock.skew_problem()
    assert "ahead of the database's" in problem and "database server's" in problem, problem


def test_sqlite_is_on_the_same_host_and_reads_as_no_offset(db, monkeypatch):
    monkeypatch.setattr(connection, "vendor", "sqlite")
    with time_machine.travel(timezone.now() + timedelta(hours=1)):
        assert clock.offset_seconds() == 0 and clock.clock_trustworthy()


def test_the_guard_is_on_by_default_within_5_seconds_and_0_turns_it_off(monkeypatch):
    from tests.config.settings_env import load_settings

    assert load_settings("dev", monkeypatch).LAYERS_MAX_CLOCK_SKEW_SECONDS == 5
    assert load_settings("dev", monkeypatch, LAYERS_MAX_CLOCK_SKEW_SECONDS="0").LAYERS_MAX_CLOCK_SKEW_SECONDS == 0
    assert load_settings("dev", monkeypatch, LAYERS_MAX_CLOCK_SKEW_SECONDS="299").LAYERS_MAX_CLOCK_SKEW_SECONDS == 299
    # The suite moves Python's clock to model time passing: the guard would read that as a skew.
    assert load_settings("test", monkeypatch).LAYERS_MAX_CLOCK_SKEW_SECONDS == 0
