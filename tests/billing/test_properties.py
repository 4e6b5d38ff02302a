"""Property: whatever the history of top-ups, adjustments, assignments, releases, renewal runs (or missed
runs) and elapsed time, every wallet equals the sum of its ledger and matches a simple model of what is
owed, and each lease is charged each of its started periods exactly once, never ahead of time."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing import services
from billing.models import Wallet
from leasing.periods import add_months, period_bounds
from tests.billing.factories import balance, charges, lease_assign, lease_release

pytestmark = pytest.mark.django_db

START = datetime(2024, 1, 31, 12, tzinfo=UTC)  # a month end in a leap year: the clamping is exercised

tenant_index = st.integers(0, 1)
steps = st.one_of(
    st.tuples(st.just("top_up"), tenant_index, st.integers(1, 50_000)),
    st.tuples(st.just("adjust"), tenant_index, st.integers(-30_000, 30_000).filter(bool)),
    st.tuples(st.just("assign"), tenant_index, st.integers(0, 20_000)),
    st.tuples(st.just("release"), st.integers(0, 50)),
    st.tuples(st.just("paid_through"), st.integers(0, 50)),
    st.tuples(st.just("advance"), st.integers(1, 24 * 75)),  # hours; the job may miss several periods
    st.tuples(st.just("job"), st.sampled_from([1, 3, 2000])),
)


@dataclass
class ModelLease:
    lease: object
    tenant: int
    price: int
    settled_until: datetime
    released_at: datetime | None = None

    def owed(self) -> list[int]:
        """Indexes the model says are charged: period 0, then every period started by the last settlement
        (job run, release, paidThrough) and before the release."""
        out, i = [0], 1
        while True:
            start = add_months(self.lease.assigned_at, i)
            if start > self.settled_until or (self.released_at is not None and start >= self.released_at):
                return out
            out.append(i)
            i += 1


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=st.lists(steps, min_size=1, max_size=30))
def test_random_histories_keep_every_wallet_equal_to_its_ledger_and_charge_each_period_once(owner, sibling, history):
    tenants = [owner, sibling]
    with transaction.atomic():  # each example starts from empty books
        now = START
        credits = [0, 0]
        leases: list[ModelLease] = []
        for step in history:
            kind = step[0]
            if kind == "top_up":
                services.wallet_top_up(organization=tenants[step[1]].org, cents=step[2])
                credits[step[1]] += step[2]
            elif kind == "adjust":
                services.wallet_adjust(organization=tenants[step[1]].org, cents=step[2], reason="property")
                credits[step[1]] += step[2]
            elif kind == "assign":
                lease = lease_assign(tenants[step[1]], price_cents=step[2], at=now)
                leases.append(ModelLease(lease, step[1], step[2], settled_until=now))
            elif kind in ("release", "paid_through"):
                live = [m for m in leases if m.released_at is None]
                if not live:
                    continue
                m = live[step[1] % len(live)]
                if kind == "release":
                    paid_through = lease_release(m.lease, at=now)
                    m.released_at = now
                else:
                    paid_through = services.lease_paid_through(lease=m.lease, now=now)
                m.settled_until = now
                assert paid_through == period_bounds(m.lease.assigned_at, m.owed()[-1])[1]
                assert paid_through > now or m.released_at is not None
            elif kind == "advance":
                now += timedelta(hours=step[1])
            elif kind == "job":
                services.lease_charges_run(now=now, batch_size=step[1])
                for m in leases:
                    if m.released_at is None:
                        m.settled_until = now

            for m in leases:
                got = charges(m.lease)
                assert [c[0] for c in got] == m.owed()
                assert all(c[3] == -m.price for c in got)
                assert all((c[1], c[2]) == period_bounds(m.lease.assigned_at, c[0]) for c in got)
                assert all(c[1] <= now for c in got)  # nothing charged ahead of time
            for i, tenant in enumerate(tenants):
                owed = sum(m.price * len(m.owed()) for m in leases if m.tenant == i)
                assert balance(tenant) == credits[i] - owed  # balance() also checks cache == sum(ledger)
                wallet = Wallet.objects.filter(pk=tenant.org.pk).first()
                if wallet is not None:
                    assert (wallet.status == "past_due") == (wallet.balance_cents < 0)
                    assert (wallet.past_due_since is not None) == (wallet.balance_cents < 0)
        transaction.set_rollback(True)
