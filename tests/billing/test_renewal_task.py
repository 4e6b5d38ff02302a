"""The periodic renewal task charges what is due when it runs (its beat entry: tests/config/test_beat_schedule.py)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from billing.tasks import lease_renewals_tick
from tests.billing.factories import balance, charges, lease_assign

pytestmark = pytest.mark.django_db


def test_the_task_charges_every_started_period_and_is_idempotent(owner):
    lease = lease_assign(owner, price_cents=1500, at=timezone.now() - timedelta(days=70))

    assert lease_renewals_tick.delay().get() == 2
    assert lease_renewals_tick.delay().get() == 0

    assert [c[0] for c in charges(lease)] == [0, 1, 2]
    assert balance(owner) == -4500
