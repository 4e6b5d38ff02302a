"""Running code side by side on real PostgreSQL: threads, each with its own database connection."""

import threading
from contextlib import contextmanager

from django.db import connection, transaction


def run_in_threads(*targets):
    """Start every target at the same moment, each on its own connection; return their results in order,
    failing with the errors any of them raised."""
    barrier = threading.Barrier(len(targets))
    errors: list[BaseException] = []
    results: list = [None] * len(targets)

    def wrap(i, target):
        try:
            barrier.wait()
            results[i] = target()
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=wrap, args=(i, t)) for i, t in enumerate(targets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [], errors
    return results


def claiming_in_rounds(parties: int, claim):
    """`parties` targets for run_in_threads that call `claim` in lock-step rounds, all of them at the same
    moment, until a round in which none got anything; each returns everything its calls returned. Every round
    they really race for the same rows, whatever the threads' scheduling: looping on its own, one thread
    sometimes drained the lot before another had started (1 CI run in a few)."""
    start, end = threading.Barrier(parties, timeout=30), threading.Barrier(parties, timeout=30)
    got_per_round: list[int] = []

    def target() -> list:
        mine, rounds = [], 0
        while True:
            start.wait()
            got = claim()
            mine.extend(got)
            got_per_round.append(len(got))
            end.wait()  # every thread's count is in, and none starts the next round before all have read it
            rounds += 1
            if not sum(got_per_round[(rounds - 1) * parties : rounds * parties]):
                return mine

    return [target] * parties


class HeldOpen:
    result = None


@contextmanager
def held_open(work, timeout: float = 30):
    """Run `work` in a transaction on another thread's connection, and keep that transaction open (not
    committed) while the block runs; it commits when the block ends. Yields a holder whose `result` is
    what `work` returned, set once the block has ended."""
    holder = HeldOpen()
    done_work, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def run():
        try:
            with transaction.atomic():
                holder.result = work()
                done_work.set()
                release.wait(timeout)
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)
            done_work.set()
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    assert done_work.wait(timeout), "the held transaction never did its work"
    try:
        yield holder
    finally:
        release.set()
        thread.join(timeout)
    assert errors == [], errors


def wait_until_waiting(statement: str, timeout: float = 30, *, count: int = 1) -> None:
    """Until `count` other connections of this database run `statement` (a part of its text) and wait (on a
    lock, or for older transactions to end). Only this database's: another test run on the same server (CI
    beside a developer's run) waiting on its own locks must not end the wait early."""
    import time

    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute("SELECT pg_stat_clear_snapshot()")  # inside a transaction, one snapshot otherwise
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE %s AND wait_event_type = 'Lock' "
                "AND pid <> pg_backend_pid() AND datname = current_database()",
                [f"%{statement}%"],
            )
            if cursor.fetchone()[0] >= count:
                return
            time.sleep(0.05)
    raise AssertionError(f"fewer than {count} connection(s) waited in {statement}")


def waiting_on_lock(statement: str, timeout: float = 5) -> bool:
    """Whether another connection of this database runs `statement` (a part of its text) and waits on a lock
    within `timeout` seconds: a test holding a transaction open in a patched service waits there until the
    concurrent request it races has queued behind it, then goes on either way. pg_stat_activity is a snapshot
    per transaction, taken again after pg_stat_clear_snapshot(), which polling from inside a transaction needs."""
    import time

    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE %s AND wait_event_type = 'Lock' "
                "AND pid <> pg_backend_pid() AND datname = current_database()",
                [f"%{statement}%"],
            )
            if cursor.fetchone()[0]:
                return True
            time.sleep(0.05)
    return False


class SecondQueuesBehindFirst:
    """Two requests racing for the same rows, the second made to queue behind a lock the first holds: `first`
    runs on its own thread (and connection) until a hook the test patches into it calls `hold()` inside its
    transaction; then `second` starts on another thread, and `hold()` returns once `second` waits on a lock in
    a statement containing `waits_on` (waiting_on_lock), so the first goes on while the second is queued.
    `run(first, second)` returns both results once both ended; `overlapped` says the second did queue (a test
    should assert it, or it may pass without the race)."""

    def __init__(self, waits_on: str, timeout: float = 30):
        self.waits_on, self.timeout = waits_on, timeout
        self._first: threading.Thread | None = None
        self._holding = threading.Event()
        self._queued: list[bool] = []

    @property
    def overlapped(self) -> bool:
        return self._queued == [True]

    def hold(self) -> None:
        if threading.current_thread() is self._first and not self._holding.is_set():
            self._holding.set()
            self._queued.append(waiting_on_lock(self.waits_on, timeout=self.timeout))

    def run(self, first, second) -> tuple:
        results: dict[str, object] = {}
        errors: list[BaseException] = []

        def call(name, work):
            try:
                results[name] = work()
            except BaseException as error:  # raised in the test's thread below, not lost as a warning
                errors.append(error)
            finally:
                connection.close()

        self._first = threading.Thread(target=call, args=("first", first))
        later = threading.Thread(target=call, args=("second", second))
        self._first.start()
        assert self._holding.wait(self.timeout), "the first request never reached its hold"
        later.start()
        self._first.join(2 * self.timeout)
        later.join(2 * self.timeout)
        if errors:
            raise errors[0]
        return results.get("first"), results.get("second")


def on_its_own_connection(work, errors: list) -> threading.Thread:
    """Start `work()` on a thread, with its own database connection (closed when it ends); what it raises goes
    to `errors`, for the test to surface. Returns the thread, started."""

    def run():
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - surfaced by the caller
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def schema_change_beside_writers(
    change, *, held, waits_on: str, write, gives_up_while_held: bool = False, timeout: float = 60
) -> list[BaseException]:
    """A deploy's schema change while the release still serving writes the table: `held` (a write) runs in a
    transaction kept open, `change()` (a migration, a DDL) starts on another thread and waits on its lock
    (`waits_on`: how its statement starts); then another request's `write(cursor)` runs under a 3 s lock
    timeout, failing the caller if it queued behind the change. The change then ends once the held
    transaction has committed, or, `gives_up_while_held`, before (a change that stops retrying). Returns what
    `change` raised."""
    errors: list[BaseException] = []
    with held_open(held):
        changing = on_its_own_connection(change, errors)
        wait_until_waiting(waits_on)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = '3s'")
            write(cursor)
        if gives_up_while_held:
            changing.join(timeout)
    changing.join(timeout)
    return errors


def drain_in_threads(broker, threads: int, run) -> list[tuple[object, float]]:
    """Run what `broker` (a queue.Queue standing in for a Celery queue) holds on `threads` threads, each with its
    own connection, as a worker's pool would, until it is empty (what a run queues meanwhile included); returns
    each message with when its run ended (seconds from the start)."""
    import queue
    import time

    start, done = time.monotonic(), []

    def worker():
        try:
            while True:
                try:
                    message = broker.get_nowait()
                except queue.Empty:
                    return
                run(message)
                done.append((message, time.monotonic() - start))
        finally:
            connection.close()

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return done


class AtOnce:
    """How many calls of a receiver's handler run at the same moment: `with calls.counted(): …` around the
    handler's work; `most` is the highest count seen."""

    def __init__(self):
        self.now = self.most = 0
        self._lock = threading.Lock()

    @contextmanager
    def counted(self):
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            yield
        finally:
            with self._lock:
                self.now -= 1
