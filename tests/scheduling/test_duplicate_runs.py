"""Two runs on one claimed post — Celery redelivering a publish message (acks_late, reject_on_worker_lost),
a slow worker starting after its claim ran out and the post was claimed again, a resolve message arriving
late — each on its own PostgreSQL connection. Whatever the second run meets, the post is created on the platform
once and ends as the platform has it: a run that is not the one past the point of no return never
requeues, fails or settles the post under it. Ordering is forced with events, never with sleeps."""

import threading

import pytest
import time_machine

from accounts.models import Event
from accounts.platforms.base import PlatformUnavailable, RequestRejected, TokenInvalid
from accounts.platforms.tiktok import TikTokClient
from scheduling import services
from tests.accounts.oauth_helpers import connected_account
from tests.concurrency import run_in_threads
from tests.scheduling.publish_helpers import later, post, run_dispatcher, sandbox_posts, schedule_now

pytestmark = pytest.mark.django_db(transaction=True)

WAIT = 20  # seconds: only a bound on a wait for an event, never an ordering


# What run A's creator_info call gets, before its point of no return: a transient error (A would requeue the
# post, clearing B's mark, and the next tick would post it again), a dead token, a refusal (A would fail it).
A_ERRORS = {
    "unavailable": PlatformUnavailable("tiktok: internal_error", status=503),
    "token_invalid": TokenInvalid("tiktok: access_token_invalid", status=401),
    "rejected": RequestRejected("tiktok: spam_risk_too_many_posts", code="spam_risk_too_many_posts"),
}


@pytest.mark.parametrize("error", A_ERRORS)
def test_a_duplicate_publish_message_whose_call_fails_before_posting_leaves_the_post_to_the_run_that_posted(
    owner, monkeypatch, error
):
    scheduled, post_id = claimed_post(owner, "dupmsg")
    original = TikTokClient.publish
    role = threading.local()
    a_in_publish, b_posted, a_done = threading.Event(), threading.Event(), threading.Event()

    def publish(self, **kwargs):
        if role.name == "A":
            a_in_publish.set()
            assert b_posted.wait(WAIT)
            raise A_ERRORS[error]
        assert a_in_publish.wait(WAIT)
        result = original(self, **kwargs)  # B marked its point of no return: TikTok has the post now
        b_posted.set()
        assert a_done.wait(WAIT)  # A handles its error while B is about to store the publish id
        return result

    monkeypatch.setattr(TikTokClient, "publish", publish)

    def run(name):
        role.name = name
        try:
            return services.post_publish(post_id=post_id)
        finally:
            if name == "A":
                a_done.set()

    outcome_a, _ = run_in_threads(lambda: run("A"), lambda: run("B"))
    monkeypatch.setattr(TikTokClient, "publish", original)

    assert outcome_a == "skipped"
    assert len(sandbox_posts("tiktok", "dupmsg")) == 1
    with time_machine.travel(later(minutes=30)):  # the retry A asked for would be due by now
        run_dispatcher()
        run_dispatcher()
    assert_published_once(owner, scheduled["id"], "dupmsg")


def test_a_second_run_arriving_while_the_first_is_posting_does_not_fail_a_post_that_is_published(owner, monkeypatch):
    scheduled, post_id = claimed_post(owner, "dupmsg2")
    original = TikTokClient.publish
    b_posted, a_done = threading.Event(), threading.Event()

    def publish(self, **kwargs):
        result = original(self, **kwargs)  # B marked its point of no return: TikTok has the post
        b_posted.set()
        assert a_done.wait(WAIT)  # the duplicate message runs here, before B stores the publish id
        return result

    monkeypatch.setattr(TikTokClient, "publish", publish)

    def run_a():
        assert b_posted.wait(WAIT)
        try:
            return services.post_publish(post_id=post_id)
        finally:
            a_done.set()

    outcome_a, outcome_b = run_in_threads(run_a, lambda: services.post_publish(post_id=post_id))
    monkeypatch.setattr(TikTokClient, "publish", original)

    assert (outcome_a, outcome_b) == ("skipped", "published")
    assert_published_once(owner, scheduled["id"], "dupmsg2")


def test_a_slow_worker_whose_claim_ran_out_leaves_the_post_to_the_run_of_the_new_claim(owner, monkeypatch):
    scheduled, post_id = claimed_post(owner, "slowrun")
    original = TikTokClient.publish
    role = threading.local()
    a_started, reclaimed, a_called, b_done = (threading.Event() for _ in range(4))

    def publish(self, **kwargs):
        if role.name == "B":
            return original(self, **kwargs)
        a_started.set()
        assert reclaimed.wait(WAIT)  # A stalls past its lease (a long GC pause, a slow network)
        try:
            return original(self, **kwargs)
        finally:
            a_called.set()
            assert b_done.wait(WAIT)  # the run of the new claim goes while A is still in its call

    monkeypatch.setattr(TikTokClient, "publish", publish)

    def slow_worker():
        role.name = "A"
        return services.post_publish(post_id=post_id)

    def new_claim():
        role.name = "B"
        assert a_started.wait(WAIT)
        try:
            with time_machine.travel(later(minutes=6)):  # A's lease ran out
                # The resolver finds no point of no return and queues the post again; a tick claims it anew.
                assert [services.post_resolve(post_id=i) for i in services.posts_claim_for_resolution()] == ["requeued"]
                assert services.posts_claim_due() == [post_id]
                reclaimed.set()
                assert a_called.wait(WAIT)
                return services.post_publish(post_id=post_id)
        finally:
            b_done.set()

    outcome_a, outcome_b = run_in_threads(slow_worker, new_claim)
    monkeypatch.setattr(TikTokClient, "publish", original)

    assert (outcome_a, outcome_b) == ("skipped", "published")
    assert_published_once(owner, scheduled["id"], "slowrun")


def test_a_late_resolve_message_does_not_fail_a_post_whose_creating_call_is_in_flight(owner, monkeypatch):
    scheduled, post_id = claimed_post(owner, "lateresolve")
    original = TikTokClient.publish
    posted, resolved = threading.Event(), threading.Event()

    def publish(self, **kwargs):
        result = original(self, **kwargs)  # marked, TikTok has the post; the id is not stored yet
        posted.set()
        assert resolved.wait(WAIT)
        return result

    monkeypatch.setattr(TikTokClient, "publish", publish)

    def late_resolve():
        # A resolve message redelivered or held in the broker: it carries only the post id.
        assert posted.wait(WAIT)
        try:
            return services.post_resolve(post_id=post_id)
        finally:
            resolved.set()

    outcome_worker, outcome_resolve = run_in_threads(lambda: services.post_publish(post_id=post_id), late_resolve)
    monkeypatch.setattr(TikTokClient, "publish", original)

    assert (outcome_worker, outcome_resolve) == ("published", "skipped")
    assert_published_once(owner, scheduled["id"], "lateresolve")


def assert_published_once(owner, post_id: str, username: str) -> None:
    """On TikTok once, reported published without an error, and never reported failed on the way."""
    assert len(sandbox_posts("tiktok", username)) == 1, "the same post was published twice on TikTok"
    body = post(owner, post_id)
    assert body["status"] == "published" and body["error"] is None, body
    assert not Event.objects.filter(type="scheduled_post.failed").exists()


def claimed_post(owner, username: str) -> tuple[dict, str]:
    """A TikTok post due now on a new account, claimed by the dispatcher: (its API body, its id)."""
    account = connected_account(owner, "tiktok", username)
    scheduled = schedule_now(owner, account["id"])
    (post_id,) = services.posts_claim_due()
    return scheduled, post_id


def test_two_runs_of_one_claim_cannot_both_pass_the_point_of_no_return(owner):
    """Two runs of one claim (a redelivered message, a late worker) marking the point of no return at the same
    moment: the second must find the mark set and stop. The account check made the UPDATE join the accounts
    table, so PostgreSQL re-checked only the row's id after the first run committed, and the second run marked
    too: both called TikTok, and the post appeared twice."""
    import threading
    from datetime import timedelta

    from django.db import connection
    from django.utils import timezone

    from tests.accounts.oauth_helpers import connected_account
    from tests.concurrency import held_open, wait_until_waiting

    account = connected_account(owner, "tiktok", "mark.race")
    scheduled = schedule_now(owner, account["id"])
    assert services.posts_claim_due() == [scheduled["id"]]
    run_a = services._publishing_posts([scheduled["id"]])[scheduled["id"]]
    run_b = services._publishing_posts([scheduled["id"]])[scheduled["id"]]
    at_a = timezone.now()
    outcome = {}

    def second_run():
        try:
            services._unless_account_gone(run_b, lambda rows: rows.update(publish_attempted_at=at_a + timedelta(1)))
            outcome["b"] = "marked"
        except services._LostClaim:
            outcome["b"] = "lost"
        finally:
            connection.close()

    first_marks = lambda: services._unless_account_gone(run_a, lambda rows: rows.update(publish_attempted_at=at_a))  # noqa: E731
    with held_open(first_marks):
        thread = threading.Thread(target=second_run)
        thread.start()
        wait_until_waiting("UPDATE")
    thread.join(30)
    assert outcome == {"b": "lost"}
