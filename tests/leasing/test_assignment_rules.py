"""Rules of fulfilment that no other test pinned: which of several matching pool accounts auto-assign leases
(the partner pays that account's price), and a decided request staying decided."""

import time

import pytest
import time_machine
from django.contrib.auth import get_user_model

from accounts.models import Event
from accounts.platforms.base import TokenInvalid
from leasing import services
from leasing.models import Lease, LeaseRequest, PoolAccount
from tests.concurrency import held_open
from tests.leasing.helpers import add_pool, get_request, request_accounts

pytestmark = pytest.mark.django_db(transaction=True)


def test_auto_assign_takes_the_widest_geo_overlap_then_the_cheaper_account(owner):
    # Created first, so that neither rule is met by the pool's order alone.
    (us_only,) = add_pool(1, geos=("US",), price=2900)
    (dearer,) = add_pool(1, geos=("US", "CA"), price=5900)
    (cheaper,) = add_pool(1, geos=("US", "CA"), price=3900)
    rid = request_accounts(owner, 1, geo=["US", "CA"])["requestId"]

    ranked = [c.account.pk for c in services.pool_candidates(request=LeaseRequest.objects.get(pk=rid))]
    assert ranked == [cheaper, dearer, us_only]

    services.lease_assign(request_id=rid, auto=True)
    lease = Lease.objects.get(request_id=rid)
    assert lease.pool_account_id == cheaper and lease.monthly_price_cents == 3900


@pytest.mark.parametrize("decided", ["assigned", "rejected"])
def test_a_decided_request_cannot_be_rejected(owner, decided):
    add_pool(1)
    rid = request_accounts(owner, 1)["requestId"]
    if decided == "assigned":
        services.lease_assign(request_id=rid, auto=True)
    else:
        services.lease_request_reject(request_id=rid, reason="No accounts in CA yet")
    before = get_request(owner, rid)

    with pytest.raises(services.LeaseError, match="can no longer be rejected"):
        services.lease_request_reject(request_id=rid, reason="changed our mind")

    assert get_request(owner, rid) == before
    assert Event.objects.filter(type="lease_request.rejected").count() == (decided == "rejected")


def test_the_vertical_matches_whatever_its_case(owner):
    # Partners write their niche as they like ("Fitness"); ops stock the pool as "fitness".
    (pool_id,) = add_pool(1, vertical="fitness")
    rid = request_accounts(owner, 1, vertical="Fitness")["requestId"]

    services.lease_assign(request_id=rid, auto=True)

    assert Lease.objects.get(request_id=rid).pool_account_id == pool_id


def test_a_failed_request_can_be_taken_for_review_again(owner, monkeypatch):
    # A failed assignment leaves the request open (README: staff assign again); the staff member who picks it
    # up takes it first, so that a colleague does not work it at the same time.
    staff = get_user_model().objects.create_superuser("ops", "ops@layers.test", "pw-ops-12345")
    add_pool(1)
    rid = request_accounts(owner, 1)["requestId"]
    monkeypatch.setattr(services, "_check_tokens", lambda accounts: (["TikTok said no"], []))
    services.lease_assign(request_id=rid, auto=True)
    assert LeaseRequest.objects.get(pk=rid).status == LeaseRequest.Status.FAILED

    services.lease_request_take(request_id=rid, actor=staff)

    request = LeaseRequest.objects.get(pk=rid)
    assert request.status == LeaseRequest.Status.IN_REVIEW and request.reviewer == staff


def test_auto_assign_while_another_holds_the_best_account_takes_the_next_one_without_waiting(owner, sibling):
    # Two staff members auto-assign requests of two partners at the same moment: the first has locked the best
    # account and not committed yet. The second takes the next free one (SKIP LOCKED), rather than waiting for
    # the first and then finding nothing left to take ("No available pool account"), while an account it could
    # have had is still free. (Two requests of one organization queue on its row: the off-boarding check.)
    best, second = add_pool(2)
    first_rid = request_accounts(owner, 1)["requestId"]
    second_rid = request_accounts(sibling, 1)["requestId"]

    def reserve():
        return services._reserve(request_id=first_rid, pool_account_ids=None, auto=True, actor=None)

    with held_open(reserve, timeout=5) as first:
        started = time.monotonic()
        services.lease_assign(request_id=second_rid, auto=True)
        waited = time.monotonic() - started

    assert [a.pk for a in first.result[0]] == [best]
    assert Lease.objects.get(request_id=second_rid).pool_account_id == second
    assert waited < 4  # it did not queue behind the first assignment's lock


def test_a_returned_account_refused_with_a_token_replaced_meanwhile_is_checked_with_the_new_one(owner, monkeypatch):
    # The check after a release reads the account, then TikTok refuses its token: in between, ops connected the
    # account again (a new pair is stored). The refusal was about the old token; the account is fine and stays
    # in the pool, instead of being retired as dead and lost to ops until someone reconnects it again.
    from accounts.platforms.tiktok import TikTokClient

    (pool_id,) = add_pool(1)
    pool = PoolAccount.objects.get(pk=pool_id)
    old_access = pool.access_token
    real_profile = TikTokClient.get_profile

    def profile(self, *, access_token, **kwargs):
        if access_token == old_access:
            fresh = PoolAccount.objects.get(pk=pool_id)
            services.pool_account_set_tokens(fresh, services.sandbox_tokens_for(fresh.handle))
            fresh.save(update_fields=services.POOL_TOKEN_FIELDS)
            raise TokenInvalid("tiktok: access token invalid", code="access_token_invalid", status=401)
        return real_profile(self, access_token=access_token, **kwargs)

    monkeypatch.setattr(TikTokClient, "get_profile", profile)

    assert services.pool_account_check(pool_account_id=pool_id) == "ok"
    pool.refresh_from_db()
    assert pool.status == PoolAccount.Status.AVAILABLE and pool.access_token != old_access


def test_a_pool_refresh_finishing_after_a_staff_connect_keeps_the_connects_tokens(owner):
    # The beat refreshes an idle pool account; while TikTok answers, ops connect the account again ("Connect on
    # TikTok" stores the consent's pair). The refresh's answer must not overwrite the pair ops just stored: it
    # only lands where the account still holds the refresh token the call was made with.
    from tests.platform_helpers import intercepted
    from tests.scheduling.publish_helpers import later

    (pool_id,) = add_pool(1)
    connected = {}

    def tiktok_answering(request, sandbox):
        pool = PoolAccount.objects.get(pk=pool_id)
        tokens = services.sandbox_tokens_for(pool.handle)
        services.pool_account_set_tokens(pool, tokens)
        pool.save(update_fields=services.POOL_TOKEN_FIELDS)
        connected["access"] = tokens.access_token
        return sandbox.handle_request(request)

    with time_machine.travel(later(hours=20), tick=True), intercepted({"/oauth/token/": tiktok_answering}):
        assert services.pool_account_refresh(pool_account_id=pool_id) == "renewed"

    assert PoolAccount.objects.get(pk=pool_id).access_token == connected["access"]
