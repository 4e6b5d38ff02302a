"""The most platform calls one web request makes (WEB_REQUEST_PLATFORM_CALLS) sets gunicorn's graceful_timeout:
a deploy's SIGTERM lets a request in flight run that many platform calls, each its whole deadline. A request
that can make more is cut by the deploy mid-way: a customer's OAuth callback after TikTok used up the code, a
disconnect after its token was wiped but before the grant was revoked. Each web request that calls a platform
is driven here down its worst path, every call counted as it leaves for the platform (answered by the sandbox,
or by an override standing for the platform's refusal), and must stay within the constant: a call added to one
of these paths fails its test until the constant (and so the grace) is raised with it. Tasks the request
queues are held (a worker runs them, not the request; the test settings would run them inline)."""

from datetime import timedelta
from unittest import mock
from urllib.parse import urlsplit

import pytest
from django.test import Client
from django.utils import timezone

from accounts import services as account_services
from accounts.models import OAuthSession, SocialAccount
from accounts.platforms.http import WEB_REQUEST_PLATFORM_CALLS
from accounts.platforms.sandbox.models import Token
from leasing import services as leasing_services
from leasing.models import Lease, LeaseRequest, PoolAccount
from tests.accounts.oauth_helpers import RETURN_URL, connected_account, follow_callback, sent_back_to, start
from tests.leasing.helpers import add_pool, get_request, request_accounts
from tests.platform_helpers import consent, held_tasks, in_turn, intercepted, refused
from tests.staff import admin_object_url, staff_login, superuser

pytestmark = pytest.mark.django_db(transaction=True)

TIKTOK = "/sandbox/tiktok/v2"
# TikTok refusing `username` (user.info.profile taken back): the client asks again without it.
PROFILE_SCOPE_REFUSED = refused(
    401, {"data": {}, "error": {"code": "scope_not_authorized", "message": "scope", "log_id": "x"}}
)
TIKTOK_DOWN = refused(500, {"data": {}, "error": {"code": "internal_error", "message": "down", "log_id": "x"}})
# TikTok's revoke refusing the token (expired by its clock): renewed with the refresh token and revoked again.
REVOKE_REFUSED = refused(400, {"error": "invalid_grant", "error_description": "token expired"})
INSTAGRAM_DOWN = refused(500, {"error": {"message": "down", "type": "OAuthException", "code": 2, "is_transient": True}})
# The TikTok callback's worst path: the code exchange; the profile, refused for `username`, asked again without
# it; then the grant bound to nothing withdrawn: the revoke refused, the refresh, the revoke again.
TIKTOK_CALLBACK_WORST = [
    f"POST {TIKTOK}/oauth/token/",
    f"GET {TIKTOK}/user/info/",
    f"GET {TIKTOK}/user/info/",
    f"POST {TIKTOK}/oauth/revoke/",
    f"POST {TIKTOK}/oauth/token/",
    f"POST {TIKTOK}/oauth/revoke/",
]
# A TikTok revoke at its worst (accounts.services._revoke_at_platform).
TIKTOK_REVOKE_WORST = [f"POST {TIKTOK}/oauth/revoke/", f"POST {TIKTOK}/oauth/token/", f"POST {TIKTOK}/oauth/revoke/"]


def within_budget(calls: list[str]) -> None:
    assert len(calls) <= WEB_REQUEST_PLATFORM_CALLS, (
        f"{len(calls)} platform calls in one web request, more than the WEB_REQUEST_PLATFORM_CALLS "
        f"({WEB_REQUEST_PLATFORM_CALLS}) gunicorn's grace is made for: {calls}"
    )


def live_tokens(platform: str, username: str) -> int:
    return Token.objects.filter(platform=platform, username=username, revoked_at__isnull=True).count()


def reauth_link(tenant, account_id: str) -> dict:
    response = tenant.client.post(
        f"/v1/projects/{tenant.project.id}/social/reauth-url", {"socialAccountId": account_id}, format="json"
    )
    assert response.status_code == 200, response.content
    return response.json()


def ops_browser() -> tuple:
    staff = superuser("ops")
    return staff, staff_login(Client(), staff)


# --- The OAuth callbacks ----------------------------------------------------------------------------


def test_a_tiktok_connect_callback_at_its_worst_stays_within_the_budget(owner):
    location = consent("tiktok", start(owner, "tiktok")["authorizeUrl"], "worst.connect")
    calls: list[str] = []
    overrides = {
        "/v2/user/info/": in_turn(PROFILE_SCOPE_REFUSED, TIKTOK_DOWN),
        "/v2/oauth/revoke/": in_turn(REVOKE_REFUSED),
    }
    with intercepted(overrides, calls=calls), held_tasks():
        response = follow_callback(location)

    assert response["Location"] == f"{RETURN_URL}?layers_oauth_error=platform_error"
    assert live_tokens("tiktok", "worst.connect") == 0  # the grant was withdrawn: the path was walked to its end
    assert calls == TIKTOK_CALLBACK_WORST
    within_budget(calls)


def test_a_tiktok_reauth_callback_at_its_worst_stays_within_the_budget(owner):
    # Consented as another user (account_mismatch) after the profile's retry: that user's grant is withdrawn.
    account = connected_account(owner, "tiktok", "right.creator")
    location = consent("tiktok", reauth_link(owner, account["id"])["authorizeUrl"], "wrong.creator")
    calls: list[str] = []
    overrides = {"/v2/user/info/": in_turn(PROFILE_SCOPE_REFUSED), "/v2/oauth/revoke/": in_turn(REVOKE_REFUSED)}
    with intercepted(overrides, calls=calls), held_tasks():
        response = follow_callback(location)

    assert response["Location"] == f"{RETURN_URL}?layers_oauth_error=account_mismatch"
    assert live_tokens("tiktok", "wrong.creator") == 0
    assert calls == TIKTOK_CALLBACK_WORST
    within_budget(calls)


def test_a_staff_pool_connect_callback_at_its_worst_stays_within_the_budget():
    staff, browser = ops_browser()
    pool = PoolAccount.objects.get(pk=add_pool(1)[0])
    link = account_services.oauth_pool_session_start(
        pool_account=pool, staff_user=staff, return_url=admin_object_url(PoolAccount, pool.pk)
    )
    location = consent("tiktok", link.authorize_url, "someone.else")
    calls: list[str] = []
    overrides = {
        "/v2/user/info/": in_turn(PROFILE_SCOPE_REFUSED, TIKTOK_DOWN),
        "/v2/oauth/revoke/": in_turn(REVOKE_REFUSED),
    }
    with intercepted(overrides, calls=calls), held_tasks():
        parts = urlsplit(location)
        response = browser.get(f"{parts.path}?{parts.query}")

    assert response.status_code == 302, response.content
    assert OAuthSession.objects.get(pk=link.session.pk).status == "failed"
    assert live_tokens("tiktok", "someone.else") == 0
    assert calls == TIKTOK_CALLBACK_WORST
    within_budget(calls)


def test_an_instagram_connect_callback_at_its_worst_stays_within_the_budget(owner):
    # Three calls for the code (short-lived token, long-lived token, /me), the profile failing, the revoke (no
    # refresh token: nothing more can be done with a refused one).
    location = consent("instagram", start(owner, "instagram")["authorizeUrl"], "worst.insta")
    calls: list[str] = []
    overrides = {"/me/permissions": in_turn(None), "/me": in_turn(None, INSTAGRAM_DOWN)}
    with intercepted(overrides, calls=calls), held_tasks():
        response = follow_callback(location)

    assert response["Location"] == sent_back_to("instagram", f"{RETURN_URL}?layers_oauth_error=platform_error")
    assert live_tokens("instagram", "worst.insta") == 0
    assert len(calls) == 5 and calls[-1].startswith("DELETE ") and calls[-1].endswith("/me/permissions"), calls
    within_budget(calls)


# --- Disconnects and releases -----------------------------------------------------------------------


def test_a_partners_disconnect_at_its_worst_stays_within_the_budget(owner):
    account = connected_account(owner, "tiktok", "leaving")
    calls: list[str] = []
    with intercepted({"/v2/oauth/revoke/": in_turn(REVOKE_REFUSED)}, calls=calls), held_tasks():
        response = owner.client.delete(f"/v1/social-accounts/{account['id']}")

    assert response.status_code == 200 and response.json()["status"] == "disconnected"
    assert live_tokens("tiktok", "leaving") == 0
    assert calls == TIKTOK_REVOKE_WORST
    within_budget(calls)


def leases(owner, count: int = 1) -> list[Lease]:
    add_pool(count)
    accepted = request_accounts(owner, count)
    leasing_services.lease_assign(request_id=accepted["requestId"], auto=True)
    return list(Lease.objects.filter(request_id=accepted["requestId"]))


def test_a_partners_lease_release_calls_no_platform(owner):
    (lease,) = leases(owner)
    calls: list[str] = []
    with intercepted({}, calls=calls), held_tasks() as held:
        response = owner.client.delete(f"/v1/leased-accounts/{lease.social_account_id}")

    assert response.status_code == 200, response.content
    assert calls == []
    assert "pool_account_check" in [task.name.rsplit(".", 1)[-1] for task, _ in held]  # a worker checks it


def test_staff_releasing_selected_leases_calls_no_platform(owner):
    selected = leases(owner, 3)
    _, ops = ops_browser()
    calls: list[str] = []
    with intercepted({}, calls=calls), held_tasks():
        ops.post(
            "/admin/leasing/lease/",
            {"action": "release_leases", "post": "yes", "_selected_action": [lease.pk for lease in selected]},
        )

    assert Lease.objects.filter(released_at__isnull=False).count() == 3
    assert calls == []


# --- The back office: actions on many accounts at once ----------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 5])
def test_staff_revoking_selected_accounts_stays_within_the_budget_and_a_worker_revokes_the_rest(owner, count):
    # Each revoke at its worst: TikTok refuses the token, it is renewed and revoked again (three calls).
    # Revoked in the admin's request, 50 accounts made 150 calls there.
    ids = [connected_account(owner, "tiktok", f"revoked.{n}")["id"] for n in range(count)]
    staff, ops = ops_browser()
    calls: list[str] = []
    refused_first = {"/v2/oauth/revoke/": in_turn(*[REVOKE_REFUSED, None] * count)}
    with intercepted(refused_first, calls=calls), held_tasks() as held:
        answer = ops.post(
            "/admin/accounts/socialaccount/",
            {"action": "revoke_accounts", "post": "yes", "_selected_action": ids},
            follow=True,
        )

    within_budget(calls)
    inline = min(count, WEB_REQUEST_PLATFORM_CALLS // account_services.REVOKE_PLATFORM_CALLS)
    assert calls == TIKTOK_REVOKE_WORST * inline
    # The rest handed on in one task (TASK_ROWS ids to a task), not one broker call per account.
    revokes = [(task, args) for task, args in held if task.name.endswith("social_accounts_revoke_by_staff")]
    assert len(revokes) == (1 if count > inline else 0)
    assert sum(len(args[0]) for _, args in revokes) == count - inline
    text = answer.content.decode()
    assert text.count("disconnected, 0 queued post(s) canceled") == inline
    assert text.count("a worker disconnects it in a moment") == count - inline

    with intercepted(refused_first), held_tasks():
        for task, args in revokes:
            task.run(*args)  # the worker
    assert SocialAccount.objects.filter(pk__in=ids, status="disconnected").count() == count
    assert all(live_tokens("tiktok", f"revoked.{n}") == 0 for n in range(count))
    # the worker's revokes are the staff member's, as the ones made in the request
    sources = SocialAccount.objects.get(pk=ids[-1]).status_changes.order_by("-at").first().source
    assert staff.get_username() in sources, sources


def test_staff_revoking_when_the_task_queue_is_down_leaves_the_rest_as_they_are(owner):
    from tests.outages import broker_down

    ids = [connected_account(owner, "tiktok", f"kept.{n}")["id"] for n in range(4)]
    _, ops = ops_browser()
    with mock.patch("accounts.tasks.social_accounts_revoke_by_staff.delay", broker_down):
        answer = ops.post(
            "/admin/accounts/socialaccount/",
            {"action": "revoke_accounts", "post": "yes", "_selected_action": ids},
            follow=True,
        )
    text = answer.content.decode()
    assert text.count("the task queue did not take its revoke. Revoke it again.") == 2
    assert SocialAccount.objects.filter(pk__in=ids, status="disconnected").count() == 2


def assign_with_the_worker_held(ops, request_id: str, *, calls: list[str] | None = None):
    """Staff auto-assign `request_id` in the admin with the queued tasks held back, as a worker would take them
    later: (the admin's answer, the held lease_assign_check task, its args). The request's platform calls are
    appended to `calls`."""
    with intercepted({}, calls=[] if calls is None else calls), held_tasks() as held:
        answer = ops.post(admin_object_url(LeaseRequest, request_id), {"action": "auto"}, follow=True)
    (task, args), *_ = [(task, args) for task, args in held if task.name.endswith("lease_assign_check")]
    return answer, task, args


def test_staff_assigning_a_large_lease_request_leaves_the_token_checks_to_a_worker(owner):
    # A day in the pool expires a TikTok access token: each account's check refreshes it, then reads the profile
    # (up to six calls each). Checked in the admin's request, 50 accounts made over 100 calls there.
    pool_ids = add_pool(5)
    accepted = request_accounts(owner, 5)
    PoolAccount.objects.update(token_expires_at=timezone.now() - timedelta(hours=1))
    _, ops = ops_browser()
    page = admin_object_url(LeaseRequest, accepted["requestId"])
    calls: list[str] = []
    answer, task, args = assign_with_the_worker_held(ops, accepted["requestId"], calls=calls)

    within_budget(calls)
    assert calls == []
    text = answer.content.decode()
    assert "a worker is checking their TikTok tokens" in text
    assert 'id="checking"' in text and "5 reserved account(s)" in text
    assert get_request(owner, accepted["requestId"])["status"] == "provisioning"
    assert PoolAccount.objects.filter(pk__in=pool_ids, status="reserved").count() == 5

    with intercepted({}, calls=calls), held_tasks():
        task.run(*args)  # the worker
    assert len(calls) == 10  # a refresh and a profile read per account, in the worker
    assert get_request(owner, accepted["requestId"])["status"] == "assigned"
    text = ops.get(page).content.decode()
    assert 'id="checking"' not in text and text.count("→ <code>sa_") == 5

    # A second delivery of the same message finds the attempt over: nothing more is leased, nothing asked.
    calls.clear()
    with intercepted({}, calls=calls), held_tasks():
        assert task.run(*args) == "assigned"
    assert calls == [] and Lease.objects.count() == 5


def test_an_assignment_the_task_queue_refuses_fails_at_once_and_says_so(owner):
    from tests.outages import broker_down

    pool_ids = add_pool(2)
    accepted = request_accounts(owner, 2)
    _, ops = ops_browser()
    with mock.patch("leasing.tasks.lease_assign_check.delay", broker_down):
        answer = ops.post(admin_object_url(LeaseRequest, accepted["requestId"]), {"action": "auto"}, follow=True)

    text = answer.content.decode()
    assert "The assignment failed, nothing was leased" in text and "task queue" in text
    assert get_request(owner, accepted["requestId"])["status"] == "failed"  # open again: staff assign again
    assert PoolAccount.objects.filter(pk__in=pool_ids, status="available").count() == 2


def test_a_token_check_delivered_after_its_assignment_was_given_up_asks_tiktok_nothing(owner):
    # The worker's message arrives after the recovery gave the attempt up (the accounts are back in the pool,
    # maybe reserved again by another staff member): checking them now would refresh, and TikTok rotate, pool
    # tokens for an attempt that is over.
    pool_ids = add_pool(2)
    accepted = request_accounts(owner, 2)
    PoolAccount.objects.update(token_expires_at=timezone.now() - timedelta(hours=1))
    _, ops = ops_browser()
    _, task, args = assign_with_the_worker_held(ops, accepted["requestId"])
    later = timezone.now() + leasing_services.PROVISIONING_INTERRUPTED_AFTER + timedelta(minutes=1)
    assert leasing_services.lease_requests_recover_interrupted(now=later) == 1
    tokens = dict(PoolAccount.objects.values_list("pk", "refresh_token_enc"))

    calls: list[str] = []
    with intercepted({}, calls=calls), held_tasks():
        assert task.run(*args) == "failed"

    assert calls == []
    assert PoolAccount.objects.filter(pk__in=pool_ids, status="available").count() == 2
    assert dict(PoolAccount.objects.values_list("pk", "refresh_token_enc")) == tokens


def test_the_workers_binding_is_recorded_under_the_staff_member_who_assigned(owner):
    add_pool(2)
    accepted = request_accounts(owner, 2)
    staff, ops = ops_browser()
    _, task, args = assign_with_the_worker_held(ops, accepted["requestId"])
    with intercepted({}), held_tasks():
        assert task.run(*args) == "assigned"
    from leasing.models import LeaseAction

    done = LeaseAction.objects.filter(request_id=accepted["requestId"]).latest("created_at", "pk")
    assert done.actor_id is not None and done.actor_id == LeaseAction.objects.get(pk=args[1]).actor_id
