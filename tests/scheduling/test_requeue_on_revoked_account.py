"""A post a worker had claimed when its account was revoked is never put back in the queue: the revoke promised
every queued post of the account canceled, and a queued post on a disconnected account shows in the partner's
queued list until a worker fails it (found by the post-life model, tests/scheduling/test_post_life_model.py)."""

import threading
from datetime import timedelta

import pytest
import time_machine
from django.db import connection, transaction
from django.utils import timezone

from accounts import services as account_services
from accounts.models import Event
from scheduling import services
from scheduling.models import ScheduledPost
from tests.accounts.oauth_helpers import connected_account
from tests.concurrency import held_open, waiting_on_lock
from tests.platform_helpers import held_tasks
from tests.scheduling.publish_helpers import managed_provider, post, run_dispatcher, sandbox_posts, schedule_now

pytestmark = pytest.mark.django_db(transaction=True)


def claimed_and_lost(owner, username: str) -> tuple[dict, dict]:
    """A TikTok account and a post of it that a tick claimed, whose message was lost with its worker."""
    account = connected_account(owner, "tiktok", username)
    scheduled = schedule_now(owner, account["id"])
    with held_tasks():
        run_dispatcher()
    assert post(owner, scheduled["id"])["status"] == "publishing"
    return account, scheduled


def test_a_claimed_post_whose_worker_died_is_not_queued_again_once_its_account_is_revoked(owner):
    account, scheduled = claimed_and_lost(owner, "lost.run")
    revoked = owner.client.delete(f"/v1/social-accounts/{account['id']}")
    assert revoked.json()["canceledScheduledPosts"] == 0  # the claimed post is left to its run

    with time_machine.travel(timezone.now() + timedelta(minutes=6)):  # its claim ran out: the resolver's turn
        run_dispatcher()

    body = post(owner, scheduled["id"])
    assert body["status"] == "failed" and body["error"]["code"] == "ACCOUNT_DISCONNECTED", body
    queued = owner.client.get(f"/v1/projects/{owner.project.id}/scheduled-posts", {"status": "queued"}).json()
    assert queued["data"] == []
    assert [e.type for e in Event.objects.filter(type__startswith="scheduled_post.")] == ["scheduled_post.failed"]
    assert sandbox_posts("tiktok", "lost.run") == []


def test_a_revoke_committing_while_the_resolver_requeues_the_post_leaves_it_failed_not_queued(owner):
    """The resolver puts the post back in the queue while the partner's revoke is in its transaction (the
    account locked, its queued posts canceled, not committed): the resolver waits for the revoke, then sees the
    account disconnected. Read without the lock, the account was still connected, and the post stayed queued."""
    account, scheduled = claimed_and_lost(owner, "race.run")
    ticks: list = []

    def resolver():
        try:
            ticks.append(run_dispatcher())
        finally:
            connection.close()

    with time_machine.travel(timezone.now() + timedelta(minutes=6)):  # the claim ran out
        with held_open(lambda: account_services.social_account_revoke(account_id=account["id"])):
            thread = threading.Thread(target=resolver)
            thread.start()
            queued_behind = waiting_on_lock('FROM "accounts_socialaccount"')
        thread.join(30)

    body = post(owner, scheduled["id"])
    assert body["status"] == "failed" and body["error"]["code"] == "ACCOUNT_DISCONNECTED", body
    assert queued_behind and ticks, "the resolver did not wait for the revoke"


def provider_full(project) -> None:
    """The project's managed provider has its calls in flight already (other posts'): a post's run defers."""
    from accounts import callgate

    provider = managed_provider(project=project, name="Boost", endpoint_url="http://127.0.0.1:9/never-called")
    limits = services.managed_limits(provider.pk)
    with transaction.atomic():
        for i in range(services.MANAGED_PROVIDER_IN_FLIGHT):
            assert callgate.enter(limits=limits, holder=f"another post {i}", lease=services.CLAIM_LEASE) is None


def claimed_managed(owner, username: str) -> tuple[dict, str]:
    account = connected_account(owner, "tiktok", username)
    provider_full(owner.project)
    schedule_now(owner, account["id"], mode="managed")
    (post_id,) = services.posts_claim_due()
    return account, post_id


def test_a_managed_post_is_not_deferred_to_the_queue_once_its_account_is_revoked(owner):
    account, post_id = claimed_managed(owner, "managed.gone")
    assert owner.client.delete(f"/v1/social-accounts/{account['id']}").json()["canceledScheduledPosts"] == 0

    assert services.post_publish(post_id=post_id) == "failed"

    body = post(owner, post_id)
    assert body["status"] == "failed" and body["error"]["code"] == "ACCOUNT_DISCONNECTED", body


def test_a_revoke_committing_while_a_managed_post_is_deferred_leaves_it_failed_not_queued(owner):
    """The provider is full, so the run defers the post back to the queue, while the partner's revoke is in its
    transaction (the account locked, its queued posts canceled, not committed). The run read the account
    without its lock: connected, so it deferred the post, and the revoke, which had canceled the queued posts
    before, committed over a queued post on a disconnected account. The run now waits for the revoke."""
    account, post_id = claimed_managed(owner, "managed.race")
    outcomes: list = []

    def publisher():
        try:
            outcomes.append(services.post_publish(post_id=post_id))
        finally:
            connection.close()

    with held_open(lambda: account_services.social_account_revoke(account_id=account["id"])):
        thread = threading.Thread(target=publisher)
        thread.start()
        queued_behind = waiting_on_lock('FROM "accounts_socialaccount"')
    thread.join(30)

    body = post(owner, post_id)
    assert body["status"] == "failed" and body["error"]["code"] == "ACCOUNT_DISCONNECTED", (outcomes, body)
    queued = owner.client.get(f"/v1/projects/{owner.project.id}/scheduled-posts", {"status": "queued"}).json()
    assert queued["data"] == []
    assert queued_behind and outcomes == ["failed"], "the run did not wait for the revoke"


def test_a_worker_whose_clock_is_off_does_not_give_a_post_of_a_revoked_account_back_to_the_queue(owner, settings):
    """A worker whose clock is off gives its claimed posts back to the queue (config/clock.py). Once the
    account is revoked, it must not: the revoke promised its queued posts canceled. Failing the post from here
    would write this clock's time (the attempt, the event), so it writes nothing, and a healthy tick fails it
    once the claim runs out."""
    from config import clock

    account, scheduled = claimed_and_lost(owner, "skew.gone")
    assert owner.client.delete(f"/v1/social-accounts/{account['id']}").json()["canceledScheduledPosts"] == 0

    settings.LAYERS_MAX_CLOCK_SKEW_SECONDS = 5
    clock.forget()
    try:
        with time_machine.travel(timezone.now() - timedelta(minutes=6)):  # this worker is 6 minutes behind
            assert services.post_publish(post_id=scheduled["id"]) == "left to the resolver"
        clock.forget()
        body = post(owner, scheduled["id"])
        assert body["status"] == "publishing", body  # not queued: left to the resolver
        queued = owner.client.get(f"/v1/projects/{owner.project.id}/scheduled-posts", {"status": "queued"}).json()
        assert queued["data"] == []
        assert not Event.objects.filter(type__startswith="scheduled_post.").exists()  # nothing of this clock's

        # The claim ran out (moved in the database: a healthy process's clock is the database's), and a
        # healthy tick's resolver settles the post.
        lease_over = timezone.now() - timedelta(seconds=1)
        ScheduledPost.objects.filter(pk=scheduled["id"]).update(claimed_until=lease_over, next_check_at=lease_over)
        run_dispatcher()
    finally:
        clock.forget()

    body = post(owner, scheduled["id"])
    assert body["status"] == "failed" and body["error"]["code"] == "ACCOUNT_DISCONNECTED", body
    assert [e.type for e in Event.objects.filter(type__startswith="scheduled_post.")] == ["scheduled_post.failed"]
    assert sandbox_posts("tiktok", "skew.gone") == []


def test_a_post_of_a_revoked_account_whose_last_allowed_run_was_lost_fails_account_disconnected(owner):
    """The post's runs were lost four times already (workers died before it reached the platform), and its
    account was revoked meanwhile. The resolver would have given up on lost runs ("the worker died or raised":
    PLATFORM_UNAVAILABLE, which tells the partner to try again later); the account is gone, which is the answer a
    partner can act on, and the one the same post gets one run earlier."""
    account, scheduled = claimed_and_lost(owner, "fifth.run")
    ScheduledPost.objects.filter(pk=scheduled["id"]).update(requeues=services.MAX_LOST_RUNS - 1)
    assert owner.client.delete(f"/v1/social-accounts/{account['id']}").json()["canceledScheduledPosts"] == 0

    with time_machine.travel(timezone.now() + timedelta(minutes=6)):  # its claim ran out: the resolver's turn
        run_dispatcher()

    body = post(owner, scheduled["id"])
    assert body["status"] == "failed" and body["error"]["code"] == "ACCOUNT_DISCONNECTED", body
    assert sandbox_posts("tiktok", "fifth.run") == []
