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
the ones the worker does included, when it does them."""

import logging
from collections import defaultdict
from dataclasses import dataclass, field

from django.conf import settings
from django.contrib import messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.db.models import TextField
from django.utils.text import capfirst

from config.batches import BATCH_ROWS, BatchOutcome, batches, pk_batches
from config.queueing import enqueue

log = logging.getLogger(__name__)

# The ids one queued task takes (its message carries them: about 80 KB).
TASK_ROWS = 2_000
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
            "(and leaves alone the same kinds) in the next minutes, and records it in their history; reload the "
            "list to follow it.",
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
    texts = [column.name for column in model._meta.concrete_fields if isinstance(column, TextField)]
    audit_rows(model._default_manager.filter(pk__in=ids).defer(*texts), user_id=user_id, description=description)


def audit_rows(rows, *, user_id, description: str) -> None:
    """The audit rows of `rows` (instances an action did, a batch of them: their labels are copied as they
    are, so read them with what their label needs, a social account's identity), as `audit` writes them."""
    if user_id is None or not rows:
        return
    LogEntry.objects.log_actions(
        user_id=user_id, queryset=rows, action_flag=CHANGE, change_message=f"Admin action: {description}"
    )


def by_a_worker(*, model, ids: list, staff_user_id, mark, description: str, service) -> dict:
    """What a worker does of an action's rows handed to it (`ids`): `service(ids, actor, mark)` a batch
    at a time, each batch's rows done audited as the staff member's. Safe to run twice (a message the broker
    delivered again, a worker killed mid-way): the service leaves alone a row already done. Returns the counts
    (the task's result; what was left alone is logged, staff read the rows themselves)."""
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
    for batch in batches(ids, BATCH_ROWS):
        outcome = service(batch, actor, mark)
        audit(model, outcome.done, user_id=actor.pk, description=description)
        done += len(outcome.done)
        skipped += len(outcome.skipped)
        for refused in outcome.skipped.values():
            reasons[refused.code] += 1
    log.info("admin action %r by %s: %d done, %d left alone %s", description, actor, done, skipped, dict(reasons))
    return {"done": done, "leftAlone": skipped}
