"""Off-boarding a partner that churned or was terminated (accounts.services.organization_offboard), from the
Organization admin's action (asked first, change permission and MFA) and from `organization_offboard`: what the
partner and finance see afterwards. Through the real API, admin, sandbox platforms and billing job."""

import io
import json
import threading
from datetime import timedelta
from unittest import mock

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from accounts import services
from accounts.models import ApiKey, Organization, SocialAccount
from accounts.platforms.http import WEB_REQUEST_PLATFORM_CALLS
from accounts.platforms.sandbox.models import Token
from accounts.webhooks.models import WebhookEndpoint
from billing import services as billing_services
from billing.models import LedgerEntry
from leasing import services as leasing_services
from leasing.models import Lease, LeaseRequest, PoolAccount
from scheduling.models import ScheduledPost
from tests.accounts.oauth_helpers import connected_account, consent_and_return, start
from tests.leasing.helpers import add_pool, request_accounts
from tests.platform_helpers import held_tasks, intercepted
from tests.scheduling.publish_helpers import schedule_now
from tests.staff import signed_in_staff, staff_login, superuser

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = "/admin/accounts/organization/"


def a_partner_in_full_use(tenant) -> dict:
    """A connected TikTok account with a queued post, a leased account, a webhook endpoint, an open lease
    request and $120 in the wallet."""
    connected = connected_account(tenant, "tiktok", "leaving.creator")["id"]
    post = schedule_now(tenant, connected, when=timezone.now() + timedelta(days=1))["id"]
    add_pool(1, price=4900)
    accepted = request_accounts(tenant, 1)
    leasing_services.lease_assign(request_id=accepted["requestId"], auto=True)
    lease = Lease.objects.get(request_id=accepted["requestId"])
    pending = request_accounts(tenant, 1)["requestId"]
    endpoint = tenant.client.post(
        "/v1/webhook-endpoints", {"url": "https://hooks.acme.test/layers", "events": ["scheduled_post.published"]},
        format="json",
    ).json()["id"]  # fmt: skip
    billing_services.wallet_top_up(organization=tenant.org, cents=12000 + lease.monthly_price_cents)
    return {"connected": connected, "post": post, "lease": lease, "pending": pending, "endpoint": endpoint}


def ledger(tenant) -> list:
    return list(LedgerEntry.objects.filter(organization=tenant.org).order_by("pk").values_list("pk", "amount_cents"))


def assert_offboarded(tenant, things, entries_before):
    # The partner: every key refused with the normal 401, nothing left running.
    answer = tenant.client.get("/v1/projects")
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "UNAUTHENTICATED"
    assert not ApiKey.objects.filter(organization=tenant.org, revoked_at__isnull=True).exists()
    assert SocialAccount.objects.get(pk=things["connected"]).status == "disconnected"
    assert not Token.objects.filter(platform="tiktok", username="leaving.creator", revoked_at__isnull=True).exists()
    assert ScheduledPost.objects.get(pk=things["post"]).status == "canceled"
    assert "organization off-boarded" in ScheduledPost.objects.get(pk=things["post"]).canceled_by
    lease = Lease.objects.get(pk=things["lease"].pk)
    assert lease.released_at is not None
    assert SocialAccount.objects.get(pk=lease.social_account_id).status == "disconnected"
    assert PoolAccount.objects.get(pk=lease.pool_account_id).status == "available"
    assert LeaseRequest.objects.get(pk=things["pending"]).status == "rejected"
    assert WebhookEndpoint.objects.get(pk=things["endpoint"]).status == "disabled"
    # Finance: the ledger as it was, and the renewal job next month charges the released lease nothing.
    assert ledger(tenant) == entries_before
    billing_services.lease_charges_run(now=timezone.now() + timedelta(days=45))
    assert ledger(tenant) == entries_before
    # No key can be issued for it again.
    with pytest.raises(ValueError, match="off-boarded"):
        services.api_key_create(organization=tenant.org, return_domains=["app.acme.test"])


def test_ops_offboard_a_partner_from_the_admin_after_a_confirmation_page(owner, outsider):
    things = a_partner_in_full_use(owner)
    entries = ledger(owner)
    staff = superuser("ops")
    ops = staff_login(Client(), staff)

    page = ops.post(CHANGELIST, {"action": "offboard_organizations", "_selected_action": [owner.org.pk]})

    text = page.content.decode()
    assert page.status_code == 200 and "This cannot be undone" in text
    assert "1 API key(s) revoked" in text and "2 account(s) disconnected, of which 1 leased" in text
    assert "1 queued post(s) canceled" in text and "Wallet balance left: $120.00 (nothing refunded" in text
    assert owner.client.get("/v1/projects").status_code == 200  # nothing done yet

    with held_tasks():
        done = ops.post(
            CHANGELIST,
            {"action": "offboard_organizations", "post": "yes", "_selected_action": [owner.org.pk]},
            follow=True,
        )

    text = done.content.decode()
    assert "2 account(s) disconnected (1 lease(s) released)" in text
    assert "Wallet balance left: $120.00" in text
    assert_offboarded(owner, things, entries)
    org = Organization.objects.get(pk=owner.org.pk)
    assert org.offboarded_at is not None and org.offboarded_by == "staff ops"
    assert outsider.client.get("/v1/projects").status_code == 200  # another partner is untouched
    # The list shows it; a key added in the admin for it is refused.
    assert "off-boarded" in ops.get(f"{CHANGELIST}?offboarded_at__isempty=0").content.decode().lower()
    refused = ops.post(
        "/admin/accounts/apikey/add/",
        {"organization": owner.org.pk, "name": "again", "allowed_return_domains": "app.acme.test"},
    )
    assert refused.status_code == 200 and "no API key can be issued" in refused.content.decode()
    assert ApiKey.objects.filter(organization=owner.org, name="again").count() == 0


def test_offboarding_is_refused_without_the_change_permission_and_asks_for_mfa_with_it(owner):
    _, viewer = signed_in_staff("accounts.view_organization", username="support")
    assert "offboard_organizations" not in viewer.get(CHANGELIST).content.decode()
    viewer.post(CHANGELIST, {"action": "offboard_organizations", "post": "yes", "_selected_action": [owner.org.pk]})
    assert owner.client.get("/v1/projects").status_code == 200

    _, no_code = signed_in_staff("accounts.view_organization", "accounts.change_organization", username="lead")
    answer = no_code.post(
        CHANGELIST, {"action": "offboard_organizations", "post": "yes", "_selected_action": [owner.org.pk]}
    )
    assert answer.status_code == 302 and "/staff/2fa/" in answer["Location"]
    assert owner.client.get("/v1/projects").status_code == 200

    _, with_code = signed_in_staff(
        "accounts.view_organization", "accounts.change_organization", mfa=True, username="lead2"
    )
    with_code.post(CHANGELIST, {"action": "offboard_organizations", "post": "yes", "_selected_action": [owner.org.pk]})
    assert owner.client.get("/v1/projects").status_code == 401


def test_staff_who_may_offboard_but_not_view_wallets_are_not_shown_the_balance(owner):
    # Off-boarding asks for the organization's change permission, not finance's: an ops lead without
    # billing.view_wallet learnt every partner's balance from the confirmation page and the result.
    a_partner_in_full_use(owner)
    _, lead = signed_in_staff("accounts.view_organization", "accounts.change_organization", mfa=True)

    page = lead.post(CHANGELIST, {"action": "offboard_organizations", "_selected_action": [owner.org.pk]})
    with held_tasks():
        done = lead.post(
            CHANGELIST,
            {"action": "offboard_organizations", "post": "yes", "_selected_action": [owner.org.pk]},
            follow=True,
        )

    for text in (page.content.decode(), done.content.decode()):
        assert "$120.00" not in text and "the balance is on its wallet page" in text
    assert owner.client.get("/v1/projects").status_code == 401


def offboard_command(*args) -> dict:
    out = io.StringIO()
    call_command("organization_offboard", *args, "--json", stdout=out)
    return json.loads(out.getvalue())


def test_the_command_dry_runs_then_offboards_and_running_it_again_changes_nothing(owner):
    things = a_partner_in_full_use(owner)
    entries = ledger(owner)

    planned = offboard_command(owner.org.pk, "--dry-run")
    assert planned["apiKeysRevoked"] == 1 and len(planned["accountsDisconnected"]) == 2
    assert planned["walletBalanceCents"] == 12000 and planned["offboardedAt"] is None
    assert owner.client.get("/v1/projects").status_code == 200

    done = offboard_command(owner.org.pk)
    assert done["apiKeysRevoked"] == 1 and done["leasesReleased"] == 1 and done["postsCanceled"] == 1
    assert done["offboardedBy"] == "management command"
    assert_offboarded(owner, things, entries)

    again = offboard_command(owner.org.pk)  # after a crash, or by mistake
    assert again["offboardedAt"] == done["offboardedAt"]
    assert (again["apiKeysRevoked"], again["accountsDisconnected"], again["postsCanceled"]) == (0, [], 0)
    assert ledger(owner) == entries


def test_the_admin_revokes_what_fits_one_request_and_a_worker_revokes_the_rest(owner):
    ids = [connected_account(owner, "tiktok", f"many.{n}")["id"] for n in range(4)]
    ops = staff_login(Client(), superuser("ops"))
    calls: list[str] = []
    with intercepted({}, calls=calls), held_tasks() as held:
        answer = ops.post(
            CHANGELIST,
            {"action": "offboard_organizations", "post": "yes", "_selected_action": [owner.org.pk]},
            follow=True,
        )
    assert len(calls) <= WEB_REQUEST_PLATFORM_CALLS
    # The rest in one task (TASK_ROWS ids to a task), not one broker call per account from the request.
    queued = [args for task, args in held if task.name.endswith("social_accounts_revoke_offboarded")]
    inline = WEB_REQUEST_PLATFORM_CALLS // services.REVOKE_PLATFORM_CALLS
    assert len(queued) == 1 and len(queued[0][0]) == 4 - inline
    assert "A worker disconnects 2 more account(s)" in answer.content.decode()

    from accounts.tasks import social_accounts_revoke_offboarded

    for args in queued:
        social_accounts_revoke_offboarded.run(*args)
    assert SocialAccount.objects.filter(pk__in=ids, status="disconnected").count() == 4


def test_with_the_task_queue_down_the_rest_is_reported_and_a_second_run_finishes(owner):
    from tests.outages import broker_down

    ids = [connected_account(owner, "tiktok", f"later.{n}")["id"] for n in range(3)]
    ops = staff_login(Client(), superuser("ops"))
    with mock.patch("accounts.tasks.social_accounts_revoke_offboarded.delay", broker_down):
        answer = ops.post(
            CHANGELIST,
            {"action": "offboard_organizations", "post": "yes", "_selected_action": [owner.org.pk]},
            follow=True,
        )
    assert "1 account(s) still connected (the task queue refused): off-board again." in answer.content.decode()
    assert SocialAccount.objects.filter(pk__in=ids, status="disconnected").count() == 2

    assert len(offboard_command(owner.org.pk)["accountsDisconnected"]) == 1
    assert SocialAccount.objects.filter(pk__in=ids, status="disconnected").count() == 3


@pytest.mark.parametrize("platform", ["tiktok", "instagram"])
def test_a_connect_whose_callback_was_under_way_when_the_partner_was_offboarded_binds_nothing(owner, platform):
    # The customer consented and the callback was exchanging the code (outside any transaction) when ops
    # off-boarded the partner: the off-boarding found no account to disconnect, and the bind that followed
    # made a live account, holding a token, in an organization that no longer exists for Layers.
    from accounts.services import _client

    link = start(owner, platform)
    client_class = type(_client(platform))
    real_profile = client_class.get_profile

    def offboarded_meanwhile(self, **kwargs):
        services.organization_offboard(organization_id=owner.org.pk, by="test")
        return real_profile(self, **kwargs)

    with mock.patch.object(client_class, "get_profile", offboarded_meanwhile):
        response = consent_and_return(platform, link["authorizeUrl"], f"late.{platform}")

    assert response.status_code == 302
    assert "layers_oauth_error=expired" in response["Location"], response["Location"]
    assert not SocialAccount.objects.filter(organization=owner.org).exclude(status="disconnected").exists()
    # The grant just obtained is withdrawn at the platform: nobody holds its token.
    assert Token.objects.filter(platform=platform, username=f"late.{platform}").exists()
    assert not Token.objects.filter(platform=platform, username=f"late.{platform}", revoked_at__isnull=True).exists()


def test_an_offboarding_racing_a_bind_that_has_begun_waits_for_it_and_disconnects_what_it_bound(owner):
    # The bind's transaction is open (the customer's account about to be written) when ops off-board the
    # partner. Unserialized, the off-boarding read the live accounts without the uncommitted one, finished,
    # and the bind then committed a live account nobody would revoke.
    import threading

    from django.db import connection

    link = start(owner, "tiktok")
    in_bind, go = threading.Event(), threading.Event()
    real_store = services._identity_profile_store

    def paused_store(*args, **kwargs):
        in_bind.set()
        go.wait(20)
        return real_store(*args, **kwargs)

    outcomes = {}

    def customer():
        try:
            outcomes["callback"] = consent_and_return("tiktok", link["authorizeUrl"], "racing.creator")
        finally:
            connection.close()

    def ops():
        try:
            outcomes["offboard"] = services.organization_offboard(organization_id=owner.org.pk, by="test")
        finally:
            connection.close()

    with mock.patch.object(services, "_identity_profile_store", paused_store):
        callback = threading.Thread(target=customer)
        callback.start()
        assert in_bind.wait(20), "the callback never reached the bind"
        offboarding = threading.Thread(target=ops)
        offboarding.start()
        offboarding.join(1.5)  # it waits on the organization's row while the bind is open
        go.set()
        callback.join(30)
        offboarding.join(30)

    assert outcomes["callback"].status_code == 302
    assert not SocialAccount.objects.filter(organization=owner.org).exclude(status="disconnected").exists()
    assert outcomes["offboard"].accounts_disconnected, outcomes["offboard"].report()


def test_a_partial_lease_request_of_an_offboarded_partner_is_not_topped_up(owner):
    # A partial request is not open, so the off-boarding leaves it partial (its lease released), and a partial
    # request can be topped up: a warm account arriving in the niche afterwards was offered on its page and
    # leased to the off-boarded partner, a live account holding a token, its first month charged to the wallet.
    add_pool(1)
    rid = request_accounts(owner, 2)["requestId"]
    leasing_services.lease_assign(request_id=rid, auto=True)
    assert LeaseRequest.objects.get(pk=rid).status == "partial"
    services.organization_offboard(organization_id=owner.org.pk, by="test")
    entries = ledger(owner)
    add_pool(1)
    ops = staff_login(Client(), superuser("ops"))
    url = f"/admin/leasing/leaserequest/{rid}/change/"

    with pytest.raises(leasing_services.LeaseError, match="off-boarded"):
        leasing_services.lease_assign(request_id=rid, auto=True)
    with held_tasks():
        done = ops.post(url, {"action": "auto"}, follow=True)

    assert "off-boarded" in done.content.decode()
    assert LeaseRequest.objects.get(pk=rid).status == "partial"
    assert not SocialAccount.objects.filter(organization=owner.org).exclude(status="disconnected").exists()
    assert Lease.objects.filter(request_id=rid).count() == 1
    assert not PoolAccount.objects.filter(status__in=["reserved", "leased"]).exists()
    assert ledger(owner) == entries


def test_an_assignment_whose_token_check_was_still_queued_at_the_offboarding_leases_and_charges_nothing(owner):
    """Ops assigned a request (its accounts reserved, the worker's token check queued), and the partner was
    off-boarded before the worker ran it. The off-boarding reports the request underway; the worker then bound
    the accounts and charged their first months to the off-boarded partner, live accounts with tokens nothing
    would release until someone ran the off-boarding again (found by the lease life model)."""
    add_pool(2)
    rid = request_accounts(owner, 2)["requestId"]
    with held_tasks() as held:
        leasing_services.lease_assign_start(request_id=rid, auto=True)
    assert LeaseRequest.objects.get(pk=rid).status == "provisioning"
    result = services.organization_offboard(organization_id=owner.org.pk, by="test")
    assert result.lease_requests_underway == [rid] and result.complete  # nothing left to run it again for
    entries = ledger(owner)

    for task, args in held:  # the worker's check, after the off-boarding
        task.apply(args=args)

    request = LeaseRequest.objects.get(pk=rid)
    assert request.status == "failed", request.status
    assert "off-boarded" in " ".join(leasing_services.failure_problems(request))
    assert not Lease.objects.filter(request_id=rid).exists()
    assert not SocialAccount.objects.filter(organization=owner.org).exclude(status="disconnected").exists()
    assert PoolAccount.objects.filter(status="available").count() == 2
    assert ledger(owner) == entries


def test_a_webhook_endpoint_being_created_when_the_partner_is_offboarded_is_not_left_live(owner):
    # The partner's POST /v1/webhook-endpoints passed the key check, and was resolving its URL's host when ops
    # off-boarded the partner. The endpoint was then created active after the off-boarding had disabled
    # every endpoint it found and reported itself complete: live in an off-boarded organization, sent what
    # it records later, and answered 201 with its secret on a key revoked meanwhile.
    from accounts.webhooks import services as webhook_services

    account = connected_account(owner, "tiktok", "leaving.creator")["id"]
    real_check = webhook_services.assert_public_url

    def offboarded_meanwhile(url, **kwargs):
        services.organization_offboard(organization_id=owner.org.pk, by="test")
        return real_check(url, **kwargs)

    with mock.patch.object(webhook_services, "assert_public_url", offboarded_meanwhile):
        answer = owner.client.post(
            "/v1/webhook-endpoints",
            {"url": "https://hooks.acme.test/layers", "events": ["social_account.disconnected"]},
            format="json",
        )

    assert answer.status_code == 401, answer.content
    assert answer.json()["error"]["code"] == "UNAUTHENTICATED" and answer.has_header("WWW-Authenticate")
    assert not WebhookEndpoint.objects.filter(organization=owner.org, status="active").exists()
    assert SocialAccount.objects.get(pk=account).status == "disconnected"


def offboarded_between_key_check_and_write(owner, module, name: str, call):
    """Make the partner's API `call()` on its own connection, its service `module.name` (which makes the call's
    write) held back until an off-boarding of the partner has run to its end on another connection: the call
    passed the key check before the key was revoked. Returns the call's answer."""
    from tests.concurrency import on_its_own_connection

    real = getattr(module, name)
    at_write, go = threading.Event(), threading.Event()

    def paused(**kwargs):
        at_write.set()
        assert go.wait(20)
        return real(**kwargs)

    answers, errors = {}, []
    with mock.patch.object(module, name, paused):
        calling = on_its_own_connection(lambda: answers.setdefault("answer", call()), errors)
        assert at_write.wait(20), "the partner's call never reached its write"
        offboarding = on_its_own_connection(
            lambda: services.organization_offboard(organization_id=owner.org.pk, by="test"), errors
        )
        offboarding.join(30)
        go.set()
        calling.join(30)
    assert errors == [], errors
    return answers["answer"]


def assert_refused_as_revoked_key(answer):
    assert answer.status_code == 401, answer.content
    assert answer.json()["error"]["code"] == "UNAUTHENTICATED" and answer.has_header("WWW-Authenticate")


def test_a_lease_request_made_while_the_partner_is_offboarded_is_refused_not_left_requested_forever(owner):
    # The partner's POST …/leased-accounts/request passed the key check (its key not revoked yet) and was about
    # to write the request when ops off-boarded the partner on another connection. The off-boarding had rejected
    # the open requests it found and reported itself complete; the request then committed `requested`: it can
    # never be assigned (the reservation refuses an off-boarded organization), and sat first in ops' queue, the
    # oldest, for good.
    from leasing import apis as leasing_apis
    from tests.leasing.helpers import NICHE

    body = {"projectId": owner.project.id, "count": 1, "niche": NICHE, "note": ""}
    answer = offboarded_between_key_check_and_write(
        owner,
        leasing_apis.services,
        "lease_request_create",
        lambda: owner.client.post(f"/v1/projects/{owner.project.id}/leased-accounts/request", body, format="json"),
    )

    assert_refused_as_revoked_key(answer)
    assert not LeaseRequest.objects.filter(organization=owner.org).exists()


@pytest.mark.parametrize("purpose", ["connect", "reauth"])
def test_a_connect_link_asked_for_while_the_partner_is_offboarded_is_refused(owner, purpose):
    # An oauth-url (or reauth-url) call that passed the key check just before the off-boarding wrote its link
    # after the off-boarding had expired the pending ones: the partner got a link (200), the customer consented
    # at the platform, and only then was sent back with `expired` (the bind refuses an off-boarded organization).
    from accounts import apis as account_apis
    from accounts.models import OAuthSession

    if purpose == "connect":
        url, body = "social/oauth-url", {"platform": "tiktok", "returnUrl": "https://app.acme.test/done"}
    else:
        account = connected_account(owner, "tiktok", "leaving.creator")["id"]
        url, body = "social/reauth-url", {"socialAccountId": account}
    pending_before = set(OAuthSession.objects.filter(organization=owner.org).values_list("pk", flat=True))

    answer = offboarded_between_key_check_and_write(
        owner,
        account_apis.services,
        "oauth_session_start",
        lambda: owner.client.post(f"/v1/projects/{owner.project.id}/{url}", body, format="json"),
    )

    assert_refused_as_revoked_key(answer)
    links = OAuthSession.objects.filter(organization=owner.org).exclude(pk__in=pending_before)
    assert not links.exists()


def test_a_lease_request_whose_write_began_before_the_offboarding_is_rejected_by_it(owner):
    # The request's transaction is open (its row written, not committed) when ops off-board the partner. The
    # off-boarding did not wait for it (the foreign key to the organization is checked only at commit): it found
    # no open request, and the request then committed `requested`. It now waits on the organization's row, then
    # finds the request open and rejects it, as any other.
    from tests.concurrency import SecondQueuesBehindFirst

    race, real_audit = SecondQueuesBehindFirst('"accounts_organization"'), leasing_services._audit

    def audit_then_hold(**kwargs):
        row = real_audit(**kwargs)
        if kwargs.get("action") == "requested":
            race.hold()
        return row

    with mock.patch.object(leasing_services, "_audit", audit_then_hold):
        made, offboarded = race.run(
            lambda: request_accounts(owner, 1)["requestId"],
            lambda: services.organization_offboard(organization_id=owner.org.pk, by="test"),
        )

    assert LeaseRequest.objects.get(pk=made).status == "rejected"
    assert offboarded.lease_requests_rejected == 1
    assert race.overlapped


@pytest.mark.parametrize("status", ["partial", "failed"])
def test_the_request_page_of_an_offboarded_partner_says_so_and_offers_no_account(owner, status):
    # A partial request stays partial after the off-boarding (its leases released); a request whose assignment
    # was underway ends `failed` after it (off-boarding again rejects it). Their page listed the matching pool
    # accounts with "Assign selected" and "Auto-assign", and only the click was refused.
    add_pool(1)
    rid = request_accounts(owner, 2)["requestId"]
    if status == "partial":
        leasing_services.lease_assign(request_id=rid, auto=True)
    services.organization_offboard(organization_id=owner.org.pk, by="test")
    if status == "failed":
        LeaseRequest.objects.filter(pk=rid).update(status="failed")  # as the assignment underway ends
    add_pool(2)
    ops = staff_login(Client(), superuser("ops"))

    page = ops.get(f"/admin/leasing/leaserequest/{rid}/change/").content.decode()

    assert 'id="offboarded"' in page and "was off-boarded on" in page and "assigns it no accounts" in page
    assert 'id="candidates"' not in page and 'name="pool_account"' not in page
    assert "Auto-assign" not in page and "Take this request" not in page


def test_staff_cannot_enable_an_offboarded_partners_webhook_endpoint_again(owner):
    # The off-boarding disables every endpoint so that nothing more is sent to the partner; "Enable selected
    # endpoints" turned one back on, and the partner was sent the events of its off-boarded organization again
    # (a new wallet entry, for a refund, say).
    from accounts.webhooks import services as webhook_services

    endpoint = owner.client.post(
        "/v1/webhook-endpoints", {"url": "https://hooks.acme.test/layers", "events": ["scheduled_post.published"]},
        format="json",
    ).json()["id"]  # fmt: skip
    services.organization_offboard(organization_id=owner.org.pk, by="test")
    ops = staff_login(Client(), superuser("ops"))

    answer = ops.post(
        "/admin/webhooks/webhookendpoint/",
        {"action": "enable_endpoints", "_selected_action": [endpoint]},
        follow=True,
    )

    assert "was off-boarded on" in answer.content.decode() and "stays disabled" in answer.content.decode()
    assert WebhookEndpoint.objects.get(pk=endpoint).status == "disabled"
    with pytest.raises(webhook_services.Conflict, match="off-boarded"):
        webhook_services.endpoint_enable(endpoint_id=endpoint)


def test_the_confirmation_page_reads_the_same_few_queries_for_twenty_organizations_as_for_one(owner, sibling):
    # Each organization shown was counted by its own dry run, about ten queries each, for up to 100 rows.
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    a_partner_in_full_use(owner)
    connected_account(sibling, "tiktok", "other.creator")
    others = [services.organization_create(name=f"Churned {n}") for n in range(18)]
    ops = staff_login(Client(), superuser("ops"))

    def confirmation(ids) -> tuple[int, str]:
        with CaptureQueriesContext(connection) as queries:
            page = ops.post(CHANGELIST, {"action": "offboard_organizations", "_selected_action": ids})
        assert page.status_code == 200 and "This cannot be undone" in page.content.decode()
        return len(queries), page.content.decode()

    one, _ = confirmation([owner.org.pk])
    twenty, text = confirmation([owner.org.pk, sibling.org.pk, *(o.pk for o in others)])

    assert twenty <= one + 2, (one, twenty)
    # Each row still counts its own organization's things.
    assert "1 API key(s) revoked" in text and "2 account(s) disconnected, of which 1 leased" in text
    assert "1 account(s) disconnected, of which 0 leased" in text and "Wallet balance left: $120.00" in text
    assert text.count("0 API key(s) revoked") == 18


def test_staff_cannot_add_a_project_to_an_offboarded_organization(owner):
    # Projects are added in the admin only. One added to an off-boarded organization could never be used (no
    # key can be issued for it): a project listed as the partner's, nothing saying why it is dead.
    from accounts.models import Project

    ops = staff_login(Client(), superuser("ops"))
    organization_page = f"{CHANGELIST}{owner.org.pk}/change/"
    # The page's inline of projects takes new rows (the admin's "Add another Project").
    assert 'name="projects-MAX_NUM_FORMS" value="1000"' in ops.get(organization_page).content.decode()
    services.organization_offboard(organization_id=owner.org.pk, by="test")

    refused = ops.post("/admin/accounts/project/add/", {"organization": owner.org.pk, "name": "after"})

    assert refused.status_code == 200 and "was off-boarded on" in refused.content.decode()
    assert not Project.objects.filter(organization=owner.org, name="after").exists()
    page = ops.get(organization_page)
    assert page.status_code == 200 and 'name="projects-MAX_NUM_FORMS" value="0"' in page.content.decode()


def test_an_endpoint_enable_that_began_before_the_offboarding_is_disabled_again_by_it(owner):
    # Staff's enable is writing when ops off-board the partner: the off-boarding waits for it on the
    # organization's row, then finds the endpoint active and disables it. Unserialized, it read the endpoint
    # still disabled, skipped it, and the enable then committed it live.
    from accounts.webhooks import services as webhook_services
    from tests.concurrency import SecondQueuesBehindFirst

    endpoint = owner.client.post(
        "/v1/webhook-endpoints", {"url": "https://hooks.acme.test/layers", "events": ["scheduled_post.published"]},
        format="json",
    ).json()["id"]  # fmt: skip
    webhook_services.endpoint_disable(endpoint_id=endpoint, reason=WebhookEndpoint.DisabledReason.STAFF)
    race, real_save = SecondQueuesBehindFirst('"accounts_organization"'), WebhookEndpoint.save

    def save_then_hold(self, *args, **kwargs):
        real_save(self, *args, **kwargs)
        race.hold()

    with mock.patch.object(WebhookEndpoint, "save", save_then_hold):
        _, offboarded = race.run(
            lambda: webhook_services.endpoint_enable(endpoint_id=endpoint),
            lambda: services.organization_offboard(organization_id=owner.org.pk, by="test"),
        )

    assert WebhookEndpoint.objects.get(pk=endpoint).status == "disabled"
    assert offboarded.webhook_endpoints_disabled == 1
    assert race.overlapped
