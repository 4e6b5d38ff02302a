"""A post whose run raises (or whose worker dies) before anything went out is queued again by the resolver;
each claim is an attempt, so an error that repeats fails the post after MAX_LOST_RUNS instead of sending it
round (to a managed provider, each time) forever."""

import pytest
import time_machine
from django.db import DataError

from scheduling import services
from tests.accounts.oauth_helpers import connected_account
from tests.platform_helpers import inject_fault
from tests.receivers import receiver
from tests.scheduling.publish_helpers import later, managed_provider, post, run_dispatcher, sandbox_posts, schedule_now

pytestmark = pytest.mark.django_db(transaction=True)


def ticks_for_an_hour():
    for minutes in range(5, 65, 5):
        with time_machine.travel(later(minutes=minutes)):
            run_dispatcher()


def test_a_managed_dispatch_that_raises_every_time_fails_once_its_attempts_are_spent(owner, monkeypatch):
    # Whatever makes settling the provider's answer raise (a database error, a bug).
    def broken(*args, **kwargs):
        raise DataError("value too long for type character varying(128)")

    monkeypatch.setattr(services, "_published", broken)
    account = connected_account(owner, "tiktok", "managed.raises")
    with receiver(lambda r: (200, {"id": "mp-3"}, {})) as (url, received):
        managed_provider(project=owner.project, name="Boost", endpoint_url=url)
        scheduled = schedule_now(owner, account["id"], mode="managed")
        run_dispatcher()
        ticks_for_an_hour()
    body = post(owner, scheduled["id"])
    assert body["status"] == "failed" and body["error"]["code"] == "PLATFORM_UNAVAILABLE", body
    assert len(received) == services.MAX_LOST_RUNS == body["attempts"]


def test_a_publish_that_raises_before_the_platform_call_fails_once_its_attempts_are_spent(owner, monkeypatch):
    def broken(*, account):
        raise RuntimeError("a bug before the platform call")

    monkeypatch.setattr(services, "social_account_with_fresh_token", broken)
    account = connected_account(owner, "tiktok", "publish.raises")
    scheduled = schedule_now(owner, account["id"])
    run_dispatcher()
    ticks_for_an_hour()
    body = post(owner, scheduled["id"])
    assert (body["status"], body["error"]["code"], body["attempts"]) == ("failed", "PLATFORM_UNAVAILABLE", 5), body
    assert sandbox_posts("tiktok", "publish.raises") == []


def test_four_rate_limits_then_one_lost_run_do_not_fail_a_post_the_platform_would_take(owner):
    """`attempts` also counts the platform's own "not now": a post TikTok rate-limited four times, whose fifth
    run is lost (its worker killed in a deploy before it started), is queued again and published (it used to
    fail as its fifth attempt)."""
    account = connected_account(owner, "tiktok", "throttled.then.lost")
    inject_fault("tiktok", "throttled.then.lost", "rate_limited", count=4)
    scheduled = schedule_now(owner, account["id"])
    minutes = 0
    for attempt in range(1, 5):
        with time_machine.travel(later(minutes=minutes)):
            run_dispatcher()
        body = post(owner, scheduled["id"])
        assert (body["status"], body["attempts"]) == ("queued", attempt), body
        minutes += 5  # past each backoff (30 s doubling), within the post's retry window
    # The fifth claim is taken, and its worker killed before it starts.
    with time_machine.travel(later(minutes=minutes)):
        assert services.posts_claim_due() == [scheduled["id"]]
    for extra in (6, 12, 18):  # the resolver takes the post back once the claim has expired
        with time_machine.travel(later(minutes=minutes + extra)):
            run_dispatcher()
    body = post(owner, scheduled["id"])
    assert body["status"] == "published", (body["status"], body["attempts"], body["error"])
    assert len(sandbox_posts("tiktok", "throttled.then.lost")) == 1


def lose_runs(post_id: str, count: int, minutes: int) -> int:
    """`count` runs of the post claimed and lost before they start (their workers killed in a deploy), each
    queued again by the resolver once its claim has expired. Returns the minutes of the clock used."""
    for _ in range(count):
        with time_machine.travel(later(minutes=minutes)):
            assert services.posts_claim_due() == [post_id]
        minutes += 6
        with time_machine.travel(later(minutes=minutes)):
            [resolving] = services.posts_claim_for_resolution()
            assert services.post_resolve(post_id=resolving) == "requeued"
    return minutes


def test_runs_lost_before_the_platform_call_do_not_use_up_the_platforms_retries(owner):
    """Two runs lost in deploys, then TikTok rate-limits three times: the post is still retried, and publishes
    at the fourth try on the platform (it failed RATE_LIMITED "after 5 attempts" after two refusals, when a
    count of attempts bounded the retries)."""
    account = connected_account(owner, "tiktok", "died.twice")
    scheduled = schedule_now(owner, account["id"])
    minutes = lose_runs(scheduled["id"], 2, minutes=0)
    inject_fault("tiktok", "died.twice", "rate_limited", count=3)
    for _ in range(6):
        with time_machine.travel(later(minutes=minutes)):
            run_dispatcher()
        body = post(owner, scheduled["id"])
        if body["status"] != "queued":
            break
        minutes += 20

    assert body["status"] == "published", body
    assert body["attempts"] == 6  # every run is shown: two lost, three refused, the one that published
    assert len(sandbox_posts("tiktok", "died.twice")) == 1


def test_a_post_retried_by_ops_after_its_runs_kept_stopping_gets_its_five_runs_again(owner):
    account = connected_account(owner, "tiktok", "lost.then.retried")
    scheduled = schedule_now(owner, account["id"])
    minutes = lose_runs(scheduled["id"], services.MAX_LOST_RUNS - 1, minutes=0)
    with time_machine.travel(later(minutes=minutes)):
        assert services.posts_claim_due() == [scheduled["id"]]
    with time_machine.travel(later(minutes=minutes + 6)):
        [resolving] = services.posts_claim_for_resolution()
        assert services.post_resolve(post_id=resolving) == "failed"
    assert post(owner, scheduled["id"])["error"]["code"] == "PLATFORM_UNAVAILABLE"

    with time_machine.travel(later(minutes=minutes + 10)):
        services.post_retry(post_id=scheduled["id"])  # the admin action "retry_posts"
    minutes = lose_runs(scheduled["id"], 1, minutes=minutes + 10)
    with time_machine.travel(later(minutes=minutes)):
        run_dispatcher()

    body = post(owner, scheduled["id"])
    assert body["status"] == "published", body
    assert len(sandbox_posts("tiktok", "lost.then.retried")) == 1
