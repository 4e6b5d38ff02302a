"""Queueing a Celery task after a change has been committed.

The rows are the source of truth and a message is only a nudge (DESIGN.md): when the broker is down, the
committed change stands and a periodic tick finds the work again. So a failure to queue is logged, never
raised: raised from an on_commit callback it would turn a committed change into a 500 (a customer coming
back from a consent page, a staff member releasing a lease) and lose the nudge all the same."""

import logging

from django.conf import settings
from django.db import transaction

log = logging.getLogger(__name__)


def enqueue(task, *args) -> bool:
    """Queue `task(*args)`; False (and a warning) if the broker refused it."""
    try:
        task.delay(*args)
    except Exception:  # noqa: BLE001 - kombu's OperationalError, a timeout, a refused connection: all the same here
        log.warning("could not queue %s%r; a periodic tick will pick the work up", task.name, args, exc_info=True)
        return False
    return True


def enqueue_each(task, ids: list) -> int:
    """Queue `task(id)` for each of `ids` in turn; how many were queued. Stops at the first the broker
    refuses: it would refuse the rest too (a silent one costs seconds each), and the caller leaves those
    (`ids[queued:]`) to its next tick."""
    for queued, item in enumerate(ids):
        if not enqueue(task, item):
            return queued
    return len(ids)


def enqueue_on_commit(task, *args) -> None:
    """Queue `task(*args)` once the current transaction commits (at once outside one); never raises."""
    transaction.on_commit(lambda: enqueue(task, *args))


def backoff_countdown(retries: int, *, first: float) -> float:
    """Seconds before a failed task runs again: `first`, doubling per retry, up to the longest a retry may
    wait in the broker (settings.LAYERS_MAX_TASK_COUNTDOWN)."""
    return min(first * 2**retries, settings.LAYERS_MAX_TASK_COUNTDOWN)


def platform_retry_countdown(task, exc) -> float | None:
    """Seconds before a task refused for now by a platform runs again: what the platform asked for
    (Retry-After, already bounded by the clients), or a minute doubling per retry (backoff_countdown).
    None when the platform asked for longer than a retry may wait in the broker: the task must not retry
    then; its periodic tick runs it again once the wait, recorded on the row by the service, has passed."""
    if exc.retry_after:
        return exc.retry_after if exc.retry_after <= settings.LAYERS_MAX_TASK_COUNTDOWN else None
    return backoff_countdown(task.request.retries, first=60)


def retry_or_leave_to_the_tick(task, exc, *, what: str) -> str:
    """Retry `task` after platform_retry_countdown (raises Celery's Retry), or, when the platform asked for a
    longer wait than a retry may spend in the broker, end it as "throttled": its periodic tick runs it again
    once the wait the service recorded has passed. Its retries used up (a platform down for the hour they
    span), it ends as "unavailable" with one warning, and the tick, still finding the work due, queues it
    again: Celery's own MaxRetriesExceededError was an ERROR traceback per account per outage that did not say
    the platform was down, and buried real errors. `what` names the work in the log line."""
    countdown = platform_retry_countdown(task, exc)
    if countdown is None:
        log.info("%s: the platform asked to wait %d s; a later tick does it then", what, exc.retry_after)
        return "throttled"
    if task.max_retries is not None and task.request.retries >= task.max_retries:
        log.warning(
            "%s: the platform is still unavailable after %d retries (%s); a later tick tries again",
            what,
            task.request.retries,
            exc.code or type(exc).__name__,
        )
        return "unavailable"
    raise task.retry(countdown=countdown)
