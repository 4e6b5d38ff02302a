"""Finance finds every organization in the wallet list from the day it is created, at $0.00, not only once its
first top-up or charge was recorded: an organization ops just onboarded is where finance records the first
top-up, and "not in the list" read as "not onboarded"."""

import io
import json

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client

from accounts.models import Organization
from billing.models import Wallet
from tests.accounts.test_admin import management_forms
from tests.staff import admin_object_url, staff_login, with_mfa


@pytest.fixture
def finance(db):
    user = with_mfa(get_user_model().objects.create_superuser("finance", "fin@layers.test", "pw-fin-12345"))
    return staff_login(Client(), user)


def listed_wallets(client: Client, **query) -> dict[str, object]:
    """The wallet list's rows, by organization name: {name: wallet}."""
    page = client.get("/admin/billing/wallet/", query)
    assert page.status_code == 200
    return {str(wallet.organization): wallet for wallet in page.context["cl"].result_list}


@pytest.mark.django_db
def test_an_organization_added_in_the_admin_is_in_the_wallet_list_at_zero(finance):
    url = "/admin/accounts/organization/add/"
    answer = finance.post(url, {"name": "Initech", **management_forms(finance, url)})
    assert answer.status_code == 302, answer.content.decode()[:2000]

    wallets = listed_wallets(finance, status="ok")
    assert "Initech" in wallets
    org = Organization.objects.get(name="Initech")
    page = finance.get(admin_object_url(Wallet, org.pk)).content.decode()
    assert "$0.00" in page and "ok" in page


@pytest.mark.django_db
def test_an_organization_created_by_the_command_is_in_the_wallet_list_at_zero(finance):
    out = io.StringIO()
    call_command("create_org", "Globex", "--json", stdout=out)
    org_id = json.loads(out.getvalue())["id"]

    assert listed_wallets(finance)["Globex"].balance_cents == 0
    assert finance.get(admin_object_url(Wallet, org_id)).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_organizations_created_before_without_a_wallet_get_one_at_deploy():
    # given an organization the previous release created: no wallet until its first entry
    executor = MigrationExecutor(connection)
    executor.migrate([("billing", "0005_ledger_adjusted_lease_on_adjustments")])
    try:
        Organization.objects.create(name="Hooli")
    finally:
        # when this release's migrations run (the test database ends at head whatever happened)
        call_command("migrate", verbosity=0)

    wallet = Wallet.objects.get(organization__name="Hooli")
    assert wallet.balance_cents == 0 and wallet.past_due_since is None
