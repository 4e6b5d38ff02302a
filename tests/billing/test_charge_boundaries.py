"""Billing at its boundaries: a release at the very instant a month starts, a balance brought to exactly zero,
a top-up reference reused by another organization, the first day a wallet went into debt."""

from datetime import UTC, datetime, timedelta

import pytest

from billing import services
from tests.billing.factories import balance, charges, lease_assign, lease_release

pytestmark = pytest.mark.django_db


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_a_release_at_the_very_instant_a_month_starts_does_not_owe_that_month(owner):
    # a lease released at the exact instant its second month starts owes the first month only
    # (the month must have started *before* the release: billing/services._owed_indexes).
    lease = lease_assign(owner, price_cents=1000, at=at(2025, 3, 10, 9))

    paid_through = lease_release(lease, at=at(2025, 4, 10, 9))

    assert [c[0] for c in charges(lease)] == [0]
    assert paid_through == at(2025, 4, 10, 9)
    assert balance(owner) == -1000


def test_the_renewal_job_does_not_charge_a_month_that_starts_at_the_release_instant(owner):
    # same boundary in the bulk SQL (a release whose settlement did not run: the job settles it).
    lease = lease_assign(owner, price_cents=1000, at=at(2025, 3, 10, 9))
    lease.released_at = at(2025, 4, 10, 9)
    lease.save(update_fields=["released_at"])

    services.lease_charges_run(now=at(2025, 6, 1))

    assert [c[0] for c in charges(lease)] == [0]
    assert balance(owner) == -1000
    # and it is marked settled, so the job stops reading it (Lease.charges_settled)
    lease.refresh_from_db()
    assert lease.charges_settled


def test_the_per_lease_fallback_charges_a_month_at_its_first_instant_like_the_bulk_job(owner):
    # the per-lease job (SQLite fallback, and the settlement path) charges a month once it has started,
    # start <= now, exactly like the bulk statement (test_a_renewal_is_charged_at_its_period_start...).
    lease = lease_assign(owner, price_cents=1000, at=at(2025, 3, 10, 9))

    assert services.charge_due_per_lease(now=at(2025, 4, 10, 9) - timedelta(microseconds=1)) == 0
    assert services.charge_due_per_lease(now=at(2025, 4, 10, 9)) == 1
    assert [c[0] for c in charges(lease)] == [0, 1]


def test_a_renewal_that_brings_the_balance_to_exactly_zero_leaves_the_wallet_ok(owner):
    # the renewal job's SQL sets past_due only below zero, as _move_balance does (README: past due
    # until the balance is back to >= 0). A wallet at exactly 0 after a renewal is not past due.
    from billing.models import Wallet

    services.wallet_top_up(organization=owner.org, cents=2000)
    lease_assign(owner, price_cents=1000, at=at(2025, 3, 10, 9))

    assert services.lease_charges_run(now=at(2025, 4, 10, 9)) == 1

    wallet = Wallet.objects.get(pk=owner.org.pk)
    assert wallet.balance_cents == 0
    assert wallet.past_due_since is None
    assert wallet.status == "ok"


def test_the_same_reference_in_two_organizations_credits_each_of_them(owner, sibling):
    # a reference makes a top-up idempotent *per organization* (LedgerEntry.reference help text, the
    # constraint ledger_reference_once). Another organization's use of the same reference ("INV-1") must not
    # swallow this organization's top-up by returning the other's entry.
    first = services.wallet_top_up(organization=owner.org, cents=2500, reference="INV-1")
    second = services.wallet_top_up(organization=sibling.org, cents=2500, reference="INV-1")

    assert not getattr(second, "already_recorded", False)
    assert second.pk != first.pk and second.organization_id == sibling.org.pk
    assert balance(owner) == 2500
    assert balance(sibling) == 2500


def test_past_due_since_stays_at_the_first_time_the_balance_went_negative(owner, django_user_model):
    # `pastDueSince` says since when the wallet has been below zero; a further debit while it is still
    # negative must not move it forward (finance chases the oldest debts by it).
    import time_machine

    from billing.models import Wallet

    with time_machine.travel(at(2025, 3, 1, 12), tick=False):
        services.wallet_adjust(organization=owner.org, cents=-500, reason="setup fee")
    with time_machine.travel(at(2025, 3, 20, 12), tick=False):
        services.wallet_adjust(organization=owner.org, cents=-700, reason="extra work")

    wallet = Wallet.objects.get(pk=owner.org.pk)
    assert wallet.balance_cents == -1200
    assert wallet.past_due_since == at(2025, 3, 1, 12)


def test_a_release_the_partner_reads_at_the_instant_a_month_starts_does_not_owe_that_month(owner):
    # The API writes times to the millisecond (cut). A release 0.6 ms after the second month started was
    # answered `releasedAt` 2028-02-29T10:00:00.000Z, the very `currentPeriodEnd` the partner had read, which
    # owes nothing (test_a_release_at_the_very_instant_a_month_starts_does_not_owe_that_month), and yet
    # `paidThrough` a month later and a second month charged: what the partner reads could not explain it.
    import time_machine

    lease = lease_assign(owner, price_cents=1000, at=at(2028, 1, 31, 10))
    listed = owner.client.get(f"/v1/projects/{owner.project.id}/leased-accounts").json()["data"][0]
    assert listed["currentPeriodEnd"] == "2028-02-29T10:00:00.000Z"

    with time_machine.travel(at(2028, 2, 29, 10, 0, 0, 600), tick=False):
        response = owner.client.delete(f"/v1/leased-accounts/{lease.social_account_id}")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["releasedAt"] == listed["currentPeriodEnd"]
    assert body["paidThrough"] == "2028-02-29T10:00:00.000Z"
    assert [c[0] for c in charges(lease)] == [0]
    assert balance(owner) == -1000


def test_a_release_in_the_millisecond_a_renewal_was_charged_is_answered_after_that_month_started(owner):
    # The renewal job charges a month once start <= now, to the microsecond; a release is stored to the
    # millisecond (cut), and owes a month only if it started before `releasedAt`. A job run 0.3 ms into the
    # second month charged it, and a release 0.3 ms later was stored and answered at that month's very start
    # (the `currentPeriodEnd` the partner had read, which owes nothing) with `paidThrough` a month later: the
    # ledger held a month starting at the release, which the answer's own rule says is not owed.
    import time_machine

    lease = lease_assign(owner, price_cents=1000, at=at(2028, 1, 31, 10))
    with time_machine.travel(at(2028, 2, 29, 10, 0, 0, 300), tick=False):
        services.lease_charges_run()
    with time_machine.travel(at(2028, 2, 29, 10, 0, 0, 600), tick=False):
        response = owner.client.delete(f"/v1/leased-accounts/{lease.social_account_id}")

    assert response.status_code == 200, response.content
    body = response.json()
    assert [c[0] for c in charges(lease)] == [0, 1]  # a charge is never taken back
    assert body["paidThrough"] == "2028-03-31T10:00:00.000Z"
    # Released after the month it was charged started: one millisecond after it, the finest step written.
    assert body["releasedAt"] == "2028-02-29T10:00:00.001Z"
    lease.refresh_from_db()
    assert all(start < lease.released_at for _, start, _, _ in charges(lease)[1:])
    assert balance(owner) == -2000
