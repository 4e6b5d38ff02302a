"""Timestamps read from PostgreSQL by psycopg's C loader rather than Django's Python one.

Django registers its own `timestamptz` loader on every psycopg connection: a subclass of psycopg's
pure-Python loader that puts values in the connection's timezone. That gives up the C loader psycopg[binary]
ships, at about 5 µs per value: half a millisecond for a page of 50 accounts, as much as a third query
(BENCHMARKS.md, bench_api). Our connections run in UTC (USE_TZ on, no TIME_ZONE in DATABASES, so Django sets
the session's TimeZone to UTC), and there the C loader returns the very same values: aware, in
`datetime.timezone.utc`, microseconds kept (tests/perf/test_timestamps.py). So such connections get a thin
loader that hands each value to the C one. It carries Django's `timezone` attribute, which Django compares on
every new cursor to decide whether to register its own loader again (the C class itself can be neither
subclassed nor given attributes). Any other setup (another timezone, psycopg without its C module) keeps
Django's loader."""

from datetime import UTC
from functools import cache

from django.db.backends.signals import connection_created


@cache  # one class per process, not one per connection
def _fast_loader():
    from psycopg import _cmodule
    from psycopg.adapt import Loader

    if _cmodule._psycopg is None:  # the pure-Python psycopg: nothing faster to use
        return None
    c_loader = _cmodule._psycopg.TimestamptzLoader

    class UtcTimestamptzLoader(Loader):
        timezone = UTC  # what Django's create_cursor compares with the connection's timezone

        def __init__(self, oid, context=None):
            super().__init__(oid, context)
            self._load = c_loader(oid, context).load

        def load(self, data):
            return self._load(data)

    return UtcTimestamptzLoader


def use_fast_loader(sender, connection, **kwargs) -> None:
    if connection.vendor != "postgresql" or connection.timezone is not UTC:
        return
    if connection.connection.info.parameter_status("TimeZone") != "UTC":
        return
    loader = _fast_loader()
    if loader is not None:
        connection.connection.adapters.register_loader("timestamptz", loader)


def install() -> None:
    connection_created.connect(use_fast_loader, dispatch_uid="layers-pg-fast-timestamptz")
