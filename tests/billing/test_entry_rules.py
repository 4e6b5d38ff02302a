"""Rules of a single ledger entry that finance and partners see: the amount limits as the messages state them, a
reference never standing for an entry of another kind, the wallet's "updated at", and each organization's entries
timed after its own ledger when the renewal job charges several organizations in one batch."""

import io
from datetime import timedelta

import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from billing import services
from billing.models import LedgerEntry, Wallet
from config.api.errors import Validation
from tests.billing.factories import balance, lease_assign

pytestmark = pytest.mark.django_db


def test_a_top_up_of_zero_is_refused_as_a_top_up_not_as_an_adjustment(owner):
    # The operator typed a top-up: the refusal names what they did, not the adjustment they did not make.
    with pytest.raises(CommandError, match="A top-up must be positive"):
        call_command("top_up", "--org", owner.org.pk, "--cents", "0", "--json", stdout=io.StringIO())
    assert not LedgerEntry.objects.exists()


def test_the_largest_entry_the_message_allows_is_accepted_and_one_cent_more_is_refused(owner):
    # "At most N cents per entry": N itself is allowed, for a top-up and for a debit alike.
    services.wallet_top_up(organization=owner.org, cents=services.MAX_ENTRY_CENTS)
    services.wallet_adjust(organization=owner.org, cents=-services.MAX_ENTRY_CENTS, reason="reversal")
    for call in (
        lambda: services.wallet_top_up(organization=owner.org, cents=services.MAX_ENTRY_CENTS + 1),
        lambda: services.wallet_adjust(organization=owner.org, cents=-services.MAX_ENTRY_CENTS - 1, reason="x"),
    ):
        with pytest.raises(Validation) as refused:
            call()
        assert refused.value.details["fields"]["cents"] == [f"At most {services.MAX_ENTRY_CENTS} cents per entry."]
    assert balance(owner) == 0 and LedgerEntry.objects.count() == 2


def test_a_reference_of_a_top_up_is_refused_for_an_adjustment_of_the_same_amount(owner):
    # Finance records a +$50 adjustment quoting the bank reference of an earlier $50 top-up by mistake: it is
    # refused, not answered "already recorded" with the top-up while the adjustment is silently never made.
    services.wallet_top_up(organization=owner.org, cents=5000, reference="wire-77")

    with pytest.raises(Validation) as refused:
        services.wallet_adjust(organization=owner.org, cents=5000, reason="goodwill credit", reference="wire-77")

    assert "reference" in refused.value.details["fields"]
    assert list(LedgerEntry.objects.values_list("kind", flat=True)) == [LedgerEntry.Kind.TOP_UP]
    assert balance(owner) == 5000


def test_the_wallets_updated_at_is_the_time_of_its_latest_entry(owner):
    # The admin's wallet list shows "updated at": it moves with every entry, whichever writer made it.
    first = services.wallet_top_up(organization=owner.org, cents=100)
    assert Wallet.objects.get(pk=owner.org.pk).updated_at == first.created_at
    second = services.wallet_adjust(organization=owner.org, cents=-30, reason="fee")
    assert Wallet.objects.get(pk=owner.org.pk).updated_at == second.created_at > first.created_at


def test_organizations_charged_in_one_batch_each_get_a_time_after_their_own_newest_entry(owner, sibling):
    # Two organizations whose newest entries were recorded by hosts whose clocks ran ahead, by different amounts.
    # The renewal job charges both in one statement: each charge must sort after its own ledger's newest entry,
    # or the partner paging newest first passes it for good (billing.services._entry_time).
    now = timezone.now()
    leases = {}
    for tenant, ahead in ((owner, timedelta(hours=1)), (sibling, timedelta(hours=2))):
        leases[tenant.org.pk] = lease_assign(tenant, price_cents=4900, at=now - timedelta(days=40))
        with time_machine.travel(now + ahead):
            services.wallet_top_up(organization=tenant.org, cents=100, reason="ahead")

    assert services.lease_charges_run() == 2

    for tenant in (owner, sibling):
        newest_top_up = LedgerEntry.objects.get(organization=tenant.org, kind=LedgerEntry.Kind.TOP_UP)
        month_2 = LedgerEntry.objects.get(lease=leases[tenant.org.pk], period_index=1)
        assert month_2.created_at == newest_top_up.created_at + timedelta(milliseconds=1)
        ledger = tenant.client.get("/v1/wallet/entries").json()["data"]
        assert "ahead" not in ledger[0]["description"] and ledger[1]["description"] == "ahead"
