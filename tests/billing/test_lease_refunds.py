"""Finance refunds a leased account's month with an adjustment. It was recorded on the wallet alone: neither the
lease's page nor the monthly per-account billing could show that the account was refunded, so finance could not
reconcile what an account was charged with what the partner was given back. An adjustment may now name the
leased account it is for (its `sa_…`, as the monthly report lists it), which must be the organization's."""

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine

from billing import services
from billing.models import LedgerEntry, Wallet
from leasing.models import Lease
from tests.billing.factories import balance, lease_assign
from tests.billing.test_finance_admin import Tables
from tests.staff import admin_object_url, messages_of, signed_in_staff

pytestmark = pytest.mark.django_db

RECORD = "/admin/billing/wallet/record/"
FINANCE = (
    "billing.view_wallet",
    "billing.view_ledgerentry",
    "billing.view_monthlybilling",
    "billing.record_money",
    "leasing.view_lease",
)


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def finance(db):
    user, client = signed_in_staff(*FINANCE, mfa=True, username="finance")
    client.user = user
    return client


def money(text: str) -> Decimal:
    return Decimal(text.replace("$", "").replace(",", ""))


def record(finance, **data):
    base = {"kind": "adjustment", "token": data.pop("token", "t" * 32)}
    return finance.post(RECORD, {**base, **data}, follow=True)


def test_a_refund_naming_a_leased_account_shows_on_its_lease_and_in_the_months_per_account_billing(
    finance, owner, sibling
):
    with time_machine.travel(at(2026, 3, 5), tick=False):
        refunded = lease_assign(owner, price_cents=4900, at=at(2026, 3, 5))
        kept = lease_assign(owner, price_cents=2500, at=at(2026, 3, 5))
        services.wallet_top_up(organization=owner.org, cents=10000, reason="Wire")
    with time_machine.travel(at(2026, 3, 20, 9), tick=False):
        done = record(
            finance,
            organization=owner.org.pk,
            amount="49.00",
            reason="Refund: the account was banned for a week",
            leased_account=f"  {refunded.social_account_id} ",
        )
        record(finance, organization=owner.org.pk, amount="5.00", reason="Goodwill", token="u" * 32)
        # A second refund of the same account in the month adds up on its row.
        record(
            finance,
            organization=owner.org.pk,
            amount="1.00",
            reason="Rounding",
            leased_account=refunded.social_account_id,
            token="v" * 32,
        )
    assert done.redirect_chain[-1][0] == admin_object_url(Wallet, owner.org.pk)
    assert messages_of(done) == [
        f"Adjustment of $49.00 recorded for Acme, for the leased account @{refunded.handle} "
        f"({refunded.social_account_id}); balance $75.00."
    ]
    entry = LedgerEntry.objects.get(reason__startswith="Refund")
    assert (entry.kind, entry.amount_cents, entry.lease_id, entry.period_index) == ("adjustment", 4900, None, None)
    assert balance(owner) == 10000 - 4900 - 2500 + 4900 + 500 + 100

    with time_machine.travel(at(2026, 3, 21), tick=False):
        lease_html = finance.get(admin_object_url(Lease, refunded.pk)).content.decode()
        kept_html = finance.get(admin_object_url(Lease, kept.pk)).content.decode()
        page = Tables(finance.get("/admin/billing/monthlybilling/?month=2026-03").content.decode()).tables
        export = finance.get("/admin/billing/monthlybilling/refunds-csv/?month=2026-03")

    wallet_page = Tables(finance.get(admin_object_url(Wallet, owner.org.pk)).content.decode()).tables
    whats = [row[4] for row in wallet_page["latest-entries"]["tbody"]]
    assert f"Refund: the account was banned for a week (for @{refunded.handle}, {refunded.social_account_id})" in whats
    assert "Goodwill" in whats

    refunds = Tables(lease_html).tables["lease-refunds"]
    assert [row[1:4] for row in refunds["tbody"]] == [
        ["$49.00", "Refund: the account was banned for a week", "finance"],
        ["$1.00", "Rounding", "finance"],
    ]
    assert refunds["tbody"][0][0] == "2026-03-20 09:00:00 UTC"
    assert Tables(kept_html).tables["lease-refunds"]["tbody"] == [["No adjustment names this lease."]]

    per_account = page["lease-refunds"]
    assert per_account["thead"][0] == [
        "Organization",
        "Organization ID",
        "Project",
        "Project ID",
        "Handle",
        "Social account ID",
        "Charged (USD)",
        "Refunded (USD)",
        "Charged - refunded (USD)",
    ]
    assert per_account["tbody"] == [
        [
            "Acme",
            owner.org.pk,
            owner.project.name,
            owner.project.pk,
            refunded.handle,
            refunded.social_account_id,
            "49.00",
            "50.00",
            "-1.00",
        ]
    ]
    assert per_account["tfoot"] == [["Total", "49.00", "50.00", "-1.00"]]
    lines = list(csv.reader(io.StringIO(b"".join(export.streaming_content).decode("utf-8-sig"))))
    assert lines == [per_account["thead"][0], *per_account["tbody"]]

    # The wallet's month reconciles: its adjustments are the refunds of leased accounts and the others.
    (wallet,) = page["wallet-months"]["tbody"]
    assert money(wallet[5]) == Decimal("55.00")
    split = {row[0]: money(row[1]) for row in page["adjustments-split"]["tbody"]}
    assert split == {"Refunds naming a leased account (below)": Decimal("50.00"), "Other adjustments": Decimal("5.00")}
    assert sum(split.values()) == money(wallet[5])


def test_an_adjustment_cannot_name_another_organizations_leased_account_or_be_a_top_up(finance, owner, outsider):
    theirs = lease_assign(outsider, price_cents=4900)
    ours = lease_assign(owner, price_cents=4900)

    other = record(
        finance, organization=owner.org.pk, amount="49.00", reason="Refund", leased_account=theirs.social_account_id
    )
    unknown = record(
        finance,
        organization=owner.org.pk,
        amount="49.00",
        reason="Refund",
        leased_account="sa_00000000-0000-4000-8000-000000000000",
        token="x" * 32,
    )
    malformed = record(
        finance, organization=owner.org.pk, amount="49.00", reason="Refund", leased_account="@leased", token="z" * 32
    )
    top_up = record(
        finance,
        organization=owner.org.pk,
        kind="top_up",
        amount="49.00",
        reason="Refund",
        leased_account=ours.social_account_id,
        token="y" * 32,
    )

    for refused in (other, unknown, malformed, top_up):
        assert refused.redirect_chain == [] and "leased_account" in refused.context["form"].errors
    assert "not leased to Acme" in str(other.context["form"].errors["leased_account"])
    assert "No leased account has this id" in str(unknown.context["form"].errors["leased_account"])
    assert "Not a leased account id" in str(malformed.context["form"].errors["leased_account"])
    assert not LedgerEntry.objects.filter(kind__in=["adjustment", "top_up"]).exists()


def test_a_form_submitted_again_naming_another_leased_account_is_told_what_differs(finance, owner):
    """The same form (its token) sent again after finance changed the leased account: nothing is recorded a
    second time, and the form says the earlier submission named another account, not "another amount" (the
    amount is the same)."""
    first, second = lease_assign(owner, price_cents=4900), lease_assign(owner, price_cents=4900)
    form = dict(organization=owner.org.pk, amount="49.00", reason="Refund", token="r" * 32)
    record(finance, **form, leased_account=first.social_account_id)

    again = record(finance, **form, leased_account=second.social_account_id)

    assert again.status_code == 200
    errors = " ".join(" ".join(problems) for problems in again.context["form"].errors.values())
    assert "already submitted" in errors and "leased account" in errors and "another amount" not in errors, errors
    assert LedgerEntry.objects.filter(organization=owner.org, kind="adjustment").count() == 1
