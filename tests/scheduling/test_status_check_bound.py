"""The dispatcher's status checks, when workers fall behind (a platform answering slowly): every tick claimed
up to 500 posts whose check was due and queued a resolve message for each, whatever already waited in the
broker. A claim lasts CLAIM_LEASE; a message waiting longer saw its post claimed again and a second message
queued, and so on: the backlog grew without end, every stale duplicate still asked the platform (TikTok allows 30
status calls a minute per token), and posts due now waited to be published behind thousands of checks on the
same queue. The checks handed out and not finished are now bounded as the publishes waiting are
(LAYERS_DISPATCH_MAX_WAITING), and a resolve message carries its claim: a stale one asks the platform nothing."""

from datetime import timedelta
from unittest import mock

import pytest
import time_machine
from django.utils import timezone

from accounts.models import Event
from accounts.platforms.base import PublishStatus
from accounts.platforms.tiktok import TikTokClient
from scheduling import services
from scheduling.models import ScheduledPost
from scheduling.tasks import dispatch_due_posts, resolve_post
from tests.accounts.oauth_helpers import connected_account
from tests.factories import make_account
from tests.platform_helpers import held_tasks, intercepted
from tests.scheduling.publish_helpers import a_burst, post, run_dispatcher, schedule_now, sent_awaiting_check

pytestmark = pytest.mark.django_db

BOUND = 20


def checks_queued(held: list[tuple]) -> list[str]:
    """The post ids of the resolve messages held so far, in the order they were queued."""
    return [args[0] for task, args in held if task.name == resolve_post.name]


def test_checks_in_flight_never_exceed_the_bound_however_long_the_workers_take(owner, settings):
    """50 posts awaiting their status check and no worker taking any message for 11 minutes (more than two
    claim leases). Before: the first tick queued all 50, and each lease that ran out queued all 50 again. Now at
    most BOUND are handed out in any CLAIM_LEASE, a post is never queued again while its earlier claim lasts,
    and the posts not handed out yet come first once the earlier claims run out: all of them get their turn."""
    settings.LAYERS_DISPATCH_MAX_WAITING = BOUND
    start = timezone.now() - timedelta(minutes=1)
    every = {p.pk for p in sent_awaiting_check(a_burst(owner, make_account(owner).pk, start=start, count=49))}
    queued_at: list[tuple] = []  # (when, post id), as the ticks queued them

    with held_tasks() as held:
        for step in range(34):  # a tick every 20 s for 11 minutes
            when = start + timedelta(minutes=1, seconds=20 * step)
            with time_machine.travel(when, tick=False):
                seen = len(checks_queued(held))
                dispatch_due_posts()
                queued_at += [(when, post_id) for post_id in checks_queued(held)[seen:]]
            recent = [post_id for at, post_id in queued_at if when - at < services.CLAIM_LEASE]
            assert len(recent) <= BOUND, (step, len(recent))
            assert len(set(recent)) == len(recent), step  # no post queued twice within a claim's lease

    assert {post_id for _, post_id in queued_at} == every  # none left out
    assert len(queued_at) <= 3 * BOUND  # three leases began in 11 minutes; before, 150 messages


def test_a_slot_freed_by_a_finished_check_is_handed_out_at_the_next_tick(owner, settings):
    """The bound counts checks claimed and not finished: as workers finish checks (the platform says "still
    processing": asked again later), the next tick hands out as many more, not more."""
    settings.LAYERS_DISPATCH_MAX_WAITING = BOUND
    start = timezone.now() - timedelta(minutes=1)
    sent_awaiting_check(a_burst(owner, make_account(owner).pk, start=start, count=49))
    processing = PublishStatus(state="processing")

    with held_tasks() as held, mock.patch.object(TikTokClient, "publish_status", return_value=processing):
        dispatch_due_posts()
        assert len(checks_queued(held)) == BOUND
        dispatch_due_posts()
        assert len(checks_queued(held)) == BOUND  # all BOUND still in flight

        for task, args in held[:5]:  # a slow worker gets through five
            assert task(*args) == "processing"
        dispatch_due_posts()

        handed_out = checks_queued(held)
    assert len(handed_out) == BOUND + 5
    assert len(set(handed_out)) == BOUND + 5  # the five just checked are not due again yet: five others


def test_posts_waiting_to_be_published_take_no_slot_of_the_checks_nor_the_checks_theirs(owner, settings):
    """The two bounds are counted apart: a burst of publishes waiting for a worker does not hold back the checks
    (an Instagram post goes live in its check), nor do checks in flight hold back posts due now."""
    settings.LAYERS_DISPATCH_MAX_WAITING = 5
    start = timezone.now() - timedelta(minutes=1)
    to_check = sent_awaiting_check(a_burst(owner, make_account(owner).pk, start=start, count=7))
    due = a_burst(owner, make_account(owner).pk, start=start, count=7)

    with held_tasks() as held:
        dispatch_due_posts()

    assert len(checks_queued(held)) == 5
    published = [post_id for task, args in held if task.name == "scheduling.tasks.publish_posts" for post_id in args[0]]
    assert len(published) == 5
    assert set(checks_queued(held)) <= {p.pk for p in to_check} and set(published) <= {p.pk for p in due}


def test_a_stale_check_asks_the_platform_nothing_and_the_fresh_one_publishes_the_post(owner, settings):
    """A check message waited in the broker past its claim's lease; the post was claimed again and a second
    message queued. The stale one, run first, used to ask TikTok again (one of its 30 status calls a minute per
    token, for nothing). It now sees the post is no longer under its claim and leaves it; the fresh one reads
    the outcome and publishes the post."""
    settings.LAYERS_SANDBOX_PUBLISH_DELAY_SECONDS = 20 * 60  # TikTok processes the video for 20 minutes
    account = connected_account(owner, "tiktok", "slow.checks")
    scheduled = schedule_now(owner, account["id"])
    run_dispatcher()  # published on TikTok, still processing: asked again in 2 s
    assert post(owner, scheduled["id"])["status"] == "publishing"

    with held_tasks() as held:
        with time_machine.travel(timezone.now() + timedelta(seconds=5)):
            dispatch_due_posts()
        with time_machine.travel(timezone.now() + timedelta(minutes=6)):  # its claim ran out, still waiting
            dispatch_due_posts()
    stale, fresh = [(task, args) for task, args in held if task.name == resolve_post.name]
    assert stale[1][0] == fresh[1][0] == scheduled["id"]

    calls: list[str] = []
    with time_machine.travel(timezone.now() + timedelta(minutes=7)), intercepted({}, calls=calls):
        assert stale[0](*stale[1]) == "skipped"
    assert calls == []
    assert post(owner, scheduled["id"])["status"] == "publishing"

    with time_machine.travel(timezone.now() + timedelta(minutes=21)), intercepted({}, calls=calls):
        assert fresh[0](*fresh[1]) == "published"
    assert [call for call in calls if "status" in call] == ["POST /sandbox/tiktok/v2/post/publish/status/fetch/"]
    assert post(owner, scheduled["id"])["status"] == "published"
    assert Event.objects.filter(type="scheduled_post.published").count() == 1


def test_a_check_message_of_the_previous_release_still_settles_the_post(owner, settings):
    """Messages queued by the release before this one carry the post's id alone: they are checked as before."""
    settings.LAYERS_SANDBOX_PUBLISH_DELAY_SECONDS = 60
    account = connected_account(owner, "tiktok", "old.message")
    scheduled = schedule_now(owner, account["id"])
    run_dispatcher()
    assert post(owner, scheduled["id"])["status"] == "publishing"

    with time_machine.travel(timezone.now() + timedelta(minutes=2)):
        assert services.posts_claim_for_resolution() == [scheduled["id"]]
        assert resolve_post(scheduled["id"]) == "published"
    assert ScheduledPost.objects.get(pk=scheduled["id"]).status == "published"
