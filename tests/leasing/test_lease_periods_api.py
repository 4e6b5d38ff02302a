"""The current billing period a partner reads on GET /v1/projects/{id}/leased-accounts, at the calendar's edges:
clamped at month ends as billing charges it, and one period (its start and its end), never two halves."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.utils import timezone

from leasing.models import Lease
from leasing.serializers import LeasedAccountOutput
from tests.billing.factories import lease_assign

pytestmark = pytest.mark.django_db


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def current_period(tenant) -> tuple[str, str]:
    (row,) = tenant.client.get(f"/v1/projects/{tenant.project.id}/leased-accounts").json()["data"]
    return row["currentPeriodStart"], row["currentPeriodEnd"]


@pytest.mark.parametrize(
    "when, expected",
    [
        (at(2028, 2, 29, 9, 59, 59), ("2028-01-31T10:00:00.000Z", "2028-02-29T10:00:00.000Z")),  # leap year
        (at(2028, 2, 29, 10), ("2028-02-29T10:00:00.000Z", "2028-03-31T10:00:00.000Z")),
        (at(2028, 4, 30, 10), ("2028-04-30T10:00:00.000Z", "2028-05-31T10:00:00.000Z")),
        (at(2029, 2, 28, 10), ("2029-02-28T10:00:00.000Z", "2029-03-31T10:00:00.000Z")),  # not a leap year
    ],
)
def test_the_current_period_of_a_lease_assigned_on_the_31st_is_clamped_as_it_is_charged(owner, when, expected):
    lease_assign(owner, price_cents=1000, at=at(2028, 1, 31, 10))

    with time_machine.travel(when, tick=False):
        assert current_period(owner) == expected


def test_the_current_period_is_one_period_even_when_a_month_starts_while_it_is_written(owner, monkeypatch):
    # Its start and its end were computed each with its own reading of the clock: a month starting between
    # the two (Feb 29 at 10:00) answered the start of the first month and the end of the second, a "current
    # period" of two months (Jan 31 → Mar 31) that no charge matches.
    lease = lease_assign(owner, price_cents=1000, at=at(2028, 1, 31, 10))
    readings = iter([at(2028, 2, 29, 10) - timedelta(microseconds=1), at(2028, 2, 29, 10)])
    monkeypatch.setattr(timezone, "now", lambda: next(readings))

    data = LeasedAccountOutput(Lease.objects.select_related("social_account__identity").get(pk=lease.pk)).data

    assert (data["currentPeriodStart"], data["currentPeriodEnd"]) in [
        ("2028-01-31T10:00:00.000Z", "2028-02-29T10:00:00.000Z"),
        ("2028-02-29T10:00:00.000Z", "2028-03-31T10:00:00.000Z"),
    ]
