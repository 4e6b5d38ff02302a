"""The renewal job's cost follows the leases that can be due, not every lease ever made: released leases
whose months are all settled (the history, which only grows) are not read again at every tick."""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from billing import services
from leasing.models import Lease
from tests.billing.factories import balance, charges, lease_assign, lease_release

pytestmark = pytest.mark.django_db

HISTORY = 30


def rows_read(table: str) -> int:
    """Rows of `table` this transaction has read so far, by sequential or index scans (PostgreSQL's own
    per-transaction counters)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(sum(seq_tup_read), 0) + coalesce(sum(idx_tup_fetch), 0) "
            "FROM pg_stat_xact_user_tables WHERE relname = %s",
            [table],
        )
        return cursor.fetchone()[0]


def test_the_renewal_job_reads_the_leases_that_can_be_due_not_the_released_history(owner):
    now = timezone.now()
    for _ in range(HISTORY):  # leased for a while long ago, released, every month settled
        lease_release(lease_assign(owner, price_cents=100, at=now - timedelta(days=400)), at=now - timedelta(days=300))
    not_yet = lease_assign(owner, price_cents=1000, at=now - timedelta(days=3))
    due = lease_assign(owner, price_cents=1000, at=now - timedelta(days=40))  # its second month has started
    # Released after its second month started, whose settlement after the release failed: the job owes it.
    unsettled = lease_assign(owner, price_cents=1000, at=now - timedelta(days=45))
    Lease.objects.filter(pk=unsettled.pk).update(released_at=now - timedelta(days=2))
    before = balance(owner)
    # A table this small is cheapest to scan whole; what is measured here is what the job reads when the
    # table is large, i.e. when the planner goes through an index.
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
    leases_read, ledger_read = rows_read("leasing_lease"), rows_read("billing_ledgerentry")

    assert services.lease_charges_run(now=now) == 2

    # Each lease the job charges is read a few times (picked, charged, moved on); the history is not read.
    assert rows_read("leasing_lease") - leases_read <= 3 * 2
    assert rows_read("billing_ledgerentry") - ledger_read <= 3 * 2
    assert [c[0] for c in charges(due)] == [0, 1]
    assert [c[0] for c in charges(unsettled)] == [0, 1]
    assert [c[0] for c in charges(not_yet)] == [0]
    assert balance(owner) == before - 2000

    # A second run finds nothing to charge and reads (almost) nothing.
    leases_read = rows_read("leasing_lease")
    assert services.lease_charges_run(now=now) == 0
    assert rows_read("leasing_lease") - leases_read == 0


def test_a_lease_inserted_without_its_next_charge_time_is_still_charged(owner):
    """A lease written by the release still running during a deploy (or a bulk load) gets the column's early
    default: the job reads it once, charges what is owed from the ledger and moves it on."""
    lease = lease_assign(owner, price_cents=1000, at=timezone.now() - timedelta(days=70))
    Lease.objects.filter(pk=lease.pk).update(next_charge_at=Lease.CHARGE_CHECK_FROM)

    assert services.lease_charges_run() == 2
    assert [c[0] for c in charges(lease)] == [0, 1, 2]
    assert services.lease_charges_run() == 0
