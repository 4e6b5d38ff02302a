"""The back-office: staff who can assign accounts or move money, and superusers, must have MFA activated (so must
those who can grant permissions: test_staff_permissions.py) before any admin page answers them (they are sent to
set it up, with a message), and the session must have presented it (a session signed in with the password
before TOTP existed is asked for a code); other staff are not affected. Every admin action leaves an audit row
naming who did it to which object; the custom money view records its actor in the ledger."""

import contextlib
import re
from datetime import timedelta

import pytest
from allauth.mfa.models import Authenticator
from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.cache import cache
from django.test import Client, RequestFactory
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from accounts.admin_site import AuditedActionsMixin
from accounts.models import ApiKey, SocialAccount
from billing.models import LedgerEntry
from scheduling.models import ScheduledPost
from tests.factories import make_account
from tests.scheduling.publish_helpers import schedule_now
from tests.staff import PASSWORD, signed_in, staff_login, staff_member, totp_code, with_mfa

pytestmark = pytest.mark.django_db

SETUP = reverse("mfa_activate_totp")
CODE = reverse("mfa_reauthenticate")


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    cache.clear()  # allauth's login and reauthentication rate limits live in the cache
    yield
    cache.clear()


def admin_urls() -> list[str]:
    """The admin index and every registered model's list, add and custom pages a browser can GET."""
    urls = [
        reverse("admin:index"),
        reverse("admin:billing_wallet_record"),
        reverse("admin:billing_monthlybilling_csv"),
        reverse("admin:billing_monthlybilling_wallets_csv"),
    ]
    for model in admin.site._registry:
        for view in ("changelist", "add"):
            with contextlib.suppress(NoReverseMatch):
                urls.append(reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}"))
    return urls


SENSITIVE = {
    "superuser": ((), True),
    "lease fulfilment": (("leasing.change_leaserequest",), False),
    "lease release": (("leasing.change_lease",), False),
    "money": (("billing.record_money",), False),
}


def test_staff_who_can_assign_accounts_or_move_money_reach_no_admin_page_before_setting_up_mfa(figures):
    urls = admin_urls()
    reached, checks = [], 0
    for kind, (permissions, superuser) in SENSITIVE.items():
        user = staff_member(kind.replace(" ", "-"), *permissions, "leasing.view_lease", superuser=superuser)
        client = signed_in(user)
        for url in urls:
            response = client.get(url)
            checks += 1
            if response.status_code != 302 or response["Location"] != SETUP:
                reached.append((kind, url, response.status_code))
    figures(
        "staff_mfa",
        cases=checks,
        faults_injected=None,
        losses=len(reached),
        staffKinds=len(SENSITIVE),
        adminPages=len(urls),
        pagesReachedWithoutMfa=len(reached),
    )
    assert len(urls) > 20
    assert reached == []


# Committed for real: allauth announces the new authenticator (authenticator_added) once the activation has
# committed, and that is when the activating session is recorded as having passed MFA.
@pytest.mark.django_db(transaction=True)
def test_the_redirect_explains_why_and_after_activating_totp_the_admin_opens(client):
    user = staff_member("finance", "billing.record_money", "billing.view_wallet")
    client = signed_in(user)

    # when they open the admin, they are sent to the TOTP setup with the reason
    page = client.get("/admin/billing/wallet/", follow=True)
    assert page.redirect_chain[0] == (SETUP, 302)
    assert "set up two-factor authentication" in page.content.decode()

    # allauth asks for the password again, then shows the secret; the code activates it
    client.post(f"{reverse('account_reauthenticate')}?next={SETUP}", {"password": PASSWORD})
    setup = client.get(SETUP)
    assert setup.status_code == 200
    secret = client.session["mfa.totp.secret"]
    # The page printing the authenticator's secret is kept by no cache (a shared browser's, a proxy's), as
    # every admin page is not (it had no Cache-Control at all); nor is any other staff page.
    assert secret in setup.content.decode() and "no-store" in setup["Cache-Control"]
    assert "no-store" in client.get(reverse("mfa_index"))["Cache-Control"]
    assert client.post(SETUP, {"code": totp_code(secret)}).status_code == 302

    # then the admin answers
    assert client.get("/admin/billing/wallet/").status_code == 200
    # and the admin's sign-out was never blocked
    assert client.post(reverse("admin:logout")).status_code in (200, 302)


def activate_totp_in_own_browser(user) -> str:
    """The real staff member sets up TOTP through allauth's pages, in their own browser; returns the secret."""
    own = signed_in(user)
    own.post(f"{reverse('account_reauthenticate')}?next={SETUP}", {"password": PASSWORD})
    assert own.get(SETUP).status_code == 200
    secret = own.session["mfa.totp.secret"]
    assert own.post(SETUP, {"code": totp_code(secret)}).status_code == 302
    assert Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).exists()
    return secret


def test_a_session_that_never_gave_a_totp_code_does_not_reach_the_admin_once_totp_exists(owner):
    """Someone with the password signs in before the staff member has set up TOTP (the admin sends them to
    the setup page). The staff member then sets up TOTP in their own browser. The first session, which never
    presented a code, is still kept out: it is asked for a code, and only with one does the admin open."""
    ops = staff_member(
        "ops", "leasing.view_lease", "leasing.change_lease", "accounts.view_apikey", "accounts.change_apikey"
    )
    password_only = signed_in(ops)
    assert password_only.get("/admin/accounts/apikey/")["Location"] == SETUP  # sent to set up MFA

    secret = activate_totp_in_own_browser(ops)

    response = password_only.get("/admin/accounts/apikey/", follow=True)
    assert response.redirect_chain[0] == (f"{CODE}?next=%2Fadmin%2Faccounts%2Fapikey%2F", 302)
    assert "without your authenticator code" in response.content.decode()
    # and the MFA-gated action, crafted by that session, is not run:
    password_only.post(
        "/admin/accounts/apikey/",
        {"action": "revoke_keys", "post": "yes", ACTION_CHECKBOX_NAME: [owner.key.pk], "index": 0},
    )
    owner.key.refresh_from_db()
    assert owner.key.revoked_at is None

    # A code from the authenticator (the real staff member, in that browser) lets it back, to the same page.
    response = password_only.post(f"{CODE}?next=/admin/accounts/apikey/", {"code": totp_code(secret)})
    assert response.status_code == 302 and response["Location"] == "/admin/accounts/apikey/"
    assert password_only.get("/admin/accounts/apikey/").status_code == 200


def test_a_session_that_never_gave_a_totp_code_cannot_read_recovery_codes_or_turn_totp_off(db):
    # allauth asks such a session only for the password again before its MFA pages: it could read a recovery
    # code (then pass MFA with it) or swap the authenticator for its own.
    ops = staff_member("ops", "leasing.view_lease", "leasing.change_lease")
    password_only = signed_in(ops)
    activate_totp_in_own_browser(ops)
    password_only.post(reverse("account_reauthenticate"), {"password": PASSWORD})

    codes = password_only.get(reverse("mfa_view_recovery_codes"))
    off = password_only.post(reverse("mfa_deactivate_totp"))

    assert codes.status_code == 302 and codes["Location"].startswith(f"{CODE}?next=")
    assert off.status_code == 302 and off["Location"].startswith(f"{CODE}?next=")
    assert Authenticator.objects.filter(user=ops, type=Authenticator.Type.TOTP).exists()


def test_staff_who_can_neither_assign_accounts_nor_move_money_need_no_mfa(client):
    user = staff_member("support", "scheduling.view_scheduledpost", "billing.view_monthlybilling")
    client = signed_in(user)

    assert client.get("/admin/").status_code == 200
    assert client.get("/admin/scheduling/scheduledpost/").status_code == 200


def test_the_requirement_cannot_be_bypassed_with_the_admin_login_form(client):
    user = staff_member("sneaky", superuser=True)
    client.post("/admin/login/", {"username": user.username, "password": PASSWORD})
    assert client.get("/admin/").status_code == 302
    client = signed_in(user)
    assert client.get("/admin/")["Location"] == SETUP


# --- audit ------------------------------------------------------------------------------------------


def audit_rows(obj) -> list[LogEntry]:
    return list(
        LogEntry.objects.filter(
            content_type=ContentType.objects.get_for_model(type(obj), for_concrete_model=False), object_id=str(obj.pk)
        )
    )


def test_every_registered_admin_audits_its_actions():
    request = RequestFactory().get("/admin/")
    request.user = staff_member("auditor", superuser=True)
    unaudited = []
    for model, model_admin in admin.site._registry.items():
        assert isinstance(model_admin, AuditedActionsMixin), model
        for name, (func, _, _) in model_admin.get_actions(request).items():
            if name != "delete_selected" and not hasattr(func, "__wrapped__"):
                unaudited.append((model, name))
    assert unaudited == []


def test_admin_actions_and_the_money_view_leave_an_audit_row_naming_the_staff_member(owner, figures):
    staff = with_mfa(staff_member("ops", superuser=True))
    client = Client()
    staff_login(client, staff)
    account = make_account(owner)
    failed = schedule_now(owner, account.pk)
    queued = schedule_now(owner, account.pk, when=timezone.now() + timedelta(hours=1))
    ScheduledPost.objects.filter(pk=failed["id"]).update(status="failed", error_code="PLATFORM_REJECTED")
    doomed = make_account(owner)

    actions = [
        ("/admin/scheduling/scheduledpost/", "retry_posts", ScheduledPost.objects.get(pk=failed["id"])),
        ("/admin/scheduling/scheduledpost/", "cancel_posts", ScheduledPost.objects.get(pk=queued["id"])),
        ("/admin/accounts/socialaccount/", "revoke_accounts", doomed),
        ("/admin/accounts/apikey/", "revoke_keys", owner.key),
    ]
    audited = 0
    for url, action, obj in actions:
        response = client.post(url, {"action": action, "post": "yes", "_selected_action": [obj.pk]})
        assert response.status_code == 302, (action, response.status_code)
        rows = audit_rows(obj)
        if len(rows) == 1 and rows[0].user_id == staff.pk and action in _description(url, action, rows[0]):
            audited += 1

    # a top-up in the finance view: the ledger entry itself names who recorded it
    page = client.get(reverse("admin:billing_wallet_record"))
    token = re.search(r'name="token" value="([^"]+)"', page.content.decode()).group(1)
    client.post(
        reverse("admin:billing_wallet_record"),
        {"organization": owner.org.pk, "kind": "top_up", "amount": "25.00", "reason": "wire 42", "token": token},
    )
    entry = LedgerEntry.objects.get(organization=owner.org)
    audited += entry.actor_id == staff.pk

    figures(
        "admin_audit",
        cases=len(actions) + 1,
        faults_injected=None,
        losses=len(actions) + 1 - audited,
        actionsRun=len(actions),
        moneyViewsRun=1,
        auditedWithTheirStaffMember=audited,
    )
    assert ScheduledPost.objects.get(pk=failed["id"]).status == "queued"
    assert ScheduledPost.objects.get(pk=queued["id"]).status == "canceled"
    assert SocialAccount.objects.get(pk=doomed.pk).status == "disconnected"
    assert ApiKey.objects.get(pk=owner.key.pk).revoked_at is not None
    assert entry.amount_cents == 2500
    assert audited == len(actions) + 1


def _description(url: str, action: str, row: LogEntry) -> str:
    """The action's name if the audit row carries that action's description."""
    model = next(
        m for m in admin.site._registry if url.rstrip("/").endswith(f"/{m._meta.app_label}/{m._meta.model_name}")
    )
    _, _, description = admin.site._registry[model].get_action(action)
    return action if str(description) in row.change_message else ""


def test_an_action_audits_only_the_objects_it_changed_and_says_why_it_left_the_others(owner):
    from leasing import services as leasing_services
    from leasing.models import Lease
    from tests.leasing.helpers import add_pool, get_request, request_accounts

    ops = Client()
    staff_login(ops, with_mfa(staff_member("ops", "scheduling.view_scheduledpost", "scheduling.change_scheduledpost")))
    account = make_account(owner)
    failed = ScheduledPost.objects.get(pk=schedule_now(owner, account.pk)["id"])
    queued = ScheduledPost.objects.get(
        pk=schedule_now(owner, account.pk, when=timezone.now() + timedelta(hours=1))["id"]
    )
    ScheduledPost.objects.filter(pk=failed.pk).update(status="failed", error_code="PLATFORM_REJECTED")

    # a retry of a post that has not failed is refused by the service
    page = ops.post(
        "/admin/scheduling/scheduledpost/",
        {"action": "retry_posts", "_selected_action": [failed.pk, queued.pk]},
        follow=True,
    )
    assert len(audit_rows(failed)) == 1 and audit_rows(queued) == []
    assert f"Scheduled post {queued.pk}: Only failed posts can be retried." in notes(page)

    # a leased account needs the lease permission to be revoked; a connected one does not
    add_pool(1)
    accepted = request_accounts(owner, 1)
    leasing_services.lease_assign(request_id=accepted["requestId"], auto=True)
    leased = SocialAccount.objects.get(pk=get_request(owner, accepted["requestId"])["socialAccountIds"][0])
    support = Client()
    staff_login(
        support, with_mfa(staff_member("support", "accounts.view_socialaccount", "accounts.change_socialaccount"))
    )
    doomed = make_account(owner)
    page = support.post(
        "/admin/accounts/socialaccount/",
        {"action": "revoke_accounts", "post": "yes", "_selected_action": [leased.pk, doomed.pk]},
        follow=True,
    )
    assert f"Social account {leased.pk}: leased; releasing it needs the lease permission." in notes(page)
    assert len(audit_rows(doomed)) == 1 and audit_rows(leased) == []
    assert SocialAccount.objects.get(pk=leased.pk).status == "connected"

    # a lease already released is left as it is
    admin_client = Client()
    staff_login(admin_client, with_mfa(staff_member("boss", superuser=True)))
    lease = Lease.objects.get(social_account=leased)
    admin_client.post(
        "/admin/leasing/lease/", {"action": "release_leases", "post": "yes", "_selected_action": [lease.pk]}
    )
    page = admin_client.post(
        "/admin/leasing/lease/",
        {"action": "release_leases", "post": "yes", "_selected_action": [lease.pk]},
        follow=True,
    )
    assert f"@{lease.pool_account.handle}: already released." in notes(page)
    assert len(audit_rows(lease)) == 1


def notes(page) -> list[str]:
    """The messages an admin page shows staff."""
    return [str(message) for message in page.context["messages"]]


def test_an_action_on_objects_already_in_its_target_state_records_nothing_for_them(owner):
    from accounts import crypto
    from accounts.webhooks.models import WebhookEndpoint

    boss = Client()
    staff_login(boss, with_mfa(staff_member("boss", superuser=True)))
    gone = make_account(owner, status="disconnected")
    boss.post(
        "/admin/accounts/socialaccount/", {"action": "revoke_accounts", "post": "yes", "_selected_action": [gone.pk]}
    )
    ApiKey.objects.filter(pk=owner.key.pk).update(revoked_at=timezone.now())
    boss.post("/admin/accounts/apikey/", {"action": "revoke_keys", "post": "yes", "_selected_action": [owner.key.pk]})
    deleted = WebhookEndpoint.objects.create(
        organization=owner.org,
        url="https://hooks.acme.test/x",
        events=["social_account.connected"],
        secret_enc=crypto.encrypt("whsec_x"),
        status=WebhookEndpoint.Status.DISABLED,
        disabled_reason="staff",
        disabled_at=timezone.now(),
        deleted_at=timezone.now(),
    )
    refused = boss.post(
        "/admin/webhooks/webhookendpoint/",
        {"action": "enable_endpoints", "_selected_action": [deleted.pk]},
        follow=True,
    )
    again = boss.post(
        "/admin/webhooks/webhookendpoint/",
        {"action": "disable_endpoints", "_selected_action": [deleted.pk]},
        follow=True,
    )

    assert f"Webhook endpoint {deleted.pk}: A deleted endpoint cannot be enabled." in notes(refused)
    assert f"Webhook endpoint {deleted.pk}: already disabled" in notes(again)
    assert audit_rows(gone) == audit_rows(owner.key) == audit_rows(deleted) == []


# --- Sign-in behind a proxy, during a Redis outage, and what the sign-in pages offer -----------------


def test_behind_the_proxy_one_clients_failed_sign_ins_do_not_lock_every_staff_member_out(settings):
    # allauth counted failed sign-ins per REMOTE_ADDR, the load balancer's: ten wrong passwords from anyone
    # on the internet locked the whole back-office out, every minute. It now trusts the same proxies.
    from tests.staff import superuser

    settings.LAYERS_NUM_PROXIES = 1
    superuser("ops", PASSWORD)
    attacker = Client(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.66")
    for guess in range(11):
        attacker.post("/staff/login/", {"login": f"guess{guess}", "password": "wrong"})

    staff = Client(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.7")
    response = staff.post("/staff/login/", {"login": "ops", "password": PASSWORD})

    assert response.status_code == 302 and response["Location"] == "/staff/2fa/authenticate/"


def test_sign_in_behind_two_proxies_with_a_short_forwarded_for_is_no_server_error(settings):
    from tests.staff import superuser

    settings.LAYERS_NUM_PROXIES = 2
    superuser("ops", PASSWORD)
    client = Client(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.7", raise_request_exception=False)

    response = client.post("/staff/login/", {"login": "ops", "password": PASSWORD})

    assert response.status_code == 302 and response["Location"] == "/staff/2fa/authenticate/"


def test_staff_can_sign_in_while_the_cache_redis_is_down(settings):
    # allauth's sign-in limits use the default cache directly: with Redis down every sign-in was a 500,
    # so ops could not reach the admin during a Redis incident.
    import socket

    from tests.staff import superuser

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    user = superuser("ops", PASSWORD)
    settings.CACHES = {
        "default": {
            "BACKEND": "config.cache.TolerantRedisCache",
            "LOCATION": f"redis://127.0.0.1:{port}/0",
            "OPTIONS": settings.REDIS_CACHE_OPTIONS,
        }
    }
    client = Client(raise_request_exception=False)
    response = client.post("/staff/login/", {"login": "ops", "password": PASSWORD})
    assert response.status_code == 302, response.status_code
    response = client.post(response["Location"], {"code": totp_code(user)})
    assert response.status_code == 302 and response["Location"] == "/admin/"


def test_the_sign_in_page_offers_no_password_reset_by_mail_and_mails_nobody(mailoutbox):
    # No mail is configured: "Forgot your password?" ended in a 500, and a working form would let anyone make
    # us mail any address. Superusers set staff passwords in the admin.
    page = Client().get("/staff/login/").content.decode()
    reset = Client().post("/staff/password/reset/", {"email": "victim@example.com"})

    assert "/staff/password/reset/" not in page and "superuser" in page
    assert reset.status_code == 404 and mailoutbox == []


def test_signing_out_lands_on_the_sign_in_page():
    from tests.staff import superuser

    client = Client()
    staff_login(client, superuser("ops", PASSWORD))
    response = client.post("/staff/logout/")
    assert response.status_code == 302 and response["Location"] == "/staff/login/"
