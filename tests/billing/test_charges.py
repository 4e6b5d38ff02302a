"""Lease charges: the first month on assignment, each later month at its period start (clamped at month
end), catch-up after downtime, release without refund, and the insufficient-funds policy."""

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from billing import services
from billing.models import LedgerEntry, Wallet
from leasing.periods import add_months, period_bounds
from tests.billing.factories import balance, charges, lease_assign, lease_release
from tests.staff import staff_login, with_mfa

pytestmark = pytest.mark.django_db


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_assignment_charges_the_first_month_from_the_assignment_instant(owner):
    services.wallet_top_up(organization=owner.org, cents=10_000)

    lease = lease_assign(owner, price_cents=4900, at=at(2025, 3, 10, 14, 30))

    assert charges(lease) == [(0, at(2025, 3, 10, 14, 30), at(2025, 4, 10, 14, 30), -4900)]
    assert balance(owner) == 5100
    assert Wallet.objects.get(pk=owner.org.pk).status == "ok"


def test_billing_start_twice_charges_the_first_month_once(owner):
    lease = lease_assign(owner, price_cents=4900, at=at(2025, 3, 10))

    services.lease_billing_start(lease=lease)
    services.lease_billing_start(lease=lease)

    assert len(charges(lease)) == 1
    assert balance(owner) == -4900


def test_a_renewal_is_charged_at_its_period_start_and_not_a_moment_before(owner):
    lease = lease_assign(owner, price_cents=1000, at=at(2025, 3, 10, 9))

    assert services.lease_charges_run(now=at(2025, 4, 10, 9) - timedelta(microseconds=1)) == 0
    assert [c[0] for c in charges(lease)] == [0]

    assert services.lease_charges_run(now=at(2025, 4, 10, 9)) == 1
    assert charges(lease)[1] == (1, at(2025, 4, 10, 9), at(2025, 5, 10, 9), -1000)
    assert balance(owner) == -2000


def test_the_renewal_day_is_the_utc_day_of_the_assignment_as_the_docs_say(owner):
    from zoneinfo import ZoneInfo

    california = ZoneInfo("America/Los_Angeles")
    # assigned late on Feb 28 in California: already Mar 1 in UTC
    lease = lease_assign(owner, price_cents=1000, at=datetime(2026, 2, 28, 20, tzinfo=california))

    assert services.lease_charges_run(now=datetime(2026, 3, 28, 20, tzinfo=california)) == 0
    assert services.lease_charges_run(now=at(2026, 4, 1, 4) - timedelta(microseconds=1)) == 0
    assert services.lease_charges_run(now=at(2026, 4, 1, 4)) == 1
    assert charges(lease)[1][1] == at(2026, 4, 1, 4)


@pytest.mark.parametrize(
    ("assigned", "expected_starts"),
    [
        # leap year: Jan 31 → Feb 29 → Mar 31 → Apr 30 → May 31 (never drifts to the 29th or 30th)
        (at(2028, 1, 31, 23, 59), [(2028, 1, 31), (2028, 2, 29), (2028, 3, 31), (2028, 4, 30), (2028, 5, 31)]),
        (at(2027, 1, 31, 8), [(2027, 1, 31), (2027, 2, 28), (2027, 3, 31), (2027, 4, 30), (2027, 5, 31)]),
        (at(2027, 8, 30, 12), [(2027, 8, 30), (2027, 9, 30), (2027, 10, 30), (2027, 11, 30), (2027, 12, 30)]),
        (at(2027, 12, 31, 0), [(2027, 12, 31), (2028, 1, 31), (2028, 2, 29), (2028, 3, 31), (2028, 4, 30)]),
    ],
)
def test_periods_are_clamped_at_month_end_and_counted_from_the_assignment(owner, assigned, expected_starts):
    lease = lease_assign(owner, price_cents=700, at=assigned)

    # the job runs every day for five months
    day = assigned
    while day < assigned + timedelta(days=125):
        day += timedelta(days=1)
        services.lease_charges_run(now=day)

    starts = [(c[1].year, c[1].month, c[1].day) for c in charges(lease)]
    assert starts[:5] == expected_starts
    assert all(c[1].time() == assigned.time() for c in charges(lease))
    assert [c[2] for c in charges(lease)][:4] == [c[1] for c in charges(lease)][1:5]  # contiguous periods


@pytest.mark.parametrize(
    "assigned",
    [
        at(2024, 1, 31, 23, 59, 59, 999999),
        at(2024, 2, 29, 0, 0),
        at(2023, 3, 31, 12),
        at(2024, 5, 31, 6, 30),
        at(2024, 8, 31),
        at(2024, 10, 31, 1),
        at(2024, 12, 31, 23),
        at(2024, 11, 30, 5),
        at(2024, 6, 15, 10, 15, 30, 123456),
    ],
)
def test_the_bulk_job_computes_the_same_periods_as_leasing_periods(owner, assigned):
    lease = lease_assign(owner, price_cents=100, at=assigned)

    services.lease_charges_run(now=assigned + timedelta(days=800))

    got = [(c[0], c[1], c[2]) for c in charges(lease)]
    assert len(got) >= 26
    assert got == [(i, *period_bounds(assigned, i)) for i in range(len(got))]
    _, last_end = period_bounds(assigned, len(got) - 1)
    assert last_end > assigned + timedelta(days=800)  # every started period, and no period not yet started


def test_after_downtime_each_missed_period_is_charged_once(owner):
    lease = lease_assign(owner, price_cents=2500, at=at(2025, 1, 15, 10))

    # the job was down for 4 months and a half, then runs twice
    assert services.lease_charges_run(now=at(2025, 6, 1)) == 4
    assert services.lease_charges_run(now=at(2025, 6, 1)) == 0

    assert [(c[0], c[1].date().isoformat()) for c in charges(lease)] == [
        (0, "2025-01-15"),
        (1, "2025-02-15"),
        (2, "2025-03-15"),
        (3, "2025-04-15"),
        (4, "2025-05-15"),
    ]
    assert balance(owner) == -5 * 2500


def test_running_the_job_twice_charges_each_lease_once_per_period(owner, sibling):
    leases = [lease_assign(t, price_cents=300 + i, at=at(2025, 2, 1 + i)) for i, t in enumerate([owner, sibling] * 3)]

    first = services.lease_charges_run(now=at(2025, 3, 20), batch_size=2)
    second = services.lease_charges_run(now=at(2025, 3, 20), batch_size=2)

    assert (first, second) == (6, 0)
    for lease in leases:
        assert [c[0] for c in charges(lease)] == [0, 1]
    assert balance(owner) == -2 * (300 + 302 + 304)
    assert balance(sibling) == -2 * (301 + 303 + 305)


def test_release_mid_period_refunds_nothing_and_stops_the_next_renewal(owner):
    services.wallet_top_up(organization=owner.org, cents=20_000)
    lease = lease_assign(owner, price_cents=4900, at=at(2025, 3, 10))
    services.lease_charges_run(now=at(2025, 4, 10, 1))

    paid_through = lease_release(lease, at=at(2025, 4, 20))

    assert paid_through == at(2025, 5, 10)
    services.lease_charges_run(now=at(2025, 5, 10))
    services.lease_charges_run(now=at(2025, 9, 1))
    assert [c[0] for c in charges(lease)] == [0, 1]
    assert balance(owner) == 20_000 - 2 * 4900  # no refund entry either
    assert not LedgerEntry.objects.filter(organization=owner.org, amount_cents__gt=0).exclude(kind="top_up").exists()


def test_a_release_after_a_period_started_settles_that_period_even_if_the_job_has_not_run(owner):
    # given a renewal due at 2025-04-10 00:00 that the job (lagging) has not charged yet
    lease = lease_assign(owner, price_cents=4900, at=at(2025, 3, 10))

    # when the account is released half an hour into the new period
    paid_through = lease_release(lease, at=at(2025, 4, 10, 0, 30))

    # then that started month is charged once, and paidThrough says so; the job adds nothing later
    assert paid_through == at(2025, 5, 10)
    assert [c[0] for c in charges(lease)] == [0, 1]
    assert services.lease_charges_run(now=at(2025, 6, 1)) == 0
    assert services.lease_paid_through(lease=lease, now=at(2025, 6, 1)) == at(2025, 5, 10)


@pytest.mark.django_db(transaction=True)  # the settlement runs once the release has committed
@pytest.mark.parametrize("how", ["leased-accounts", "social-accounts", "admin"])
def test_every_way_of_releasing_settles_the_started_month_at_once(owner, how):
    # given a lease whose second month began an hour ago, not charged yet (the job runs every 15 minutes)
    lease = lease_assign(owner, price_cents=4900, at=add_months(timezone.now(), -1) - timedelta(hours=1))
    assert [c[0] for c in charges(lease)] == [0]

    if how == "admin":
        admin = Client()
        staff_login(admin, with_mfa(get_user_model().objects.create_superuser("ops", "o@layers.test", "pw-ops-1234")))
        admin.post("/admin/leasing/lease/", {"action": "release_leases", "post": "yes", "_selected_action": [lease.pk]})
    else:
        path = "leased-accounts" if how == "leased-accounts" else "social-accounts"
        assert owner.client.delete(f"/v1/{path}/{lease.social_account_id}").status_code == 200

    # then that month is charged by the release itself, once, whichever way it was released
    lease.refresh_from_db()
    assert lease.released_at is not None
    assert [c[0] for c in charges(lease)] == [0, 1]
    assert services.lease_charges_run() == 0
    assert balance(owner) == -9800


@pytest.mark.parametrize("job", ["bulk", "per_lease"])
def test_the_job_charges_the_period_a_release_fell_in_if_the_release_did_not(owner, job):
    # given a lease released half an hour into its second month, by a path that did not settle that month
    lease = lease_assign(owner, price_cents=4900, at=at(2025, 3, 10))
    lease.released_at = at(2025, 4, 10, 0, 30)
    lease.save(update_fields=["released_at"])
    other = lease_assign(owner, price_cents=1000, at=at(2025, 3, 20))
    other.released_at = at(2025, 4, 1)  # released before its second month began: owes nothing more
    other.save(update_fields=["released_at"])

    # when the renewal job runs, long after
    run = services.lease_charges_run if job == "bulk" else services.charge_due_per_lease
    assert run(now=at(2025, 9, 1)) == 1

    # then the started month is charged once, nothing after the release, and a second run adds nothing
    assert [c[0] for c in charges(lease)] == [0, 1]
    assert [c[0] for c in charges(other)] == [0]
    assert run(now=at(2025, 9, 1)) == 0
    assert balance(owner) == -4900 * 2 - 1000


def test_a_release_in_the_first_month_is_paid_through_its_end(owner):
    lease = lease_assign(owner, price_cents=4900, at=at(2025, 3, 10))

    assert lease_release(lease, at=at(2025, 3, 11)) == at(2025, 4, 10)
    assert services.lease_charges_run(now=at(2025, 8, 1)) == 0
    assert balance(owner) == -4900


def test_a_charge_the_wallet_cannot_cover_is_recorded_and_the_wallet_is_past_due(owner):
    services.wallet_top_up(organization=owner.org, cents=3000)

    lease = lease_assign(owner, price_cents=4900, at=at(2025, 3, 10))

    # the charge is never skipped: the balance goes negative and the wallet is past due
    assert charges(lease) == [(0, at(2025, 3, 10), at(2025, 4, 10), -4900)]
    wallet = Wallet.objects.get(pk=owner.org.pk)
    assert (balance(owner), wallet.status) == (-1900, "past_due")
    assert wallet.past_due_since is not None

    # the renewal is charged too, and the wallet stays past due from the first time it went negative
    services.lease_charges_run(now=at(2025, 4, 10))
    assert balance(owner) == -6800
    assert Wallet.objects.get(pk=owner.org.pk).past_due_since == wallet.past_due_since

    # a top-up that does not cover the debt leaves it past due; one that does clears it
    services.wallet_top_up(organization=owner.org, cents=6000)
    assert Wallet.objects.get(pk=owner.org.pk).status == "past_due"
    services.wallet_top_up(organization=owner.org, cents=800)
    wallet = Wallet.objects.get(pk=owner.org.pk)
    assert (balance(owner), wallet.status, wallet.past_due_since) == (0, "ok", None)


def test_a_renewal_by_the_job_that_the_wallet_cannot_cover_makes_it_past_due(owner, sibling):
    services.wallet_top_up(organization=owner.org, cents=5000)
    services.wallet_top_up(organization=sibling.org, cents=100_000)
    lease_assign(owner, price_cents=4900, at=at(2025, 3, 10))
    lease_assign(sibling, price_cents=4900, at=at(2025, 3, 10))

    services.lease_charges_run(now=at(2025, 4, 10))

    owner_wallet, sibling_wallet = (Wallet.objects.get(pk=t.org.pk) for t in (owner, sibling))
    assert (balance(owner), owner_wallet.status) == (-4800, "past_due")
    assert owner_wallet.past_due_since is not None
    assert (balance(sibling), sibling_wallet.status, sibling_wallet.past_due_since) == (100_000 - 9800, "ok", None)


def test_a_debit_adjustment_can_make_a_wallet_past_due_and_a_credit_clears_it(owner, django_user_model):
    finance = django_user_model.objects.create_user(username="fin", is_staff=True)
    services.wallet_top_up(organization=owner.org, cents=1000)

    services.wallet_adjust(organization=owner.org, cents=-1500, reason="chargeback", actor=finance)
    assert Wallet.objects.get(pk=owner.org.pk).status == "past_due"
    entry = services.wallet_adjust(organization=owner.org, cents=500, reason="goodwill", actor=finance)

    assert Wallet.objects.get(pk=owner.org.pk).status == "ok"
    assert (entry.kind, entry.amount_cents, entry.reason, entry.actor) == ("adjustment", 500, "goodwill", finance)
    assert balance(owner) == 0


def test_the_job_leaves_released_leases_and_future_periods_alone(owner):
    live = lease_assign(owner, price_cents=100, at=at(2025, 1, 5))
    released = lease_assign(owner, price_cents=100, at=at(2025, 1, 5))
    lease_release(released, at=at(2025, 1, 20))

    services.lease_charges_run(now=at(2025, 3, 4))

    assert [c[0] for c in charges(live)] == [0, 1]
    assert [c[0] for c in charges(released)] == [0]


def test_the_per_lease_fallback_charges_exactly_what_the_bulk_job_charges(owner, sibling):
    anchors = [at(2024, 1, 31, 10), at(2024, 2, 29), at(2024, 7, 31, 23, 59), at(2024, 12, 31, 5)]
    bulk = [lease_assign(owner, price_cents=100, at=a) for a in anchors]
    services.lease_charges_run(now=at(2025, 4, 1))  # the bulk statement, on PostgreSQL

    # the same leases in another organization, charged by the per-lease path (SQLite dev uses it)
    per_lease = [lease_assign(sibling, price_cents=100, at=a) for a in anchors]
    recorded = services.charge_due_per_lease(now=at(2025, 4, 1))

    assert recorded == sum(len(charges(b)) - 1 for b in bulk) > 0  # the owner's leases were already done
    for b, p in zip(bulk, per_lease, strict=True):
        assert [c[:3] for c in charges(b)] == [c[:3] for c in charges(p)]
    assert balance(owner) == balance(sibling)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda org: services.wallet_top_up(organization=org, cents=0), "cents"),
        (lambda org: services.wallet_top_up(organization=org, cents=-5), "cents"),
        (lambda org: services.wallet_top_up(organization=org, cents=12.5), "cents"),
        (lambda org: services.wallet_top_up(organization=org, cents=10**13), "cents"),
        (lambda org: services.wallet_adjust(organization=org, cents=0, reason="x"), "cents"),
        (lambda org: services.wallet_adjust(organization=org, cents=-100, reason="  "), "reason"),
    ],
)
def test_invalid_top_ups_and_adjustments_are_refused_and_record_nothing(owner, call, field):
    from config.api.errors import Validation

    with pytest.raises(Validation) as refused:
        call(owner.org)

    assert field in refused.value.details["fields"]
    assert not LedgerEntry.objects.filter(organization=owner.org).exists()


def test_a_top_up_with_a_reference_is_recorded_once(owner):
    from config.api.errors import Validation

    first = services.wallet_top_up(organization=owner.org, cents=2500, reference="wire-881")
    again = services.wallet_top_up(organization=owner.org, cents=2500, reference="wire-881")

    assert again.pk == first.pk
    assert balance(owner) == 2500
    with pytest.raises(Validation):
        services.wallet_top_up(organization=owner.org, cents=9999, reference="wire-881")
    assert balance(owner) == 2500
