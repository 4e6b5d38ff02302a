"""Writes that must survive one dropped database connection: those that record what a platform has already
done and that only this worker knows (a publish id, a refresh token TikTok has just rotated). A connection
the server dropped while the worker waited on the platform (a PostgreSQL restart or failover, an idle
connection killed by a proxy) fails the first query after the call; losing the write then costs far more
than trying it again: a post whose outcome nobody can look up, an account whose only live refresh token is
gone (the next refresh is refused, the customer must consent again, a warm pool account is retired).

Shared by accounts, scheduling and leasing, which all depend on config (never on each other upwards)."""

import logging
from collections.abc import Callable
from typing import TypeVar

from django.db import InterfaceError, OperationalError, connection

log = logging.getLogger(__name__)

T = TypeVar("T")


def write_again_after_a_dropped_connection(
    write: Callable[[], T], *, landed: Callable[[], bool], landed_result: T, what: str
) -> T:
    """`write()`; if the database connection fails under it, reconnect once and write again — unless
    `landed()` (asked on the new connection) says the first write committed after all (the server got the
    COMMIT, its answer was lost), in which case `landed_result` is what the first write returned. `write` must
    be conditional on the state it found (a version, the token it replaces, this run's mark), so that a second
    write never undoes what someone else did meanwhile, and must open its own transaction if it needs one.

    Inside a caller's transaction nothing is retried: that transaction is gone with the connection, and only
    the caller can start it again. A second failure is raised (the database is down, not blipping)."""
    try:
        return write()
    except (OperationalError, InterfaceError):
        if connection.in_atomic_block:
            raise
        log.warning("database connection lost while %s; reconnecting to write again", what)
        connection.close()
    if landed():
        return landed_result
    return write()
