"""Web, worker and beat processes run Django's system checks before they serve or consume anything, and
refuse to start on an error.

Django runs its checks only in management commands (runserver, migrate, check): gunicorn runs none, and
Celery's Django fixup runs them at worker and beat start but discards what they find. So nothing refused to
start with, say, a LAYERS_TOKEN_KEYS that decrypts no stored secret (accounts/checks.py): the first requests
and tasks went on to mark every account reauth_required. config/wsgi.py, config/asgi.py and config/celery.py
call this once per process, with the database checks included (a few small queries).

A database that cannot be reached at start-up (refused, or silent past the connect timeout that
config/settings/base.py `database()` sets) is not a refusal: the process starts as before, /readyz reports
the database, and the checks that read it run again at the next start. Nor is one that connects and then
does not answer the checks' queries in time (a table locked by a stuck migration, a server too busy): on
PostgreSQL they give up after as long as connecting may take. (A pooler that hangs after the handshake never
passes the query on, so no server-side timeout reaches it.)"""

import logging

from django.core import checks
from django.core.management.base import SystemCheckError
from django.db import OperationalError, connections, transaction

log = logging.getLogger(__name__)


def _answer_within_the_connect_timeout() -> None:
    """The checks' queries give up after the connect timeout: PostgreSQL's statement_timeout for the
    surrounding transaction only (SET LOCAL). A session-wide SET would go back to a transaction-mode pooler's
    pool with the server connection, and cancel someone else's long statements."""
    connection = connections["default"]
    if connection.vendor != "postgresql":
        return
    seconds = int(connection.settings_dict.get("OPTIONS", {}).get("connect_timeout") or 10)
    with connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL statement_timeout = {seconds * 1000}")


def refuse_to_start_on_failed_checks(process: str) -> None:
    """Run every system check; log the warnings, raise SystemCheckError naming the errors."""
    import django
    from django.apps import apps

    if not apps.ready:
        django.setup()
    try:
        with transaction.atomic(using="default"):
            _answer_within_the_connect_timeout()
            messages = checks.run_checks(databases=["default"])
    except OperationalError as exc:  # Django's own database checks connect too
        log.warning("%s start: database unreachable (%s), the checks that read it are skipped", process, exc)
        messages = checks.run_checks()
    finally:
        # This thread serves no request: its connection would stay open, idle, for the process's life.
        connections.close_all()
    shown = [message for message in messages if not message.is_silenced()]
    for message in shown:
        if not message.is_serious():
            log.warning("%s start: %s", process, message)
    errors = [message for message in shown if message.is_serious()]
    if errors:
        raise SystemCheckError(
            f"The {process} process refused to start (system checks):\n" + "\n".join(str(e) for e in errors)
        )
