"""What keeps ops from doing the wrong thing by accident, and what rescues a fulfilment that died half-way:
acting on leases needs the permission to change them (viewing does not), a retired pool account stays out
of the pool, warming accounts are never offered, a pool account's leasing states are not edited by hand,
and a request left `provisioning` by a dead process is reopened with its accounts back in the pool."""

import uuid
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

from leasing import services
from leasing.models import MAX_MONTHLY_PRICE_CENTS, Lease, LeaseRequest, PoolAccount
from leasing.tasks import lease_requests_recover_interrupted
from tests.leasing.helpers import add_pool, get_request, request_accounts
from tests.staff import admin_object_url, staff_login, with_mfa

pytestmark = pytest.mark.django_db(transaction=True)


def staff_with(*codenames: str, mfa: bool = False) -> Client:
    user = get_user_model().objects.create_user("support", "support@layers.test", "pw-support-12345", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="leasing", codename__in=codenames))
    if mfa:
        with_mfa(user)
    client = Client()
    staff_login(client, user)
    return client


def fulfil_page(request_id: str) -> str:
    return admin_object_url(LeaseRequest, request_id)


def test_view_only_staff_see_a_request_but_cannot_take_assign_or_reject_it(owner):
    add_pool(1)
    accepted = request_accounts(owner, 1)
    support = staff_with("view_leaserequest")

    page = support.get(fulfil_page(accepted["requestId"]))
    assert page.status_code == 200
    text = page.content.decode()
    assert 'id="view-only"' in text and 'id="auto-assign"' not in text and 'id="reject"' not in text
    for action in ({"action": "take"}, {"action": "auto"}, {"action": "reject", "reason": "nope"}):
        assert support.post(fulfil_page(accepted["requestId"]), action).status_code == 403
    assert get_request(owner, accepted["requestId"])["status"] == "requested"
    assert not Lease.objects.exists()


def test_staff_without_any_leasing_permission_cannot_open_a_request(owner):
    accepted = request_accounts(owner, 1)
    assert staff_with().get(fulfil_page(accepted["requestId"])).status_code == 403


def test_staff_allowed_to_change_requests_still_fulfil_them(owner):
    add_pool(1)
    accepted = request_accounts(owner, 1)
    ops = staff_with("view_leaserequest", "change_leaserequest", mfa=True)
    ops.post(fulfil_page(accepted["requestId"]), {"action": "auto"})
    assert get_request(owner, accepted["requestId"])["status"] == "assigned"


def test_view_only_staff_cannot_release_a_lease(owner):
    add_pool(1)
    accepted = request_accounts(owner, 1)
    services.lease_assign(request_id=accepted["requestId"], auto=True)
    lease = Lease.objects.get()
    support = staff_with("view_lease")

    assert support.get("/admin/leasing/lease/").status_code == 200
    support.post("/admin/leasing/lease/", {"action": "release_leases", "post": "yes", "_selected_action": [lease.pk]})
    lease.refresh_from_db()
    assert lease.released_at is None


def test_a_pool_account_retired_while_leased_stays_retired_after_the_release(owner):
    (pool_id,) = add_pool(1)
    accepted = request_accounts(owner, 1)
    services.lease_assign(request_id=accepted["requestId"], auto=True)
    account_id = get_request(owner, accepted["requestId"])["socialAccountIds"][0]
    PoolAccount.objects.filter(pk=pool_id).update(status="retired", status_note="flagged by TikTok, do not re-lease")

    assert owner.client.delete(f"/v1/leased-accounts/{account_id}").status_code == 200

    pool = PoolAccount.objects.get(pk=pool_id)
    assert (pool.status, pool.status_note) == ("retired", "flagged by TikTok, do not re-lease")
    assert pool.access_token  # the token came home all the same


def test_accounts_still_warming_are_never_offered_nor_assigned(owner):
    warming, warm = add_pool(2)
    PoolAccount.objects.filter(pk=warming).update(warmup_state="warming")
    accepted = request_accounts(owner, 2)

    candidates = services.pool_candidates(request=LeaseRequest.objects.get(pk=accepted["requestId"]))
    assert [c.account.pk for c in candidates] == [warm]
    with pytest.raises(services.LeaseError, match="still warming up"):
        services.lease_assign(request_id=accepted["requestId"], pool_account_ids=[warming, warm])
    services.lease_assign(request_id=accepted["requestId"], auto=True)
    assert get_request(owner, accepted["requestId"])["status"] == "partial"
    assert PoolAccount.objects.get(pk=warming).status == "available"


def pool_form(pool_id: str, **changes: str) -> tuple[Client, str, dict]:
    """A signed-in ops client, the pool account's admin URL, and its form's data with `changes` over it."""
    ops = Client()
    name = f"ops-{uuid.uuid4().hex[:8]}"
    staff_login(ops, with_mfa(get_user_model().objects.create_superuser(name, f"{name}@layers.test", "pw-ops-12345")))
    url = admin_object_url(PoolAccount, pool_id)
    page = ops.get(url)
    assert page.status_code == 200 and page.context, (page.status_code, page.get("Location"), page.content[:300])
    form = page.context["adminform"].form
    return ops, url, {**{field: form[field].value() or "" for field in form.fields}, **changes}


def save_pool_account(pool_id: str, **changes: str):
    """Submit the pool account's admin form as ops would, with `changes` over what it shows."""
    ops, url, data = pool_form(pool_id, **changes)
    return ops.post(url, data)


def test_leasing_states_of_a_pool_account_are_not_set_by_hand(owner):
    (pool_id,) = add_pool(1)

    assert "available or retired" in save_pool_account(pool_id, status="leased").content.decode()
    assert PoolAccount.objects.get(pk=pool_id).status == "available"
    accepted = request_accounts(owner, 1)
    services.lease_assign(request_id=accepted["requestId"], auto=True)
    assert "release its lease first" in save_pool_account(pool_id, status="available").content.decode()
    assert PoolAccount.objects.get(pk=pool_id).status == "leased"


def retire_without_tokens(pool_id: str) -> None:
    """The pool account as a live-mode import leaves it: no tokens, retired until staff connect it."""
    PoolAccount.objects.filter(pk=pool_id).update(
        status="retired", status_note=services.RETIRED_NO_TOKENS, access_token_enc="", refresh_token_enc=""
    )


def test_an_account_without_a_token_is_not_made_available_by_hand(owner):
    """Made available by editing its status, an account imported without tokens was auto-assigned and the
    partner's request failed. Only "Connect on TikTok" gives it a token and makes it available."""
    (pool_id,) = add_pool(1)
    retire_without_tokens(pool_id)

    page = save_pool_account(pool_id, status="available")

    assert page.status_code == 200 and "errorlist" in page.content.decode()
    assert "Connect on TikTok" in page.content.decode()
    pool = PoolAccount.objects.get(pk=pool_id)
    assert (pool.status, pool.status_note) == ("retired", services.RETIRED_NO_TOKENS)


def test_auto_assign_never_picks_an_available_account_without_a_token(owner):
    """However an account without a token came to be available (an UPDATE by hand), auto-assign does not
    offer it: the request stays open for a better match instead of failing the partner's request."""
    no_token, good = add_pool(2)
    retire_without_tokens(no_token)
    PoolAccount.objects.filter(pk=no_token).update(status="available", status_note="")
    accepted = request_accounts(owner, 1)

    candidates = services.pool_candidates(request=LeaseRequest.objects.get(pk=accepted["requestId"]))
    assert [c.account.pk for c in candidates] == [good]
    PoolAccount.objects.filter(pk=good).update(status="retired", status_note="banned in the US")
    with pytest.raises(services.LeaseError, match="No available pool account matches"):
        services.lease_assign(request_id=accepted["requestId"], auto=True)
    assert get_request(owner, accepted["requestId"])["status"] == "requested"
    assert PoolAccount.objects.get(pk=no_token).status == "available"


def test_an_account_made_available_by_hand_loses_its_stale_retirement_note(owner):
    (pool_id,) = add_pool(1)  # it has a token: TikTok refused a refresh once, ops judge it fine
    PoolAccount.objects.filter(pk=pool_id).update(status="retired", status_note=services.RETIRED_DEAD_AT_REFRESH)

    assert save_pool_account(pool_id, status="available").status_code == 302

    pool = PoolAccount.objects.get(pk=pool_id)
    assert (pool.status, pool.status_note) == ("available", "")


def test_a_price_past_the_typo_guard_is_refused_by_the_pool_form(db):
    (pool_id,) = add_pool(1)

    page = save_pool_account(pool_id, monthly_price_cents=str(MAX_MONTHLY_PRICE_CENTS + 1))

    assert page.status_code == 200 and "less than or equal to" in page.content.decode()
    assert PoolAccount.objects.get(pk=pool_id).monthly_price_cents == 4900


def test_a_request_left_provisioning_by_a_dead_process_is_reopened_with_its_accounts(owner, monkeypatch):
    (pool_id,) = add_pool(1)
    accepted = request_accounts(owner, 1)

    def process_killed(accounts):
        raise SystemExit("web worker killed while checking tokens")

    with monkeypatch.context() as dying:
        dying.setattr(services, "_check_tokens", process_killed)
        with pytest.raises(SystemExit):
            services.lease_assign(request_id=accepted["requestId"], auto=True)
    assert get_request(owner, accepted["requestId"])["status"] == "provisioning"
    assert PoolAccount.objects.get(pk=pool_id).status == "reserved"
    with pytest.raises(services.LeaseError):  # nobody can act on it meanwhile
        services.lease_assign(request_id=accepted["requestId"], auto=True)

    assert lease_requests_recover_interrupted.apply().result == 0  # an assignment may take minutes
    later = timezone.now() + timedelta(minutes=16)
    assert services.lease_requests_recover_interrupted(now=later) == 1
    assert services.lease_requests_recover_interrupted(now=later) == 0

    assert get_request(owner, accepted["requestId"])["status"] == "failed"
    assert PoolAccount.objects.get(pk=pool_id).status == "available"
    services.lease_assign(request_id=accepted["requestId"], auto=True)
    assert get_request(owner, accepted["requestId"])["status"] == "assigned"


def test_one_request_that_cannot_be_recovered_does_not_keep_the_others_stuck(owner, monkeypatch):
    add_pool(2)
    stuck = [request_accounts(owner, 1)["requestId"] for _ in range(2)]

    def process_killed(accounts):
        raise SystemExit("web worker killed while checking tokens")

    with monkeypatch.context() as dying:
        dying.setattr(services, "_check_tokens", process_killed)
        for request_id in stuck:
            with pytest.raises(SystemExit):
                services.lease_assign(request_id=request_id, auto=True)
    real_latest = services._latest_attempt

    def unreadable_history(request):
        if request.pk == stuck[0]:
            raise ValueError("an attempt row this code cannot read")
        return real_latest(request)

    monkeypatch.setattr(services, "_latest_attempt", unreadable_history)

    assert services.lease_requests_recover_interrupted(now=timezone.now() + timedelta(minutes=16)) == 1

    assert get_request(owner, stuck[0])["status"] == "provisioning"  # left for staff, logged
    recovered = get_request(owner, stuck[1])
    assert recovered["status"] == "failed"
    assert recovered["failureReason"].endswith("Layers staff will assign accounts again.")  # written for the partner


def test_an_assignment_that_stalled_past_its_recovery_leaves_the_request_as_it_has_become(owner):
    from unittest import mock

    import time_machine

    (pool_id,) = add_pool(1)
    request_id = request_accounts(owner, 1)["requestId"]
    real_check = services._check_tokens
    calls = []

    def stalls_then_continues(accounts):
        calls.append(1)
        if len(calls) == 1:  # the first assignment hangs here; meanwhile its request is recovered and reassigned
            with time_machine.travel(timezone.now() + timedelta(minutes=20)):
                assert services.lease_requests_recover_interrupted() == 1
            services.lease_assign(request_id=request_id, pool_account_ids=[pool_id])
            assert get_request(owner, request_id)["status"] == "assigned"
        return real_check(accounts)

    with mock.patch.object(services, "_check_tokens", side_effect=stalls_then_continues):
        services.lease_assign(request_id=request_id, pool_account_ids=[pool_id])

    # The stalled one finished last and changed nothing: still assigned, one live lease, the partner's last
    # event (lease_request.assigned) still true.
    detail = get_request(owner, request_id)
    assert detail["status"] == "assigned" and len(detail["socialAccountIds"]) == 1
    assert Lease.objects.filter(pool_account_id=pool_id, released_at__isnull=True).count() == 1
    assert PoolAccount.objects.get(pk=pool_id).status == "leased"


def test_the_request_page_shows_what_the_partner_is_billed_not_todays_pool_price(owner):
    (pool_id,) = add_pool(1, price=4900)
    rid = request_accounts(owner, 1)["requestId"]
    services.lease_assign(request_id=rid, auto=True)
    leased_as = Lease.objects.get(request_id=rid).handle
    PoolAccount.objects.filter(pk=pool_id).update(monthly_price_cents=9900, handle="renamed.by.ops")
    ops = staff_with("view_leaserequest")

    page = ops.get(fulfil_page(rid)).content.decode()

    assigned = page[page.index('id="assigned"') :]
    assert f"@{leased_as}" in assigned and "$49.00/month" in assigned
    assert "renamed.by.ops" not in assigned and "$99.00" not in assigned


def test_ops_see_a_past_due_wallet_before_assigning_more_accounts(owner):
    from billing.services import wallet_top_up

    add_pool(2, price=4900)
    services.lease_assign(request_id=request_accounts(owner, 1)["requestId"], auto=True)  # empty wallet: -$49.00
    rid = request_accounts(owner, 1)["requestId"]
    ops = staff_with("view_leaserequest", "change_leaserequest", mfa=True)

    page = ops.get(fulfil_page(rid)).content.decode()

    assert 'id="candidates"' in page  # the account is ready to assign, and ops still may (README, Billing)
    wallet = page[page.index('id="wallet"') :]
    assert "-$49.00" in wallet and "past due since" in wallet
    assert "every account assigned now adds its first month to the debt" in wallet

    wallet_top_up(organization=owner.org, cents=10_000, reason="bank transfer")
    wallet = ops.get(fulfil_page(rid)).content.decode()
    assert "$51.00" in wallet[wallet.index('id="wallet"') :] and "past due" not in wallet
