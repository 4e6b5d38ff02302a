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

    # The history is not read: the job reads the leases that can owe (three here, each a few times).
    assert rows_read("leasing_lease") - leases_read <= 3 * 3
    assert rows_read("billing_ledgerentry") - ledger_read <= 3 * 3
    assert [c[0] for c in charges(due)] == [0, 1]
    assert [c[0] for c in charges(unsettled)] == [0, 1]
    assert [c[0] for c in charges(not_yet)] == [0]
    assert balance(owner) == before - 2000
    # Settled now, the released lease joins the history; the live leases stay open, whatever was charged.
    assert Lease.objects.get(pk=unsettled.pk).charges_settled
    assert not Lease.objects.filter(pk__in=[due.pk, not_yet.pk], charges_settled=True).exists()
    assert Lease.objects.filter(charges_settled=True).count() == HISTORY + 1

    # A second run charges nothing and reads the two live leases only.
    leases_read = rows_read("leasing_lease")
    assert services.lease_charges_run(now=now) == 0
    assert rows_read("leasing_lease") - leases_read <= 2


def test_a_released_lease_its_release_did_not_mark_is_marked_by_the_job_and_never_charged(owner):
    """A release path that did not settle (or a lease written by the previous release during a deploy) leaves
    a released lease unmarked: the job reads it once, charges what it owes (nothing here) and marks it."""
    now = timezone.now()
    lease = lease_assign(owner, price_cents=1000, at=now - timedelta(days=10))
    lease_release(lease, at=now - timedelta(days=5))
    Lease.objects.filter(pk=lease.pk).update(charges_settled=False)
    before = balance(owner)

    assert services.lease_charges_run(now=now + timedelta(days=60)) == 0
    assert Lease.objects.get(pk=lease.pk).charges_settled
    assert [c[0] for c in charges(lease)] == [0]
    assert balance(owner) == before


def test_a_release_settles_the_lease_and_a_live_lease_is_never_marked(owner):
    now = timezone.now()
    live = lease_assign(owner, price_cents=1000, at=now - timedelta(days=40))
    released = lease_assign(owner, price_cents=1000, at=now - timedelta(days=40))
    lease_release(released, at=now)  # settles its second month, started before the release
    assert Lease.objects.get(pk=released.pk).charges_settled
    assert [c[0] for c in charges(released)] == [0, 1]
    services.charge_due_per_lease(now=now)  # the path without the bulk statement
    assert [c[0] for c in charges(live)] == [0, 1]
    assert not Lease.objects.get(pk=live.pk).charges_settled
