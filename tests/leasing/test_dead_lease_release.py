"""A leased account known to be dead when it is released (its binding `reauth_required`) does not go back to the
pool as `available`: the check after a release cannot be trusted to catch it — a token without the publishing
permission still reads the profile, and a TikTok 5xx during the check leaves the account as it is, with no
retry — and the next partner would lease it, be charged its first month and see its first post fail."""

import pytest
from django.test import Client

from accounts import services as account_services
from leasing import services
from leasing.models import Lease, LeaseAction, LeaseRequest, PoolAccount
from tests.config.test_admin_confirmations import choose, confirm, text_of
from tests.leasing.helpers import add_pool, get_request, request_accounts
from tests.leasing.test_pool_admin import connect_on_tiktok
from tests.platform_helpers import inject_fault, invalidate_tokens
from tests.staff import staff_login, superuser

pytestmark = pytest.mark.django_db(transaction=True)


def lease_one(tenant):
    (pool_id,) = add_pool(1)
    accepted = request_accounts(tenant, 1)
    services.lease_assign(request_id=accepted["requestId"], auto=True)
    account_id = get_request(tenant, accepted["requestId"])["socialAccountIds"][0]
    return pool_id, account_id, PoolAccount.objects.get(pk=pool_id).handle


def token_dies(account_id: str, handle: str) -> None:
    """TikTok invalidates the token and the health check finds it: the partner's account is reauth_required."""
    invalidate_tokens("tiktok", handle)
    assert account_services.social_account_check_health(account_id=account_id) == "reauth_required"


def publishing_refused(account_id: str, handle: str) -> None:
    """A post was refused for a missing permission (the grant lacks video.publish): reauth_required, though
    the token still reads the profile, which is all the check after a release asks of it."""
    assert account_services.social_account_mark_reauth_required(
        account_id=account_id,
        reason="publishing the post: scope_not_authorized (video.publish not granted)",
        source="post sp_test",
    )


def release(tenant, how: str, account_id: str) -> None:
    """Release through one of the three paths; the partner's answer is the one any release gets."""
    if how == "leased-accounts":
        response = tenant.client.delete(f"/v1/leased-accounts/{account_id}")
        body = response.json()
        assert response.status_code == 200, body
        assert body["socialAccountId"] == account_id and body["canceledScheduledPosts"] == 0
        assert body["releasedAt"].endswith("Z") and body["paidThrough"].endswith("Z")
    elif how == "social-accounts":
        response = tenant.client.delete(f"/v1/social-accounts/{account_id}")
        assert response.status_code == 200 and response.json()["released"] is True
    else:
        ops = staff_login(Client(), superuser())
        lease = Lease.objects.get(social_account_id=account_id)
        done = confirm(ops, Lease, choose(ops, Lease, "release_leases", [lease.pk]))
        assert done.status_code == 200
    assert Lease.objects.get(social_account_id=account_id).released_at is not None


def assert_out_of_the_pool(pool_id: str, other_tenant) -> None:
    pool = PoolAccount.objects.get(pk=pool_id)
    assert pool.status == "retired" and pool.status_note == services.RETIRED_REAUTH_AT_RELEASE
    assert pool.access_token  # the token came home all the same: a reconnect replaces it
    # The next partner is not offered it, and auto-assign has nothing to give them.
    accepted = request_accounts(other_tenant, 1)
    request = LeaseRequest.objects.get(pk=accepted["requestId"])
    assert pool_id not in [c.account.pk for c in services.pool_candidates(request=request)]
    with pytest.raises(services.LeaseError, match="No available pool account"):
        services.lease_assign(request_id=accepted["requestId"], auto=True)
    assert not Lease.objects.filter(request=request).exists()


@pytest.mark.parametrize("how", ["leased-accounts", "social-accounts", "admin"])
@pytest.mark.parametrize("dies", [token_dies, publishing_refused], ids=["token-invalid", "publishing-refused"])
def test_a_leased_account_released_needing_a_reauth_is_retired_not_leased_to_the_next_partner(
    owner, sibling, how, dies
):
    pool_id, account_id, handle = lease_one(owner)
    dies(account_id, handle)

    release(owner, how, account_id)

    assert_out_of_the_pool(pool_id, sibling)
    # Ops read why in the lease's history: the release row says the account was retired and for what.
    released = LeaseAction.objects.get(lease__social_account_id=account_id, action="released")
    assert released.detail["pool_account"] == f"retired: {services.RETIRED_REAUTH_AT_RELEASE}"
    assert released.detail["reauth_reason"]


def test_a_dead_leased_account_released_during_a_tiktok_hiccup_does_not_fail_the_next_partners_request(owner, sibling):
    pool_id, account_id, handle = lease_one(owner)
    token_dies(account_id, handle)
    inject_fault("tiktok", handle, "server_error", 5)

    release(owner, "leased-accounts", account_id)

    assert_out_of_the_pool(pool_id, sibling)


def test_connecting_a_pool_account_retired_at_release_on_tiktok_makes_it_available_again(owner, sibling):
    pool_id, account_id, handle = lease_one(owner)
    token_dies(account_id, handle)
    release(owner, "leased-accounts", account_id)
    assert PoolAccount.objects.get(pk=pool_id).status == "retired"

    ops = staff_login(Client(), superuser())
    _, landed = connect_on_tiktok(ops, pool_id, handle)

    assert "It is available for leasing" in landed.content.decode()
    pool = PoolAccount.objects.get(pk=pool_id)
    assert (pool.status, pool.status_note) == ("available", "")
    accepted = request_accounts(sibling, 1)
    services.lease_assign(request_id=accepted["requestId"], auto=True)
    assert get_request(sibling, accepted["requestId"])["status"] == "assigned"


def test_a_healthy_leased_account_still_goes_back_to_the_pool_and_ops_retirements_stand(owner, sibling):
    # Retired by hand while leased, then found needing a reauth: the hand's note stays (a reconnect must not
    # put it back in the pool).
    retired_pool, retired_account, handle = lease_one(sibling)
    PoolAccount.objects.filter(pk=retired_pool).update(status="retired", status_note="flagged by TikTok")
    token_dies(retired_account, handle)
    release(sibling, "leased-accounts", retired_account)
    pool = PoolAccount.objects.get(pk=retired_pool)
    assert (pool.status, pool.status_note) == ("retired", "flagged by TikTok")

    pool_id, account_id, _ = lease_one(owner)
    release(owner, "leased-accounts", account_id)
    assert PoolAccount.objects.get(pk=pool_id).status == "available"
    assert "pool_account" not in LeaseAction.objects.get(lease__social_account_id=account_id, action="released").detail


def test_the_release_confirmation_says_an_account_needing_a_reauth_leaves_the_pool(owner):
    healthy_pool, healthy_account, _ = lease_one(owner)
    dead_pool, dead_account, handle = lease_one(owner)
    token_dies(dead_account, handle)
    ops = staff_login(Client(), superuser())
    leases = {pool: Lease.objects.get(pool_account_id=pool) for pool in (healthy_pool, dead_pool)}

    shown = text_of(choose(ops, Lease, "release_leases", [lease.pk for lease in leases.values()]))

    healthy_line = shown[shown.index(f"@{leases[healthy_pool].handle} leased to") :]
    dead_line = shown[shown.index(f"@{leases[dead_pool].handle} leased to") :]
    assert "the account goes back to the pool" in healthy_line.split("@")[1]
    dead_line = dead_line.split("@")[1]
    assert "goes back to the pool" not in dead_line and "needs a reauth" in dead_line and "retired" in dead_line


def test_a_pool_account_the_check_after_a_release_retires_says_so_in_the_leases_history(owner):
    # The pool account's note was the only trace of why it left the pool, and a reconnect clears it: the lease
    # it came back from now says it in its history, where ops look first.
    pool_id, account_id, handle = lease_one(owner)
    assert owner.client.delete(f"/v1/leased-accounts/{account_id}").status_code == 200
    invalidate_tokens("tiktok", handle)  # dies at TikTok after the partner let it go

    assert services.pool_account_check(pool_account_id=pool_id) == "retired"

    lease = Lease.objects.get(social_account_id=account_id)
    retired = LeaseAction.objects.get(lease=lease, action="retired")
    assert retired.detail == {"pool_account": handle, "reason": services.RETIRED_DEAD_AFTER_RELEASE}
    assert retired.by == "automation"
    assert services.pool_account_check(pool_account_id=pool_id) == "skipped"  # once
    assert LeaseAction.objects.filter(lease=lease, action="retired").count() == 1
