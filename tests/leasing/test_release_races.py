"""Releasing a leased account while something else works on it, on real PostgreSQL connections in threads.
Each test holds one operation at the point where it used to be unprotected (a platform call, the admin's
read of the row, the release's own transaction) and lets the other run there.

- a token refresh that rotated the token while the release gave the pool the old one (and an assignment
  moved it on to another partner);
- an admin edit of the pool account read before an assignment or a release committed;
- a claimed post whose leased account is released before the post's creating call;
- a batch of managed posts whose leased account is released while the first is with the provider;
- the renewal job starting while a release commits."""

import json
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from accounts import services as account_services
from accounts.models import SocialAccount
from accounts.platforms.base import TokenSet
from accounts.platforms.tiktok import TikTokClient
from billing import services as billing
from leasing import services as leasing
from leasing.admin import PoolAccountAdmin
from leasing.models import Lease, PoolAccount
from leasing.periods import add_months
from tests.billing.factories import balance, charges, lease_assign
from tests.concurrency import run_in_threads, waiting_on_lock
from tests.leasing.helpers import add_pool, get_request, request_accounts
from tests.leasing.test_ops_guards import pool_form
from tests.receivers import receiver
from tests.scheduling.publish_helpers import managed_provider, post, sandbox_posts, schedule_now

pytestmark = pytest.mark.django_db(transaction=True)
WAIT = 20


def leased_account(tenant) -> tuple[str, str]:
    (pool_id,) = add_pool(1)
    accepted = request_accounts(tenant, 1)
    leasing.lease_assign(request_id=accepted["requestId"], auto=True)
    return pool_id, get_request(tenant, accepted["requestId"])["socialAccountIds"][0]


def paused(owner, name: str, patch):
    """Replace `owner.name` with a version that signals `reached` and waits for `go` at its point, given by
    `patch(original, reached, go)`. Returns (reached, go, restore)."""
    original = getattr(owner, name)
    reached, go = threading.Event(), threading.Event()
    setattr(owner, name, patch(original, reached, go))
    return reached, go, lambda: setattr(owner, name, original)


def released_meanwhile(account_id: str, target, name: str, patch, work):
    """Run `work` with `target.name` patched to pause at its point (see `paused`), and release the lease of
    `account_id` during that pause; returns [work's result, whether the release released]."""
    reached, go, restore = paused(target, name, patch)

    def release():
        assert reached.wait(WAIT)
        try:
            return account_services.social_account_revoke(account_id=account_id).released
        finally:
            go.set()

    try:
        return run_in_threads(work, release)
    finally:
        restore()


def refresh_across_a_new_lease(owner, sibling, monkeypatch, *, go=None, ready=None, after=None):
    """A leased account's token refresh (owner's) pauses once TikTok has rotated the pair, before its locked
    write; meanwhile the partner releases the account and ops lease the pool account at once to `sibling`
    (then `after(new_id)` runs there). `go` ends the pause (set once the release and the lease are done, or
    earlier by the caller); `ready()` runs once the first lease is made, before the race. Returns (the two
    threads' results, pool account id, released id, new lease's id): the refresh's result, then the
    assignment's status or `after`'s result."""
    pool_id, account_id = leased_account(owner)
    again = request_accounts(sibling, 1)
    if ready is not None:
        ready()
    reached, go = threading.Event(), go or threading.Event()
    original = TikTokClient.refresh

    def refresh(self, *, tokens):
        result = original(self, tokens=tokens)  # TikTok has rotated the refresh token now
        if not reached.is_set():  # the released account's refresh; any later one goes straight through
            reached.set()
            go.wait(WAIT)
        return result

    monkeypatch.setattr(TikTokClient, "refresh", refresh)

    def release_then_lease_again():
        assert reached.wait(WAIT)
        try:
            account_services.social_account_revoke(account_id=account_id)
            status = leasing.lease_assign(request_id=again["requestId"], pool_account_ids=[pool_id]).status
            (new_id,) = get_request(sibling, again["requestId"])["socialAccountIds"]
            return after(new_id) if after else status
        finally:
            go.set()

    outcomes = run_in_threads(
        lambda: account_services.social_account_refresh_token(account_id=account_id), release_then_lease_again
    )
    (new_id,) = get_request(sibling, again["requestId"])["socialAccountIds"]
    return outcomes, pool_id, account_id, new_id


def test_a_refresh_finishing_after_the_release_hands_its_new_tokens_to_the_pool(owner, sibling):
    pool_id, account_id = leased_account(owner)

    def refresh_then_wait(original, reached, go):
        def refresh(self, *, tokens):
            result = original(self, tokens=tokens)  # TikTok has rotated the refresh token now
            reached.set()
            go.wait(WAIT)  # the release runs here, between the platform call and the locked write
            return result

        return refresh

    outcomes = released_meanwhile(
        account_id,
        TikTokClient,
        "refresh",
        refresh_then_wait,
        lambda: account_services.social_account_refresh_token(account_id=account_id),
    )

    assert outcomes == ["skipped", True]
    assert PoolAccount.objects.get(pk=pool_id).status == "available"
    # The next partner's account refreshes fine: the pool holds the live refresh token, not the rotated one.
    again = request_accounts(sibling, 1)
    leasing.lease_assign(request_id=again["requestId"], auto=True)
    (new_id,) = get_request(sibling, again["requestId"])["socialAccountIds"]
    assert account_services.social_account_refresh_token(account_id=new_id) == "refreshed"


def test_a_refresh_finishing_after_the_release_and_a_new_lease_hands_its_new_tokens_to_the_new_lease(
    owner, sibling, monkeypatch
):
    # The refresh has rotated the token at TikTok; meanwhile the partner releases the account and ops lease it
    # at once to another partner, whose binding takes the old (now dead) pair from the pool.
    outcomes, pool_id, _, new_id = refresh_across_a_new_lease(owner, sibling, monkeypatch)

    assert outcomes == ["skipped", "assigned"]
    # The second partner's account holds the live pair: its refresh works (it read reauth_required, and a leased
    # account cannot be reauthorized by the partner), and the pool account keeps no copy while it is leased.
    assert account_services.social_account_refresh_token(account_id=new_id) == "refreshed"
    assert SocialAccount.objects.get(pk=new_id).status == "connected"
    assert PoolAccount.objects.filter(pk=pool_id, refresh_token_enc="", access_token_enc="").exists()


def test_a_late_refresh_landing_while_the_new_assignment_is_still_committing_goes_to_the_new_lease(
    owner, sibling, monkeypatch
):
    # As above, but the refresh stores its result while the assignment is still inside its transaction: it
    # holds the pool account's lock and its lease is not committed yet, so the refresh finds no live lease and
    # queues on that lock; once the assignment commits, the pool holds no token any more and the pair is the
    # new binding's.
    go = threading.Event()
    original_start = billing.lease_billing_start

    def billing_start(*, lease):  # inside the assignment's transaction: pool account locked, lease uncommitted
        go.set()
        assert waiting_on_lock("leasing_poolaccount", timeout=10)  # the refresh's write queues on it
        return original_start(lease=lease)

    outcomes, pool_id, _, new_id = refresh_across_a_new_lease(
        owner,
        sibling,
        monkeypatch,
        go=go,
        ready=lambda: monkeypatch.setattr(billing, "lease_billing_start", billing_start),
    )

    assert outcomes == ["skipped", "assigned"]
    assert account_services.social_account_refresh_token(account_id=new_id) == "refreshed"
    assert SocialAccount.objects.get(pk=new_id).status == "connected"
    assert PoolAccount.objects.filter(pk=pool_id, refresh_token_enc="", access_token_enc="").exists()


def test_a_late_refresh_reconnects_a_new_lease_that_went_reauth_required_on_the_dead_pair(owner, sibling, monkeypatch):
    # The new partner's account tried to refresh with the pair the assignment gave it before the late refresh
    # stored the new one: TikTok refused it (rotated away), and the account went reauth_required, which the
    # partner cannot cure (a leased account cannot be reauthorized). The late refresh's pair cures it.
    from accounts.models import SocialAccountStatusChange

    outcomes, _, account_id, new_id = refresh_across_a_new_lease(
        owner,
        sibling,
        monkeypatch,
        after=lambda new_id: account_services.social_account_refresh_token(account_id=new_id),
    )

    assert outcomes == ["skipped", "reauth_required"]
    assert sibling.client.get(f"/v1/social-accounts/{new_id}").json()["status"] == "connected"
    events = sibling.client.get("/v1/events").json()["data"]  # newest first
    assert [e["type"] for e in events if e["data"].get("id") == new_id][:2] == [
        "social_account.reconnected",
        "social_account.needs_reauth",
    ]
    latest = SocialAccountStatusChange.objects.filter(social_account_id=new_id).order_by("-pk").first()
    assert (latest.from_status, latest.to_status) == ("reauth_required", "connected")
    assert account_id in latest.source
    assert account_services.social_account_refresh_token(account_id=new_id) == "refreshed"


def test_a_late_refresh_leaves_reauth_required_a_new_lease_the_creator_removed_the_app_from(
    owner, sibling, monkeypatch
):
    # The new lease went reauth_required because TikTok's authorization.removed came (the creator removed the
    # app), not because the dead pair was refused: TikTok revoked the late refresh's pair too, and reconnecting
    # with it would show the account connected on a dead token (and a redelivered removal, older than the
    # token stored, would then be ignored).
    from accounts.models import PlatformIdentity

    def creator_removes_the_app(new_id):
        open_id = PlatformIdentity.objects.get(bindings__pk=new_id).platform_user_id
        return account_services.platform_authorization_removed(
            platform="tiktok", platform_user_id=open_id, removed_at=timezone.now()
        )

    outcomes, _, _, new_id = refresh_across_a_new_lease(owner, sibling, monkeypatch, after=creator_removes_the_app)

    assert outcomes == ["skipped", [new_id]]
    assert SocialAccount.objects.get(pk=new_id).status == "reauth_required"


def released_and_leased_again(owner, sibling) -> tuple[str, str, str]:
    """Owner's leased account released and its pool account leased at once to `sibling`: (the released
    account's id, the refresh token it held, the new lease's account id)."""
    pool_id, account_id = leased_account(owner)
    started_from = SocialAccount.objects.get(pk=account_id).refresh_token
    account_services.social_account_revoke(account_id=account_id)
    again = request_accounts(sibling, 1)
    leasing.lease_assign(request_id=again["requestId"], pool_account_ids=[pool_id])
    (new_id,) = get_request(sibling, again["requestId"])["socialAccountIds"]
    return account_id, started_from, new_id


def test_a_late_refresh_leaves_alone_a_new_lease_whose_token_changed_since(owner, sibling):
    # The other side of the handoff above: the new binding has rotated the pair itself since (so the late
    # refresh's pair is the older one), and keeps its own.
    account_id, started_from, new_id = released_and_leased_again(owner, sibling)
    assert account_services.social_account_refresh_token(account_id=new_id) == "refreshed"
    late = TokenSet(
        access_token="late-access",
        refresh_token="late-refresh",
        expires_at=timezone.now() + timedelta(days=1),
        platform_user_id=SocialAccount.objects.get(pk=new_id).identity.platform_user_id,
    )

    with transaction.atomic():
        took = leasing.pool_account_take_refreshed_tokens(
            social_account_id=account_id, refreshed_from=started_from, tokens=late
        )

    assert took is False
    assert SocialAccount.objects.get(pk=new_id).access_token != "late-access"
    assert account_services.social_account_refresh_token(account_id=new_id) == "refreshed"


def test_a_late_refresh_without_both_publishing_scopes_leaves_a_reauth_required_new_lease_as_it_is(owner, sibling):
    # A pool account is only connected with video.publish and video.upload: a pair without them would not cure
    # a lease that went reauth_required, so it is not connected again with it.
    account_id, started_from, new_id = released_and_leased_again(owner, sibling)
    assert account_services.social_account_mark_reauth_required(
        account_id=new_id, reason="TikTok refused the refresh token", source="token refresh"
    )
    late = TokenSet(
        access_token="late-access",
        refresh_token="late-refresh",
        expires_at=timezone.now() + timedelta(days=1),
        platform_user_id=SocialAccount.objects.get(pk=new_id).identity.platform_user_id,
        scopes=("user.info.basic", "video.upload"),
    )

    with transaction.atomic():
        took = leasing.pool_account_take_refreshed_tokens(
            social_account_id=account_id, refreshed_from=started_from, tokens=late
        )

    assert took is False
    assert sibling.client.get(f"/v1/social-accounts/{new_id}").json()["status"] == "reauth_required"
    assert SocialAccount.objects.get(pk=new_id).access_token != "late-access"


def admin_edit_racing(pool_id: str, other, **changes):
    """Post the pool account's admin form while `other` runs between the admin's read of the row and its
    save; returns (admin response, other's result)."""
    ops, url, data = pool_form(pool_id, **changes)

    def read_then_wait(original, reached, go):
        def get_object(self, request, object_id, from_field=None):
            obj = original(self, request, object_id, from_field)
            if request.method == "POST":
                reached.set()
                go.wait(WAIT)
            return obj

        return get_object

    reached, go, restore = paused(PoolAccountAdmin, "get_object", read_then_wait)

    def run_other():
        assert reached.wait(WAIT)
        try:
            return other()
        finally:
            go.set()

    try:
        return run_in_threads(lambda: ops.post(url, data), run_other)
    finally:
        restore()


def test_an_admin_edit_read_before_an_assignment_does_not_put_the_account_back_in_the_pool(owner):
    (pool_id,) = add_pool(1)
    accepted = request_accounts(owner, 1)

    page, status = admin_edit_racing(
        pool_id, lambda: leasing.lease_assign(request_id=accepted["requestId"], auto=True).status, audience_notes="gyms"
    )

    assert status == "assigned"
    assert page.status_code == 200 and "while you were editing" in page.content.decode()
    pool = PoolAccount.objects.get(pk=pool_id)
    assert (pool.status, pool.access_token_enc, pool.audience_notes) == ("leased", "", "")
    assert Lease.objects.filter(pool_account_id=pool_id, released_at__isnull=True).count() == 1


def test_an_admin_edit_read_before_a_release_does_not_keep_the_account_out_of_the_pool(owner):
    pool_id, account_id = leased_account(owner)

    page, released = admin_edit_racing(
        pool_id, lambda: account_services.social_account_revoke(account_id=account_id).released, audience_notes="x"
    )

    assert released is True
    assert page.status_code == 200 and "while you were editing" in page.content.decode()
    pool = PoolAccount.objects.get(pk=pool_id)
    assert pool.status == "available" and pool.access_token


def test_an_admin_edit_without_a_race_saves_only_what_it_edits(owner):
    pool_id, _ = leased_account(owner)
    ops, url, data = pool_form(pool_id, audience_notes="great for gyms")
    assert ops.post(url, data).status_code == 302
    pool = PoolAccount.objects.get(pk=pool_id)
    assert (pool.status, pool.audience_notes, pool.access_token_enc) == ("leased", "great for gyms", "")


def test_a_claimed_post_is_not_published_on_an_account_released_before_its_creating_call(owner):
    from scheduling import services as scheduling

    pool_id, account_id = leased_account(owner)
    handle = PoolAccount.objects.get(pk=pool_id).handle
    scheduled = schedule_now(owner, account_id)
    assert scheduling.posts_claim_due() == [scheduled["id"]]

    def publish_after_release(original, reached, go):
        def publish(self, **kwargs):
            reached.set()
            go.wait(WAIT)  # the release commits here, after the post was read and claimed
            return original(self, **kwargs)

        return publish

    outcome, released = released_meanwhile(
        account_id,
        TikTokClient,
        "publish",
        publish_after_release,
        lambda: scheduling.post_publish(post_id=scheduled["id"]),
    )

    assert released is True and outcome == "failed"
    body = post(owner, scheduled["id"])
    assert body["status"] == "failed" and body["error"]["code"] == "ACCOUNT_DISCONNECTED"
    assert sandbox_posts("tiktok", handle) == []


def test_managed_posts_read_before_a_release_are_not_sent_to_the_provider_after_it(owner):
    from scheduling import services as scheduling

    _, account_id = leased_account(owner)
    released = []

    def provider(request):
        if not released:  # the partner releases the account while the batch's first post is with the provider
            released.append(account_services.social_account_revoke(account_id=account_id).released)
        return 200, {"id": f"mp-{len(released)}"}, {}

    with receiver(provider) as (url, received):
        managed_provider(project=owner.project, name="Boost", endpoint_url=url)
        first = schedule_now(owner, account_id, mode="managed")
        second = schedule_now(owner, account_id, mode="managed")
        assert sorted(scheduling.posts_claim_due()) == sorted([first["id"], second["id"]])
        # One dispatcher batch: both posts (and their account) are read before the release.
        outcomes = scheduling.posts_publish(post_ids=[first["id"], second["id"]])

    assert released == [True]
    # The provider posts on the account itself: the second post must not reach it once the account is
    # back in Layers' pool (no platform token is involved that could be refused).
    assert [json.loads(r["body"])["scheduledPostId"] for r in received] == [first["id"]]
    assert outcomes == {first["id"]: "published", second["id"]: "failed"}
    body = post(owner, second["id"])
    assert body["status"] == "failed" and body["error"]["code"] == "ACCOUNT_DISCONNECTED"


def test_the_renewal_job_starting_during_a_release_charges_nothing_after_it(owner):
    renewal_at = timezone.now() + timedelta(seconds=2)
    lease = lease_assign(owner, price_cents=4900, at=add_months(renewal_at, -1))
    assert [c[0] for c in charges(lease)] == [0]

    job_pid = []

    def effects_then_wait(original, reached, go):
        def disconnect_effects(**kwargs):
            result = original(**kwargs)  # released_at set (before the renewal), not committed yet
            reached.set()
            deadline = time.monotonic() + WAIT
            # Until the job's own connection waits on a lock (or the job is over). Any lock wait on the server
            # (another test database's) used to end the pause: the release then committed before the job ran,
            # and the test passed without the wallet lock that keeps the job from charging after a release.
            while not go.is_set() and time.monotonic() < deadline:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted AND pid = %s", job_pid)
                    if cursor.fetchone()[0]:
                        break
                time.sleep(0.02)
            return result

        return disconnect_effects

    reached, go, restore = paused(account_services, "_disconnect_effects", effects_then_wait)

    def job():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            job_pid.append(cursor.fetchone()[0])
        assert reached.wait(WAIT)
        try:
            while timezone.now() <= renewal_at + timedelta(milliseconds=100):  # the next month has begun
                time.sleep(0.05)
            return billing.lease_charges_run()
        finally:
            go.set()

    try:
        released, _ = run_in_threads(
            lambda: account_services.social_account_revoke(account_id=lease.social_account_id).released, job
        )
    finally:
        restore()

    lease.refresh_from_db()
    assert released is True and lease.released_at < renewal_at
    assert [c[0] for c in charges(lease)] == [0]  # the month that began after the release is not charged
    assert balance(owner) == -4900
