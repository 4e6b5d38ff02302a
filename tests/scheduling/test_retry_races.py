"""Ops' "retry" of a failed post racing the partner's revoke of its account, on real PostgreSQL connections in
threads. Revoking promises that no post of the account stays queued; a retry that read the account as
connected just before the revoke committed used to queue the post again all the same: the next tick failed
it ACCOUNT_DISCONNECTED, overwriting its real failure and sending a second scheduled_post.failed after the
disconnect."""

import threading

import pytest

from accounts import services as account_services
from accounts.models import Event, SocialAccount
from scheduling import services
from scheduling.models import ScheduledPost
from tests.accounts.oauth_helpers import connected_account
from tests.concurrency import run_in_threads, wait_until_waiting
from tests.platform_helpers import inject_fault
from tests.scheduling.publish_helpers import post, run_dispatcher, schedule_now

pytestmark = pytest.mark.django_db(transaction=True)

WAIT = 20


def test_a_retry_and_a_revoke_at_once_leave_no_queued_post_on_the_disconnected_account(owner, monkeypatch):
    account = connected_account(owner, "tiktok", "retry.revoke")
    inject_fault("tiktok", "retry.revoke", "reject", 1)
    scheduled = schedule_now(owner, account["id"])
    run_dispatcher()
    assert post(owner, scheduled["id"])["error"]["code"] == "PLATFORM_REJECTED"

    # The retry stops once it has read the post and its account (still connected) and before it writes.
    reached, go, revoked = threading.Event(), threading.Event(), threading.Event()
    checked = services._outcome_unknown

    def pausing(row):
        reached.set()
        go.wait(WAIT)
        return checked(row)

    monkeypatch.setattr(services, "_outcome_unknown", pausing)

    def retry():
        try:
            return services.post_retry(post_id=scheduled["id"]).status
        except services.Conflict as refused:
            return refused.code

    def revoke():
        assert reached.wait(WAIT)
        try:
            return account_services.social_account_revoke(account_id=account["id"]).canceled_scheduled_posts
        finally:
            revoked.set()

    def let_the_retry_go_on():
        # once the revoke has committed, or waits for the retry's transaction: either way it came second
        assert reached.wait(WAIT)
        try:
            while not revoked.is_set():
                try:
                    wait_until_waiting('"accounts_socialaccount"', timeout=0.2)
                    break
                except AssertionError:
                    continue
        finally:
            go.set()

    retried, canceled, _ = run_in_threads(retry, revoke, let_the_retry_go_on)

    assert SocialAccount.objects.get(pk=account["id"]).status == "disconnected"
    row = ScheduledPost.objects.get(pk=scheduled["id"])
    assert row.status != "queued", (retried, canceled)
    # Whichever came first, the partner's story holds: the revoke canceled what the retry had queued, or
    # the retry was refused and the post kept its own failure.
    assert (retried, canceled, row.status) in {("queued", 1, "canceled"), ("ACCOUNT_DISCONNECTED", 0, "failed")}
    run_dispatcher()
    assert Event.objects.filter(type="scheduled_post.failed").count() == 1
