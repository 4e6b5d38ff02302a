"""The first wait after the platform's "not now" is 30 s (RETRY_BACKOFF_FIRST), as README and the retry window's
docs promise: a platform back within seconds gets the post half a minute later, not a minute. Runs lost before
the platform call (a worker killed in a deploy, queued again by the resolver) are no refusal of the platform's:
they must not lengthen that wait either. The other tests step through minutes at a time and would not see a
wait twice as long."""

import pytest
import time_machine

from tests.accounts.oauth_helpers import connected_account
from tests.platform_helpers import inject_fault
from tests.scheduling.publish_helpers import later, post, run_dispatcher, sandbox_posts, schedule_now
from tests.scheduling.test_requeue_attempts import lose_runs

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_post_the_platform_refused_once_for_now_is_tried_again_30_seconds_later(owner):
    account = connected_account(owner, "tiktok", "backoff.first")
    inject_fault("tiktok", "backoff.first", "rate_limited", count=1)
    scheduled = schedule_now(owner, account["id"])
    run_dispatcher()
    assert (post(owner, scheduled["id"])["status"], post(owner, scheduled["id"])["attempts"]) == ("queued", 1)

    with time_machine.travel(later(seconds=20)):
        run_dispatcher()  # not due yet
    assert post(owner, scheduled["id"])["attempts"] == 1
    with time_machine.travel(later(seconds=31)):
        run_dispatcher()
    body = post(owner, scheduled["id"])
    assert (body["status"], body["attempts"]) == ("published", 2), body
    assert len(sandbox_posts("tiktok", "backoff.first")) == 1


def test_a_lost_run_does_not_lengthen_the_wait_after_the_platforms_first_refusal(owner):
    account = connected_account(owner, "tiktok", "backoff.lost")
    scheduled = schedule_now(owner, account["id"])
    minutes = lose_runs(scheduled["id"], 1, minutes=0)  # claim 1 lost, queued again by the resolver
    inject_fault("tiktok", "backoff.lost", "rate_limited", count=1)
    with time_machine.travel(later(minutes=minutes)):
        run_dispatcher()  # claim 2: the platform's first refusal
    assert post(owner, scheduled["id"])["status"] == "queued"

    with time_machine.travel(later(minutes=minutes, seconds=31)):
        run_dispatcher()
    body = post(owner, scheduled["id"])
    assert (body["status"], body["attempts"]) == ("published", 3), body
    assert len(sandbox_posts("tiktok", "backoff.lost")) == 1


def test_a_post_whose_publish_request_tiktok_refused_for_the_whole_window_can_be_retried_plainly(owner):
    """TikTok answered its own 500 to every publish request (sent past the point of no return, but refused: no
    post exists) until the window ran out. The post fails PLATFORM_UNAVAILABLE with nothing on the platform, so
    support's plain retry queues it again; kept marks made it "may already be on the platform" (a retry anyway
    after checking TikTok by hand)."""
    from datetime import timedelta

    from django.utils import timezone

    from scheduling import services
    from tests.platform_helpers import intercepted, platform_down
    from tests.scheduling.test_retry_window import run_ticks

    account = connected_account(owner, "tiktok", "init.down")
    [refuse] = platform_down("tiktok").values()
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        scheduled = schedule_now(owner, account["id"])
        with intercepted({"/v2/post/publish/video/init/": refuse}):
            run_ticks(clock, start + timedelta(hours=2))
        body = post(owner, scheduled["id"])
        assert (body["status"], body["error"]["code"]) == ("failed", "PLATFORM_UNAVAILABLE"), body
        assert body["error"]["message"].startswith("Gave up after "), body

        assert services.post_retry(post_id=scheduled["id"]).status == "queued"
        run_ticks(clock, start + timedelta(hours=2, minutes=1))
    assert post(owner, scheduled["id"])["status"] == "published"
    assert len(sandbox_posts("tiktok", "init.down")) == 1
