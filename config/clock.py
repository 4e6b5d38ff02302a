"""How far this process's clock is from the database's, and whether it may be trusted to decide by time.

Publishing compares each process's own clock (timezone.now()) with times other hosts wrote: a post is due
when its due_at has passed, a publishing worker is presumed dead once its lease or its point of no return is 5
minutes old (scheduling/services.py). A worker whose clock ran 90 s ahead published posts 90 s early; one 5
minutes ahead, or a publishing worker 5 minutes behind, failed posts PLATFORM_UNAVAILABLE that another worker
was putting live. Clocks must be kept synced (NTP); this is the guard for when one is not, as distributed
databases refuse to run with a clock off: a process whose clock is off from the database's by more than
LAYERS_MAX_CLOCK_SKEW_SECONDS claims no post, gives back the posts it was handed before calling the platform,
until its clock is right again. The other processes go on meanwhile (beat sends each tick to any worker). If
it is the database server's clock that drifts, every worker refuses: publishing stops, which the ERROR lines
and the admin's "Layers now" (GET /ops/status) show, and the message says to sync the database's clock then.

The database's clock is the reference every process shares. The offset is measured with `SELECT
clock_timestamp()` (the server's time now, not its transaction's start) against this process's clock at the
midpoint of the round trip, and kept for CHECK_EVERY_SECONDS per process: one small query per process every
30 s at most, on the dispatcher's tick (every 2 s), a publish or /readyz, whichever asks first. Kept by
time.monotonic(), which a stepped wall clock does not move (nor does time_machine, with which the tests make
the skew). SQLite is a file on this host: the same clock, offset 0.

The test settings turn the guard off (LAYERS_MAX_CLOCK_SKEW_SECONDS=0): the suite models time passing by
moving Python's clock with time_machine, which the guard would read as a skew."""

import logging
import socket
import threading
from time import monotonic

from django.conf import settings
from django.db import connection
from django.utils import timezone

log = logging.getLogger(__name__)

# How long a measured offset is kept before the next caller measures it again.
CHECK_EVERY_SECONDS = 30.0
# A refusal is logged at ERROR once a minute per process and kind of work; its repeats meanwhile at DEBUG (a
# tick every 2 s, each post handed to this worker: the attempt log says it of each post).
ERROR_EVERY_SECONDS = 60.0

# (monotonic() when measured, offset in seconds, half the round trip in seconds), or None before the first.
_measured: tuple[float, float, float] | None = None
_trusted = True  # what the last measurement said: a change is logged once
_last_error: dict[str, float] = {}
_lock = threading.Lock()


def forget() -> None:
    """Drop the measurement and the log's memory: the next caller measures again (tests switching process)."""
    global _measured, _trusted
    with _lock:
        _measured, _trusted = None, True
        _last_error.clear()


def _measure() -> tuple[float, float]:
    """(this clock minus the database's, in seconds; half the round trip, the most that midpoint can be off)."""
    if connection.vendor != "postgresql":
        return 0.0, 0.0
    with connection.cursor() as cursor:
        local, sent = timezone.now(), monotonic()
        cursor.execute("SELECT clock_timestamp()")
        (database,) = cursor.fetchone()
        half_trip = (monotonic() - sent) / 2
    return (local - database).total_seconds() + half_trip, half_trip


def _offset() -> tuple[float, float]:
    global _measured
    measured = _measured
    if measured is None or monotonic() - measured[0] >= CHECK_EVERY_SECONDS:
        offset, half_trip = _measure()
        measured = _measured = (monotonic(), offset, half_trip)
    return measured[1], measured[2]


def offset_seconds() -> float:
    """This process's clock minus the database's, in seconds (positive: ahead), measured at most every
    CHECK_EVERY_SECONDS."""
    return _offset()[0]


def skew_problem() -> str | None:
    """What is wrong with this process's clock, or None when it may decide by time (or the guard is off). A
    slow round trip never reads as a skew: only an offset beyond the limit by more than half of it counts."""
    global _trusted
    limit = settings.LAYERS_MAX_CLOCK_SKEW_SECONDS
    if not limit:
        return None
    offset, half_trip = _offset()
    trusted = abs(offset) - half_trip <= limit
    if trusted != _trusted:
        _trusted = trusted
        if trusted:
            log.warning("clock of %s within %s s of the database's again (%+.1f s)", _host(), limit, offset)
    if trusted:
        return None
    return (
        f"this host ({_host()}) has its clock {abs(offset):.1f} s {'ahead of' if offset > 0 else 'behind'} the "
        f"database's, more than LAYERS_MAX_CLOCK_SKEW_SECONDS ({limit}); sync whichever of the two is wrong "
        "(NTP: if every process says this, it is the database server's)"
    )


def clock_trustworthy(*, refusing: str = "") -> bool:
    """Whether this process's clock is within LAYERS_MAX_CLOCK_SKEW_SECONDS of the database's. When it is not
    and the caller says what it therefore does not do (`refusing`), that is logged: at ERROR once a minute per
    process and kind of work (the first words of `refusing`, up to a colon), its repeats at DEBUG."""
    problem = skew_problem()
    if problem is None:
        return True
    if refusing:
        kind, now = refusing.split(":", 1)[0], monotonic()
        with _lock:
            due = now - _last_error.get(kind, -ERROR_EVERY_SECONDS) >= ERROR_EVERY_SECONDS
            if due:
                _last_error[kind] = now
        log.log(logging.ERROR if due else logging.DEBUG, "clock off: %s; %s", problem, refusing)
    return False


def _host() -> str:
    return socket.gethostname()
