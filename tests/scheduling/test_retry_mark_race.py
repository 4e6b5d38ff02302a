"""The "changed since the click" mark of ops' bulk retry, against a publisher committing at the click, on real
PostgreSQL connections in threads.

Staff press "retry anyway" over a whole list; the worker doing the rest of it may run minutes later and leaves
alone a post with an attempt recorded after the click (posts_retry's `attempted_after`). Attempt ids are handed
out when a row is inserted, not when it commits: a publisher that had inserted the failure of a post it had just
sent (its answer lost: it may be live) and committed a moment after the click, while another post's attempt
with a higher id had committed before it, was read as failed before the click. The worker then sent the post a
second time: two posts on the creator's account."""

import threading

import httpx
import pytest
from django.db import connection

from scheduling import services
from scheduling.models import ScheduledPost, ScheduledPostAttempt
from tests.accounts.oauth_helpers import connected_account
from tests.platform_helpers import inject_fault, intercepted, sandbox_posts
from tests.scheduling.publish_helpers import post, run_dispatcher, schedule_now

pytestmark = pytest.mark.django_db(transaction=True)

WAIT = 20


def taken_then_lost(request, sandbox):
    """TikTok takes the post (the sandbox records it), and its answer never reaches Layers."""
    answer = sandbox.handle_request(request)
    answer.read()
    raise httpx.ReadTimeout("the answer was lost on its way back", request=request)


def failed_by_the_publisher_at_the_click(owner, monkeypatch, handle: str, *, at_the_click):
    """A post sent to TikTok whose answer was lost: the publisher fails it PLATFORM_UNAVAILABLE (it may be live),
    and its transaction, the attempt inserted, stays open while `at_the_click()` runs on this thread; it commits
    after. Returns (the post's id, what `at_the_click` returned)."""
    account = connected_account(owner, "tiktok", handle)
    scheduled = schedule_now(owner, account["id"])
    written, go = threading.Event(), threading.Event()
    record = services.event_record
    errors: list[BaseException] = []

    def recording_then_waiting(**kwargs):
        # The last write of the publisher's transaction (_finish): the post failed and its attempt inserted.
        event = record(**kwargs)
        if kwargs["data"]["id"] == scheduled["id"]:
            written.set()
            go.wait(WAIT)
        return event

    monkeypatch.setattr(services, "event_record", recording_then_waiting)

    def publisher():
        try:
            with intercepted({"/v2/post/publish/video/init/": taken_then_lost}):
                run_dispatcher()
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)
        finally:
            written.set()
            connection.close()

    thread = threading.Thread(target=publisher)
    thread.start()
    try:
        assert written.wait(WAIT) and not errors, errors
        assert ScheduledPost.objects.get(pk=scheduled["id"]).status == "publishing"  # as anyone else reads it
        result = at_the_click()
    finally:
        go.set()
        thread.join(WAIT)
    assert errors == [], errors
    monkeypatch.setattr(services, "event_record", record)
    return scheduled["id"], result


def failed_before(owner, handle: str) -> str:
    """A post TikTok refused (failed PLATFORM_REJECTED, committed): its id."""
    account = connected_account(owner, "tiktok", handle)
    inject_fault("tiktok", handle, "reject", 1)
    scheduled = schedule_now(owner, account["id"])
    run_dispatcher()
    assert post(owner, scheduled["id"])["error"]["code"] == "PLATFORM_REJECTED"
    return scheduled["id"]


def test_a_post_failed_by_a_publisher_committing_after_the_click_is_not_retried_anyway(owner, monkeypatch):
    # Two posts failed before the click: staff retry one of them from a list; a colleague queues the other
    # again at the click.
    seen = failed_before(owner, "seen.failed")
    other = {"id": failed_before(owner, "refused.once")}

    def the_click():
        services.post_retry(post_id=other["id"])  # its attempt commits now, with a higher id than the held one
        return services.post_attempts_mark()  # staff press Go on "retry anyway" over the whole list

    live, mark = failed_by_the_publisher_at_the_click(owner, monkeypatch, "live.already", at_the_click=the_click)

    # The race as described: the held failure's attempt has the lower id, and committed after the mark was read.
    failure = ScheduledPostAttempt.objects.get(post_id=live, outcome="failed")
    colleague = ScheduledPostAttempt.objects.get(post_id=other["id"], outcome="staff_retry")
    assert failure.pk < colleague.pk
    assert post(owner, live)["error"]["code"] == "PLATFORM_UNAVAILABLE"
    assert len(sandbox_posts("tiktok", "live.already")) == 1  # it is on the creator's account

    # The worker doing the rest of the list, later.
    outcome = services.posts_retry(post_ids=[seen, live], checked_on_platform=True, attempted_after=mark)
    run_dispatcher()

    assert outcome.done == [seen], outcome  # failed before the click: what staff looked at
    assert post(owner, seen)["status"] == "published"
    assert outcome.skipped.get(live) is not None and outcome.skipped[live].code == "POST_CHANGED", outcome
    assert ScheduledPost.objects.get(pk=live).status == "failed"
    assert len(sandbox_posts("tiktok", "live.already")) == 1  # not posted a second time


def test_a_worker_task_queued_by_the_previous_release_still_leaves_alone_what_failed_after_its_click(owner):
    """A deploy lands while the worker's share of a long retry waits in the queue: its message carries the mark as
    the previous release read it, a plain id. It is read as it was then, not refused (the rest of the list would
    be left undone)."""
    seen = failed_before(owner, "seen.before.deploy")
    mark = ScheduledPostAttempt.objects.order_by("-pk").values_list("pk", flat=True).first()  # the old mark
    failed_again = failed_before(owner, "failed.after.click")

    outcome = services.posts_retry(post_ids=[seen, failed_again], attempted_after=mark)

    assert outcome.done == [seen], outcome
    assert outcome.skipped[failed_again].code == "POST_CHANGED"
