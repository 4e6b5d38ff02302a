"""Who did what to a lease request and its leases, as ops read it: a staff member by name, a partner by the API
key the call came through (its name and prefix, never the secret), and "automation" only for what no one asked
for at that moment (auto-assign run from a command, the renewal job, the recovery of an interrupted assignment)."""

import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from leasing import services
from leasing.models import Lease, LeaseAction, LeaseRequest
from tests.billing.test_finance_admin import Tables
from tests.leasing.helpers import add_pool, get_request, request_accounts
from tests.staff import admin_object_url, staff_login, with_mfa

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def ops():
    user = with_mfa(get_user_model().objects.create_superuser("ops", "ops@layers.test", "pw-ops-12345"))
    return staff_login(Client(), user)


def shown(page: str, label: str) -> str:
    match = re.search(rf"{label}:</label>\s*<div class=\"readonly\">(.*?)</div>", page, re.S)
    assert match, f"no {label} on the page"
    return match.group(1).strip()


@pytest.mark.parametrize("how", ["leased-accounts", "social-accounts", "admin"])
def test_the_history_names_the_partners_api_key_or_the_staff_member_never_a_blank(owner, ops, how):
    add_pool(1)
    accepted = request_accounts(owner, 1)
    request_id = accepted["requestId"]
    services.lease_assign(request_id=request_id, auto=True)  # as `manage.py lease_assign --auto` does
    account_id = get_request(owner, request_id)["socialAccountIds"][0]
    lease = Lease.objects.get(social_account_id=account_id)

    if how == "leased-accounts":
        assert owner.client.delete(f"/v1/leased-accounts/{account_id}").status_code == 200
    elif how == "social-accounts":
        assert owner.client.delete(f"/v1/social-accounts/{account_id}").status_code == 200
    else:
        ops.post("/admin/leasing/lease/", {"action": "release_leases", "post": "yes", "_selected_action": [lease.pk]})

    partner = f"partner (API key test ({owner.key.pk} / lyr_{owner.key.prefix}…))"
    page = ops.get(admin_object_url(LeaseRequest, request_id)).content.decode()
    history = {row[1]: row[2] for row in Tables(page).tables["history"]["tbody"]}
    assert history["requested"] == partner
    assert history["assigned"] == "automation"
    assert history["released"] == ("ops" if how == "admin" else partner)
    lease_page = ops.get(admin_object_url(Lease, lease.pk)).content.decode()
    assert shown(lease_page, "Released by") == history["released"]
    assert shown(lease_page, "Assigned by") == "automation"
    # What is kept of the key names it and finds it again; the key itself is nowhere.
    requested = LeaseAction.objects.get(request_id=request_id, action="requested")
    assert requested.detail["api_key"] == {"id": owner.key.pk, "name": "test", "prefix": f"lyr_{owner.key.prefix}"}
    assert owner.raw_key not in page and owner.key.key_hash not in page


def test_the_lease_action_list_says_who_acted(owner, ops):
    accepted = request_accounts(owner, 1)

    page = ops.get("/admin/leasing/leaseaction/").content.decode()

    partner = f"partner (API key test ({owner.key.pk} / lyr_{owner.key.prefix}…))"
    assert accepted["requestId"] in page and partner in page
