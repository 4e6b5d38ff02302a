"""The periodic renewal task is registered with beat and charges what is due when it runs."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from billing.tasks import lease_renewals_tick
from config.celery import app
from tests.billing.factories import balance, charges, lease_assign

pytestmark = pytest.mark.django_db


def test_beat_runs_the_renewal_task_at_least_hourly():
    entry = settings.CELERY_BEAT_SCHEDULE["billing-lease-renewals"]
    app.loader.import_default_modules()
    assert entry["task"] in app.tasks
    assert entry["schedule"] <= 3600


def test_the_task_charges_every_started_period_and_is_idempotent(owner):
    lease = lease_assign(owner, price_cents=1500, at=timezone.now() - timedelta(days=70))

    assert lease_renewals_tick.delay().get() == 2
    assert lease_renewals_tick.delay().get() == 0

    assert [c[0] for c in charges(lease)] == [0, 1, 2]
    assert balance(owner) == -4500
