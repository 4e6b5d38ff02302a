"""The ledger is append-only in the database itself: PostgreSQL refuses UPDATE and DELETE of its rows,
whoever asks (raw SQL, the ORM), and refuses a second charge of one lease period."""

from datetime import UTC, datetime

import pytest
from django.db import IntegrityError, connection, transaction

from billing import services
from billing.models import LedgerEntry
from tests.billing.factories import balance, lease_assign

pytestmark = pytest.mark.django_db


def test_postgresql_refuses_to_update_a_ledger_row(owner):
    entry = services.wallet_top_up(organization=owner.org, cents=1000, reason="wire")

    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE billing_ledgerentry SET amount_cents = 1000000 WHERE id = %s", [entry.pk])

    assert LedgerEntry.objects.get(pk=entry.pk).amount_cents == 1000


def test_postgresql_refuses_to_delete_a_ledger_row(owner):
    entry = services.wallet_top_up(organization=owner.org, cents=1000, reason="wire")

    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM billing_ledgerentry WHERE id = %s", [entry.pk])
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        LedgerEntry.objects.filter(pk=entry.pk).delete()
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        LedgerEntry.objects.filter(pk=entry.pk).update(reason="edited")

    assert LedgerEntry.objects.filter(pk=entry.pk, reason="wire").exists()


def test_postgresql_refuses_a_second_charge_of_the_same_lease_period(owner):
    lease = lease_assign(owner, price_cents=4900, at=datetime(2025, 3, 10, tzinfo=UTC))
    charge = LedgerEntry.objects.get(lease=lease)

    with pytest.raises(IntegrityError, match="one_charge_per_lease_period"), transaction.atomic():
        connection.cursor().execute(
            "INSERT INTO billing_ledgerentry (id, organization_id, kind, amount_cents, reason, reference, lease_id,"
            " period_index, period_start, period_end, created_at) VALUES"
            " ('le_0123456789abcdef0123456789abcdef', %s, 'lease_charge', -4900, '', '', %s, 0, %s, %s, now())",
            [owner.org.pk, lease.pk, charge.period_start, charge.period_end],
        )

    assert LedgerEntry.objects.filter(lease=lease).count() == 1
    assert balance(owner) == -4900


def test_a_malformed_entry_is_refused_by_the_database(owner):
    with pytest.raises(IntegrityError, match="ledger_entry_shape"), transaction.atomic():
        LedgerEntry.objects.create(organization=owner.org, kind="top_up", amount_cents=-100)


def test_only_an_adjustment_may_name_the_leased_account_it_is_for(owner):
    """`adjusted_lease` says which leased account a refund or correction was for; the lease's page, the monthly
    billing per account and the partner's entries read it. On a top-up it would count a payment as a refund of
    that account, so the database refuses it, whatever writes the row."""
    lease = lease_assign(owner, price_cents=4900, at=datetime(2025, 3, 10, tzinfo=UTC))

    with pytest.raises(IntegrityError, match="ledger_adjusted_lease_on_adjustments"), transaction.atomic():
        LedgerEntry.objects.create(organization=owner.org, kind="top_up", amount_cents=4900, adjusted_lease=lease)

    refund = services.wallet_adjust(organization=owner.org, cents=4900, reason="refund", lease=lease)
    assert refund.adjusted_lease_id == lease.pk
    assert balance(owner) == 0
