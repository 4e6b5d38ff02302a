"""The renewal job run concurrently on real PostgreSQL (threads, each with its own connection) charges
every lease once per period, and keeps every wallet equal to its ledger, even while top-ups, assignments
and releases happen at the same time."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from billing import services
from billing.models import LedgerEntry
from leasing.periods import add_months, period_index_at
from tests.billing.factories import balance, charges, lease_assign, lease_release
from tests.concurrency import run_in_threads

pytestmark = pytest.mark.django_db(transaction=True)

NOW = datetime(2025, 9, 1, 12, tzinfo=UTC)


def test_the_job_run_twice_concurrently_charges_each_lease_once_per_period(owner, sibling, outsider):
    tenants = [owner, sibling, outsider]
    leases = [
        lease_assign(tenants[i % 3], price_cents=100 + i % 7, at=datetime(2025, 1, 1 + i % 28, i % 24, tzinfo=UTC))
        for i in range(120)
    ]

    counts = run_in_threads(
        lambda: services.lease_charges_run(now=NOW, batch_size=16),
        lambda: services.lease_charges_run(now=NOW, batch_size=16),
    )

    expected = {lease.pk: period_index_at(lease.assigned_at, NOW) for lease in leases}
    assert sum(counts) == sum(expected.values())  # every renewal recorded by exactly one of the two runs
    for lease in leases:
        assert [c[0] for c in charges(lease)] == list(range(expected[lease.pk] + 1))
    for tenant in tenants:
        balance(tenant)  # asserts cached balance == sum(ledger)
    assert services.lease_charges_run(now=NOW) == 0


def test_three_jobs_with_different_batch_sizes_and_a_release_and_top_ups_at_the_same_time(owner, sibling):
    leases = [
        lease_assign([owner, sibling][i % 2], price_cents=250, at=datetime(2025, 2, 28, tzinfo=UTC)) for i in range(60)
    ]
    released = leases[0]

    # The release happens while the jobs run, at their instant, as a real one does (released_at is the
    # moment of the release): its paid-through charging and the jobs race for the same uncharged periods.
    # (An earlier version released "in the past", at a date the jobs may already have charged beyond:
    # whether those periods were charged then depended on which thread committed first.)
    run_in_threads(
        lambda: services.lease_charges_run(now=NOW, batch_size=7),
        lambda: services.lease_charges_run(now=NOW, batch_size=50),
        lambda: services.lease_charges_run(now=NOW, batch_size=2000),
        lambda: lease_release(released, at=NOW),
        lambda: [services.wallet_top_up(organization=owner.org, cents=10) for _ in range(20)],
        lambda: [services.wallet_top_up(organization=sibling.org, cents=10) for _ in range(20)],
    )

    # 2025-02-28 + 6 months: the periods of Feb 28, Mar 28, …, Aug 28 have started by NOW, each charged once
    for lease in leases:
        assert [c[0] for c in charges(lease)] == [0, 1, 2, 3, 4, 5, 6]
    assert balance(owner) == 20 * 10 - 30 * 7 * 250
    assert balance(sibling) == 20 * 10 - 30 * 7 * 250

    # Two months on, the job renews every lease but the released one.
    assert services.lease_charges_run(now=add_months(NOW, 2)) == 59 * 2
    assert [c[0] for c in charges(released)] == [0, 1, 2, 3, 4, 5, 6]
    assert [c[0] for c in charges(leases[1])] == [0, 1, 2, 3, 4, 5, 6, 7, 8]
    assert balance(owner) == 20 * 10 - (30 * 7 + 29 * 2) * 250


def test_an_assignment_committing_while_the_job_runs_is_charged_once(owner):
    leases = [lease_assign(owner, price_cents=100, at=NOW - timedelta(days=40 + i)) for i in range(40)]
    created = []

    def assign():
        created.append(lease_assign(owner, price_cents=100, at=NOW - timedelta(days=35)))

    run_in_threads(lambda: services.lease_charges_run(now=NOW, batch_size=5), assign)
    services.lease_charges_run(now=NOW)

    assert [c[0] for c in charges(created[0])] == [0, 1]
    periods = sum(period_index_at(lease.assigned_at, NOW) + 1 for lease in [*leases, created[0]])
    assert LedgerEntry.objects.filter(organization=owner.org).count() == periods
    assert balance(owner) == -periods * 100


def test_the_finance_page_reads_totals_and_rows_from_one_snapshot(owner, sibling, monkeypatch):
    """A charge committed while the page is being read (after its totals, before its rows) is on neither:
    the page's totals always add up to its rows. The next view shows it on both."""
    from billing import reports

    march = datetime(2026, 3, 1, tzinfo=UTC)
    lease_assign(owner, price_cents=4900, at=datetime(2026, 3, 3, tzinfo=UTC))
    read_rows = reports._rows
    committed = threading.Event()

    def charge_meanwhile():
        try:
            lease_assign(sibling, price_cents=2500, at=datetime(2026, 3, 9, tzinfo=UTC))
        finally:
            connection.close()
            committed.set()

    def rows_after_a_concurrent_charge(*args, **kwargs):
        writer = threading.Thread(target=charge_meanwhile)
        writer.start()
        writer.join()
        assert committed.is_set()
        return read_rows(*args, **kwargs)

    monkeypatch.setattr(reports, "_rows", rows_after_a_concurrent_charge)
    page = reports.monthly_report(month=march.date())
    monkeypatch.setattr(reports, "_rows", read_rows)

    assert page.charge_count == len(page.table) == 1
    assert page.total_cents == sum(int(row[-1].replace(".", "")) for row in page.table) == 4900
    later = reports.monthly_report(month=march.date())
    assert later.charge_count == len(later.table) == 2 and later.total_cents == 4900 + 2500
