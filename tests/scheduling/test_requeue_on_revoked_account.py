"""A post a worker had claimed when its account was revoked is never put back in the queue: the revoke promised
every queued post of the account canceled, and a queued post on a disconnected account shows in the partner's
queued list until a worker fails it (found by the post-life model, tests/scheduling/test_post_life_model.py)."""

import threading
from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.utils import timezone

from accounts import services as account_services
from accounts.models import Event
from tests.accounts.oauth_helpers import connected_account
from tests.concurrency import held_open, waiting_on_lock
from tests.platform_helpers import held_tasks
from tests.scheduling.publish_helpers import post, run_dispatcher, sandbox_posts, schedule_now

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
