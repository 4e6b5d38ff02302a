"""Admin actions over a whole filtered list, from one web request.

After an outage ops list the day's failed posts (40,000 of them, across hundreds of organizations) or the
deliveries a partner's receiver missed while it was down (200,000), tick "Select all" and press Go. Run one
row at a time, the retry took 7.7 ms a post: five minutes for 40,000, past any proxy's timeout and past the
grace a deploy gives a request in flight (config/gunicorn_conf.py), which then stops it at some row nobody
knows. The page after it carried one message per row (7 MB), and the audit read every selected row whole
(200,000 delivery bodies in one web process).

So an action marked `runs_in_batches` calls `run_in_batches`: the first settings.LAYERS_ADMIN_ACTION_ROWS
selected rows are done in the request, BATCH_ROWS to a transaction (the batch services: config/batches.py),
and the rest are handed to a worker, TASK_ROWS ids to a task, read a batch of ids at a time (never the whole
selection). The worker calls the same batch service (`by_a_worker`). Both are safe to repeat: the services
leave alone a row already done, so staff who run the action again, or two staff running it at once, do each
row once, and each is told only what they did. The page then says, in a few messages, how many rows were
done, how many were left alone and why (counted by reason; each one named only when there are few), and how
many the worker does. Each row done gets its audit row (LogEntry, by the staff member, "Admin action: …"),
the ones the worker does included, when it does them. A worker's batch that fails is tried again from there
(a passing database error), or one row at a time (a row's own failure); a row not done gets "Admin action not
done: …" and the error in its history (by_a_worker)."""

import logging
from collections import defaultdict
from dataclasses import dataclass, field

from django.conf import settings
from django.contrib import messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import DatabaseError, OperationalError, transaction
from django.db.models import TextField
from django.utils.text import capfirst

from config.batches import BATCH_ROWS, BatchOutcome, pk_batches
from config.queueing import backoff_countdown, enqueue
from config.text import shorten

log = logging.getLogger(__name__)

# The ids one queued task takes (its message carries them: about 80 KB).
TASK_ROWS = 2_000
# A worker's task that met a passing database error on a batch is tried again from that batch this many times,
# RETRY_AFTER_SECONDS doubling (30 s to 8 min: about 15 minutes in all, past a failover or a deadlock storm).
TASK_RETRIES = 5
RETRY_AFTER_SECONDS = 30
# Rows named one message each, per kind of outcome; past that many, one message counts them.
ROW_MESSAGES = 10


def runs_in_batches(action):
    """Marks an admin action that reads its selection a batch at a time and audits the rows it did itself:
    `run_in_batches` (and its worker) do, as do the revokes and the off-boarding, which read their rows with
    config.batches.row_batches and write each batch's audit rows with `audit_rows`. The audit
    (accounts/admin_site._audited) then neither reads the selection for it (the whole of it, at once) nor writes
    its rows."""
    action.runs_in_batches = True
    return action


def run_in_batches(
    modeladmin,
    request,
    queryset,
    *,
    service,
    task,
    mark=None,
    task_args: tuple = (),
    description: str,
    done_text: str,
    left_alone: dict[str, str] | None = None,
    level=messages.WARNING,
) -> None:
    """Do `service` to the rows of `queryset`: the first LAYERS_ADMIN_ACTION_ROWS now, the rest by a worker.

    `service(ids, actor, mark)` → BatchOutcome: one batch service call (BATCH_ROWS ids at most); `mark`: what
    the service compares rows with to leave alone those changed since staff chose them (a JSON value read when
    the action was posted, or with its confirmation page for one that asks first; the worker's tasks carry it).
    `task(ids, staff_user_id, mark, description, *task_args)`: the worker's, which calls `by_a_worker`.
    `done_text`: what was done to a row ("queued again"); `left_alone`: for an error code, what to say of the
    many rows left alone for it (otherwise the first one's message is said of them all); `level`: of those."""
    budget = settings.LAYERS_ADMIN_ACTION_ROWS
    model = modeladmin.model
    outcome = BatchOutcome()
    last = None
    for ids in pk_batches(queryset, BATCH_ROWS):
        now = ids[: budget - len(outcome.done) - len(outcome.skipped)]
        if now:
            done = service(now, request.user, mark)
            audit(model, done.done, user_id=request.user.pk, description=description)
            outcome.add(done)
            last = now[-1]
        if len(now) < len(ids):
            break
    handed = left = 0
    if last is not None:
        for ids in pk_batches(queryset, TASK_ROWS, after=last):
            if not left and enqueue(task, ids, request.user.pk, mark, description, *task_args):
                handed += len(ids)
            else:
                left += len(ids)  # the queue refused one: it would refuse the rest too (enqueue_each)
    report(modeladmin, request, outcome, done_text=done_text, left_alone=left_alone or {}, level=level)
    names = capfirst(model._meta.verbose_name_plural)
    if handed:
        modeladmin.message_user(
            request,
            f"{names}: {handed:,} more of those selected are handed to a worker, which does the same to each "
            "(and leaves alone the same kinds) in the next minutes, and records it in their history; a row it "
            "cannot do gets a line there saying so and why (also in your Recent actions). Reload the list to "
            "follow it.",
            messages.INFO,
        )
    if left:
        modeladmin.message_user(
            request,
            f"{names}: {left:,} more of those selected are left as they are: the task queue did not take them. "
            "Run the action again later: the rows already done are left alone.",
            messages.ERROR,
        )


@dataclass
class Said:
    """The messages of one kind of outcome of an action, gathered a batch at a time: the first ROW_MESSAGES + 1
    (past ROW_MESSAGES, `tell` says only the count: no need to hold the others) and how many there were."""

    rows: list[str] = field(default_factory=list)
    count: int = 0

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.rows) <= ROW_MESSAGES:
            self.rows.append(message)


def tell(modeladmin, request, rows: list[str], level, many: str) -> None:
    """The messages of one kind of outcome of an action: `rows`, one message per row, while there are at most
    ROW_MESSAGES of them; past that, the one message `many` counting them."""
    for message in rows if len(rows) <= ROW_MESSAGES else [many]:
        modeladmin.message_user(request, message, level)


def report(modeladmin, request, outcome: BatchOutcome, *, done_text: str, left_alone: dict[str, str], level) -> None:
    """The messages of what a batch action did: each row named while they are few (ROW_MESSAGES), counted past
    that, the ones left alone by reason."""
    opts = modeladmin.model._meta
    name, names = capfirst(opts.verbose_name), capfirst(opts.verbose_name_plural)
    done = [
        f"{name} {pk}: {done_text}{f' ({note})' if (note := outcome.notes.get(pk)) else ''}." for pk in outcome.done
    ]
    tell(modeladmin, request, done, messages.SUCCESS, f"{names}: {len(outcome.done):,} {done_text}.")
    by_reason: dict[str, list[str]] = defaultdict(list)
    for pk, refused in outcome.skipped.items():
        by_reason[refused.code].append(pk)
    for code, pks in by_reason.items():
        why = left_alone.get(code) or outcome.skipped[pks[0]].message
        tell(
            modeladmin,
            request,
            [f"{name} {pk}: {outcome.skipped[pk].message}" for pk in pks],
            level,
            f"{names}: {len(pks):,} left alone: {why} For example {', '.join(pks[:3])}.",
        )


def audit(model, ids: list, *, user_id, description: str) -> None:
    """The audit rows of the rows of `model` an action did (`ids`), as accounts/admin_site._audited writes them
    for the other actions: by the staff member, "Admin action: <description>". Read without their text columns
    (a delivery's body): the row's label needs none."""
    if not ids or user_id is None:
        return
    audit_rows(_labelled(model, ids), user_id=user_id, description=description)


def _labelled(model, ids: list):
    """The rows of `model` of `ids`, read for their labels: without their text columns (a delivery's body), which
    no label needs."""
    texts = [column.name for column in model._meta.concrete_fields if isinstance(column, TextField)]
    return model._default_manager.filter(pk__in=ids).defer(*texts)


def audit_rows(rows, *, user_id, description: str) -> None:
    """The audit rows of `rows` (instances an action did, a batch of them: their labels are copied as they
    are, so read them with what their label needs, a social account's identity), as `audit` writes them."""
    if user_id is None or not rows:
        return
    LogEntry.objects.log_actions(
        user_id=user_id, queryset=rows, action_flag=CHANGE, change_message=f"Admin action: {description}"
    )


def by_a_worker(
    *,
    model,
    ids: list,
    staff_user_id,
    mark,
    description: str,
    service,
    task=None,
    task_args: tuple = (),
    batch_rows: int = BATCH_ROWS,
) -> dict:
    """What a worker does of an action's rows handed to it (`ids`): `service(ids, actor, mark)` a batch
    (`batch_rows`) at a time, each batch's rows done audited as the staff member's in the same transaction.
    Safe to run twice (a message the broker delivered again, a worker killed mid-way): the service leaves alone
    a row already done. Returns the counts (the task's result; what was left alone is logged, staff read the
    rows themselves).

    A batch that raises was rolled back whole (service and audit: nothing of it done, nothing recorded). The
    page told staff the worker does these rows, so a failure must not end the task with the rest undone and a
    log line only (40,000 retries, their second half never made, and no one told). A passing database error (a
    deadlock, a lock or statement timeout, the database restarting or unreachable: OperationalError) retries
    `task` (the bound task running this; `task_args`: its arguments after `description`) with the ids from that
    batch on, the ones done before not given again, up to TASK_RETRIES times. Any other error, or one still
    there after the retries, is a row's own (a value its service cannot write): the batch is then done one row
    at a time, so that the row cannot hold back the others, and each row that still fails gets a line in its
    history saying the action was not done to it, and why (`not_done`)."""
    from django.contrib.auth import get_permission_codename, get_user_model

    # The worker runs minutes after the click, in the staff member's name: it acts only while they still may.
    # Deactivated, stripped of the permission (every batched action needs "change" on its model), or deleted
    # meanwhile (a leaver's access removed during an outage), the rest stay as they are; nothing is done in a
    # name that can no longer act, nor with no name at all (an unattributed change with no history row).
    # Their MFA is not re-checked: it guards a session, and the worker has none; the click passed it.
    actor = get_user_model().objects.filter(pk=staff_user_id).first()
    permission = f"{model._meta.app_label}.{get_permission_codename('change', model._meta)}"
    if actor is None or not (actor.is_active and actor.is_staff and actor.has_perm(permission)):
        log.warning(
            "admin action %r by staff user %s: %d rows left as they are (the user may no longer act: deleted, "
            "deactivated or without %s)",
            description,
            staff_user_id,
            len(ids),
            permission,
        )
        return {"done": 0, "leftAlone": len(ids), "refused": "staff user may no longer act"}
    done = skipped = 0
    reasons: dict[str, int] = defaultdict(int)
    failed: dict = {}

    def do(rows: list) -> None:
        nonlocal done, skipped
        with transaction.atomic():
            outcome = service(rows, actor, mark)
            audit(model, outcome.done, user_id=actor.pk, description=description)
        done += len(outcome.done)
        skipped += len(outcome.skipped)
        for refused in outcome.skipped.values():
            reasons[refused.code] += 1

    for start in range(0, len(ids), batch_rows):
        batch = ids[start : start + batch_rows]
        try:
            do(batch)
            continue
        except OperationalError as exc:
            if task is not None and task.request.retries < TASK_RETRIES:
                countdown = backoff_countdown(task.request.retries, first=RETRY_AFTER_SECONDS)
                log.warning(
                    "admin action %r by %s: %d done, then a database error (%s); the %d rows left are tried again "
                    "in %d s",
                    description,
                    actor,
                    done,
                    _first_line(exc),
                    len(ids) - start,
                    countdown,
                )
                raise task.retry(
                    args=(ids[start:], staff_user_id, mark, description, *task_args),
                    countdown=countdown,
                    max_retries=TASK_RETRIES,
                    exc=exc,
                ) from exc
            error = exc
        except Exception as exc:  # noqa: BLE001 - a row's own failure, whatever it is: found below, row by row
            error = exc
        log.warning("admin action %r by %s: a batch failed (%s); its rows one at a time", description, actor, error)
        for pk in batch:
            try:
                do([pk])
            except Exception as exc:  # noqa: BLE001 - recorded on the row, for staff, and logged
                failed[pk] = exc
    if failed:
        try:
            not_done(model, failed, user_id=actor.pk, description=description)
        except DatabaseError:
            log.exception("admin action %r by %s: the rows not done could not be recorded", description, actor)
        log.error(
            "admin action %r by %s: %d rows not done (their history says why), for example %s: %s",
            description,
            actor,
            len(failed),
            next(iter(failed)),
            _first_line(next(iter(failed.values()))),
        )
    log.info(
        "admin action %r by %s: %d done, %d left alone %s, %d failed",
        description,
        actor,
        done,
        skipped,
        dict(reasons),
        len(failed),
    )
    return {"done": done, "leftAlone": skipped, **({"failed": len(failed)} if failed else {})}


def not_done(model, failed: dict, *, user_id, description: str) -> None:
    """The history line of each row of `model` a worker could not do an action to (`failed`: the error of each
    id), as the staff member's, beside the lines of what was done: "Admin action not done: …", the error, and
    what to do. Staff see it on the row's History page and in their Recent actions; the rows stay as they
    were, in the list they filtered. A database still failing to write these is logged (by_a_worker)."""
    rows = {str(row.pk): row for row in _labelled(model, list(failed))}
    content_type = ContentType.objects.get_for_model(model, for_concrete_model=False)
    LogEntry.objects.bulk_create(
        LogEntry(
            user_id=user_id,
            content_type=content_type,
            object_id=str(pk),
            object_repr=str(rows.get(str(pk), pk))[: LogEntry._meta.get_field("object_repr").max_length],
            action_flag=CHANGE,
            change_message=(
                f"Admin action not done: {description}. The worker's attempt failed: "
                f"{shorten(_first_line(error), 300)}. Run the action again on it."
            ),
        )
        for pk, error in failed.items()
    )


def _first_line(error: Exception) -> str:
    """What an error says, on one line: a database error's first (its DETAIL lines can quote a row's data)."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
