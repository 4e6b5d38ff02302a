"""Back-office guards ops, finance and partners depend on: what view-only staff cannot do, what nobody deletes,
what a CSV or a new provider must carry."""

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.test import Client
from django.urls import reverse

from tests.staff import admin_object_url, signed_in, staff_login, staff_member, with_mfa

pytestmark = pytest.mark.django_db

SETUP = reverse("mfa_activate_totp")


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    cache.clear()
    yield
    cache.clear()


def mfa_client(user) -> Client:
    client = Client()
    staff_login(client, with_mfa(user))
    return client


def test_view_only_staff_cannot_disable_or_run_scheduled_tasks_through_third_party_admin_actions():
    # Read-only staff (no MFA needed) may look at the scheduled tasks. django-celery-beat's list actions
    # (enable, disable, toggle, run) declare no permission, so without the back-office's guard anyone who
    # may view the list could switch off the lease renewals (billing stops) or run any task.
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    every = IntervalSchedule.objects.create(every=900, period=IntervalSchedule.SECONDS)
    task = PeriodicTask.objects.create(
        name="billing-lease-renewals", task="billing.tasks.lease_renewals_tick", interval=every
    )
    viewer = signed_in(staff_member("support", "django_celery_beat.view_periodictask"))
    url = reverse("admin:django_celery_beat_periodictask_changelist")
    page = viewer.get(url)
    assert page.status_code == 200
    assert b"disable_tasks" not in page.content and b"run_tasks" not in page.content
    for action in ("disable_tasks", "toggle_tasks"):
        viewer.post(url, {"action": action, ACTION_CHECKBOX_NAME: [task.pk], "index": 0})
        task.refresh_from_db()
        assert task.enabled, action


@pytest.mark.django_db(transaction=True)
def test_staff_who_only_fulfilled_lease_requests_are_not_deleted_so_who_assigned_what_stays(owner):
    # Fulfilling a request is a custom page: its trail is the lease history (LeaseAction rows naming the
    # staff member), not Django's admin history. A superuser deleting that colleague would blank "by whom"
    # on every lease they assigned: they are deactivated instead.
    from leasing.models import LeaseAction, LeaseRequest
    from tests.leasing.helpers import add_pool, get_request, request_accounts

    add_pool(1)
    accepted = request_accounts(owner, 1)
    ops_user = staff_member("ops.fulfiller", "leasing.view_leaserequest", "leasing.change_leaserequest")
    ops = mfa_client(ops_user)
    ops.post(admin_object_url(LeaseRequest, accepted["requestId"]), {"action": "auto"})
    assert get_request(owner, accepted["requestId"])["status"] == "assigned"
    trail = LeaseAction.objects.filter(actor=ops_user)
    assert trail.exists()

    boss = mfa_client(staff_member("boss", superuser=True))
    User = get_user_model()
    refused = boss.post(admin_object_url(User, ops_user.pk, "delete"), {"post": "yes"})
    in_bulk = boss.post(
        reverse("admin:auth_user_changelist"),
        {"action": "delete_selected", ACTION_CHECKBOX_NAME: [ops_user.pk], "post": "yes"},
    )
    assert refused.status_code == 403
    assert in_bulk.status_code in (200, 403)
    assert User.objects.filter(pk=ops_user.pk).exists()
    assert trail.exists()


def test_staff_who_may_change_pool_accounts_but_not_add_them_cannot_import_new_ones():
    # A CSV import adds accounts to the pool (each with the price new leases are billed), so it needs the
    # add permission as well as change: staff trusted to edit existing accounts cannot add new ones this way.
    from django.core.files.uploadedfile import SimpleUploadedFile

    from leasing.models import PoolAccount

    editor = mfa_client(staff_member("pool.editor", "leasing.view_poolaccount", "leasing.change_poolaccount"))
    url = reverse("admin:leasing_poolaccount_import")
    assert editor.get(url).status_code == 403
    csv = "handle,vertical,languages,geos,monthly_price_cents,audience_notes,warmup_state\n"
    csv += "brand.new,fitness,en-US,US,100,,warm\n"
    editor.post(url, {"format": "0", "import_file": SimpleUploadedFile("pool.csv", csv.encode(), "text/csv")})
    assert not PoolAccount.objects.filter(handle="brand.new").exists()


def test_staff_who_may_only_view_wallets_cannot_record_money(owner):
    # Support may look at a partner's wallet (read-only: no MFA needed). Recording a top-up or an
    # adjustment moves money and needs billing.record_money: the form is refused and nothing is recorded.
    from billing.models import LedgerEntry

    support = signed_in(staff_member("support.wallets", "billing.view_wallet", "billing.view_ledgerentry"))
    url = reverse("admin:billing_wallet_record")
    data = {"organization": owner.org.pk, "kind": "top_up", "amount": "5000.00", "reason": "x", "token": "t" * 32}
    assert support.get(url).status_code == 403
    assert support.post(url, data).status_code == 403
    assert not LedgerEntry.objects.exists()


def test_a_wallet_at_exactly_zero_is_listed_as_ok_not_past_due(owner, sibling):
    # Finance chase the wallets the "Past due" filter lists; a partner who paid exactly what they owe
    # (balance $0.00) is not one of them, and shows under "OK" like the wallet page's own status says.
    from billing import services
    from billing.models import Wallet
    from tests.billing.factories import lease_assign

    lease_assign(owner, price_cents=4900)
    services.wallet_top_up(organization=owner.org, cents=4900)  # settled: $0.00
    lease_assign(sibling, price_cents=2500)  # owes $25.00
    assert Wallet.objects.get(pk=owner.org.pk).balance_cents == 0

    finance = mfa_client(staff_member("finance", superuser=True))
    url = reverse("admin:billing_wallet_changelist")
    past_due = {w.pk for w in finance.get(url, {"status": "past_due"}).context["cl"].result_list}
    ok = {w.pk for w in finance.get(url, {"status": "ok"}).context["cl"].result_list}
    assert past_due == {sibling.org.pk}
    assert ok == {owner.org.pk}


def test_the_finance_csv_defuses_a_leased_handle_a_spreadsheet_would_run_as_a_formula(owner):
    # The handle column comes from the pool (typed or imported by staff): opened in finance's spreadsheet, a
    # handle starting with = + - or @ would run as a formula. It gets the same apostrophe as partner names.
    import csv
    import io
    from datetime import UTC, datetime

    from leasing.models import Lease
    from tests.billing.factories import lease_assign

    lease = lease_assign(owner, price_cents=4900, at=datetime(2026, 3, 5, tzinfo=UTC))
    Lease.objects.filter(pk=lease.pk).update(handle='=HYPERLINK("https://evil.test","x")')
    finance = mfa_client(staff_member("finance", superuser=True))
    export = finance.get(reverse("admin:billing_monthlybilling_csv"), {"month": "2026-03"})
    rows = list(csv.reader(io.StringIO(b"".join(export.streaming_content).decode("utf-8-sig"))))
    assert rows[1][4] == '\'=HYPERLINK("https://evil.test","x")'


def test_a_new_managed_provider_cannot_be_saved_without_a_signing_secret(owner):
    # The provider checks each managed post's Layers-Signature with the shared secret: one set up without a
    # secret would receive posts signed with an empty key, which anyone can forge. The add form refuses it.
    from scheduling.models import ManagedProvider

    ops = mfa_client(staff_member("ops", superuser=True))
    response = ops.post(
        reverse("admin:scheduling_managedprovider_add"),
        {"project": owner.project.pk, "name": "Boost", "endpoint_url": "https://provider.example/in", "enabled": "on"},
    )
    assert response.status_code == 200
    assert "new_secret" in response.context["adminform"].form.errors
    assert not ManagedProvider.objects.exists()


def test_a_pool_csv_row_with_a_negative_price_is_reported_with_its_line_and_nothing_is_imported():
    # Ops import the pool from a spreadsheet: a negative price (a typo, a credit column pasted in) is shown
    # as a row error on the preview page, and nothing of the file is imported.
    from django.core.files.uploadedfile import SimpleUploadedFile

    from leasing.models import PoolAccount

    ops = mfa_client(staff_member("ops", superuser=True))
    csv = "handle,vertical,languages,geos,monthly_price_cents,audience_notes,warmup_state\n"
    csv += "fit.one,fitness,en-US,US,4900,,warm\nfit.two,fitness,en-US,US,-100,,warm\n"
    response = ops.post(
        reverse("admin:leasing_poolaccount_import"),
        {"format": "0", "import_file": SimpleUploadedFile("pool.csv", csv.encode(), "text/csv")},
    )
    assert response.status_code == 200
    text = response.content.decode()
    assert "Some rows failed to validate" in text and "monthly_price_cents" in text
    assert not PoolAccount.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_history_rows_are_never_deleted_in_the_admin_not_even_by_a_superuser(owner):
    # These rows are a partner's or ops' history: a lease request (the partner reads it at
    # GET /v1/lease-requests/{id}), a lease (what the partner is billed for), the lease history (who assigned
    # or released what), a social account (its posts hang off it), a webhook endpoint and its deliveries
    # (what was sent, when, what the receiver said). Ops reject, release, revoke or disable; nobody deletes
    # them from the back-office, one by one or with "delete selected".
    from accounts import crypto
    from accounts.models import Event, SocialAccount
    from accounts.webhooks.models import WebhookDelivery, WebhookEndpoint
    from leasing.models import LeaseAction, LeaseRequest
    from tests.billing.factories import lease_assign
    from tests.factories import make_account
    from tests.leasing.helpers import request_accounts

    accepted = LeaseRequest.objects.get(pk=request_accounts(owner, 1)["requestId"])
    lease = lease_assign(owner)
    action = LeaseAction.objects.create(lease=lease, action="assigned")
    account = make_account(owner)
    endpoint = WebhookEndpoint.objects.create(
        organization=owner.org,
        url="https://hooks.acme.test/x",
        events=["social_account.connected"],
        secret_enc=crypto.encrypt("whsec_x"),
    )
    event = Event.objects.create(organization=owner.org, type="social_account.connected")
    delivery = WebhookDelivery.objects.create(endpoint=endpoint, event=event, body="{}")
    rows = [accepted, lease, action, account, endpoint, delivery]

    boss = mfa_client(staff_member("boss", superuser=True))
    offered = []
    for row in rows:
        model = type(row)
        if boss.get(admin_object_url(model, row.pk, "delete")).status_code != 403:
            offered.append(model.__name__)
        boss.post(admin_object_url(model, row.pk, "delete"), {"post": "yes"})
        boss.post(
            reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist"),
            {"action": "delete_selected", ACTION_CHECKBOX_NAME: [row.pk], "post": "yes"},
        )
    assert offered == []
    assert [type(r).__name__ for r in rows if not type(r).objects.filter(pk=r.pk).exists()] == []
    assert SocialAccount.objects.filter(pk=account.pk).exists()


def test_staff_who_may_only_view_leases_cannot_release_one_by_revoking_its_account(owner):
    # Revoking a leased social account releases its lease and stops its billing: support who may revoke
    # accounts and look at leases, but not change them, have the leased account left alone, with a reason.
    from accounts.models import SocialAccount
    from tests.billing.factories import lease_assign

    lease = lease_assign(owner)
    support = mfa_client(
        staff_member("support", "accounts.view_socialaccount", "accounts.change_socialaccount", "leasing.view_lease")
    )
    response = support.post(
        reverse("admin:accounts_socialaccount_changelist"),
        {"action": "revoke_accounts", ACTION_CHECKBOX_NAME: [lease.social_account_id], "index": 0, "post": "yes"},
        follow=True,
    )
    lease.refresh_from_db()
    assert lease.released_at is None
    assert SocialAccount.objects.get(pk=lease.social_account_id).status != "disconnected"
    assert any("needs the lease permission" in str(m) for m in response.context["messages"])
