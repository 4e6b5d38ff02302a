"""Timestamps read back from PostgreSQL are exactly what was written, aware and in UTC, now that psycopg's
C loader reads them in place of Django's Python one (config/pgtime.py)."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from django.db import connection

from accounts.models import Event
from config import pgtime

pytestmark = pytest.mark.django_db

INSTANTS = [
    datetime(2026, 11, 28, 21, 57, 3, 123456, tzinfo=UTC),
    datetime(2026, 3, 29, 1, 30, 0, 1, tzinfo=timezone(timedelta(hours=2))),  # another offset, 1 µs
    datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
]


def test_timestamps_round_trip_exactly_in_utc(owner):
    ids = []
    for instant in INSTANTS:
        event = Event.objects.create(organization=owner.org, type="social_account.connected", data={})
        Event.objects.filter(pk=event.pk).update(created_at=instant)
        ids.append(event.pk)
    read = [Event.objects.get(pk=pk).created_at for pk in ids]
    assert read == INSTANTS
    assert all(value.tzinfo is UTC for value in read)
    with connection.cursor() as cursor:  # the hand-written selectors read through plain cursors
        cursor.execute("SELECT created_at FROM accounts_event WHERE id = %s", [ids[1]])
        (value,) = cursor.fetchone()
        loader = cursor.cursor.adapters.get_loader(1184, 0)  # timestamptz, text
    assert value == INSTANTS[1] and value.tzinfo is UTC and value.microsecond == 1
    assert loader.__name__ == "UtcTimestamptzLoader"  # the fast loader is the one reading


def test_a_session_outside_utc_keeps_djangos_loader():
    from django.db.backends.postgresql.psycopg_any import get_adapters_template

    connection.ensure_connection()
    raw = connection.connection
    fast = raw.adapters.get_loader(1184, 0)
    djangos = get_adapters_template(True, UTC).adapters.get_loader(1184, 0)
    try:
        with raw.cursor() as cursor:
            cursor.execute("SET TIME ZONE 'Europe/Paris'")
        raw.adapters.register_loader("timestamptz", djangos)  # as Django registers it on a new connection
        pgtime.use_fast_loader(None, connection)
        assert raw.adapters.get_loader(1184, 0) is djangos
    finally:
        with raw.cursor() as cursor:
            cursor.execute("SET TIME ZONE 'UTC'")
        raw.adapters.register_loader("timestamptz", fast)
