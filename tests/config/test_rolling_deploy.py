"""Columns added to existing tables after the first release carry a default in the database itself: while
`migrate` runs, the release still serving inserts rows without the new column, and PostgreSQL would refuse
them (a 500 on scheduling or on lease assignment for the whole deploy)."""

import pytest
from django.db import connection

pytestmark = pytest.mark.django_db

ADDED_LATER = [
    ("scheduling_scheduledpost", "prepared_publish_id"),
    ("leasing_lease", "handle"),
    ("leasing_poolaccount", "refresh_claimed_until"),
    ("leasing_lease", "charges_settled"),
    ("webhooks_webhookdelivery", "window_first_attempt"),
    ("webhooks_webhookdelivery", "queued_at"),
]


@pytest.mark.parametrize("table, column", ADDED_LATER)
def test_a_column_added_later_lets_the_previous_release_insert(table, column):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT is_nullable, column_default FROM information_schema.columns WHERE table_name = %s "
            "AND column_name = %s",
            [table, column],
        )
        nullable, default = cursor.fetchone()
    assert nullable == "YES" or default is not None, f"{table}.{column}: NOT NULL with no default"
