"""Layers now: whether Layers itself keeps up, for ops — the admin's index page, and `GET /ops/status` for an
uptime checker (scheduling/views.py). "Platforms now" (platform_status.py) says what TikTok, Instagram and the
providers answered, /healthz and /readyz that a process serves and reaches its database and broker; nothing said
that beat had died or that every worker was stuck, and posts then stopped going out without a word until
partners complained. Four lines, each with a verdict — ok, behind (late by more than a grace), stopped (late by
more than STOPPED_AFTER, or beat's tick not sent):

- the dispatcher: beat sends its tick, and the tick is not paused in the admin. Read from what beat writes
  anyway: django-celery-beat saves each periodic task's `last_run_at` every BEAT_SYNC_EVERY while it runs (not
  at each 2-second tick), so a beat silent for BEAT_SILENT_AFTER has stopped. No write of ours per tick: when no
  post is due, a tick writes nothing, and when posts are due, the next line says whether they are taken. Also
  shown: when the last publishing attempt ended (the newest attempt row, one entry of its primary key);
- posts due: queued posts whose due time passed more than GRACE ago. The tick claims every due post within 2 s
  (LAYERS_DISPATCH_MAX_WAITING at a time), so any such post is the tick not running (beat, or every worker,
  stopped or stuck) or not keeping up (a burst larger than the workers);
- posts publishing: publishing posts whose status check or claim lease ran out more than GRACE ago. The tick's
  resolver claims them within 2 s; those past their claim lease had a worker that died (the lease is renewed by
  every claim, so none is past it while the resolver runs);
- webhooks: events not fanned out and deliveries not sent, more than LATE_AFTER after the relay should have
  taken them, and beat's relay tick. Deliveries whose receiver holds them back by design (sends in flight up to
  its limits, a cool-off, a failure streak) and endpoints disabled or deleted are left out
  (accounts.webhooks.services): a partner's receiver down is not Layers behind.

Every read goes through an index and reads only what is late: each late count reads the entries of a partial
index before its cut (sp_due_queued, sp_publishing_check, whd_due, whd_leased, event_org_fanout_pending per
organization with a live endpoint), up to COUNT_CAP of them, oldest first, so its cost follows what is late,
never the table, and stays bounded even then ("10,000 or more"); the beat entries by their unique name; the
newest attempt by its primary key; the webhook gates with a slot, a cool-off or a failure streak (one row per
receiver, as the relay tick reads every 15 s). A fixed number of statements, however many rows.

Staff-wide, not scoped to an organization: Layers keeping up is every partner's."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Count, F, Min, Q, QuerySet
from django.urls import reverse
from django.utils import formats, timezone
from django_celery_beat.models import PeriodicTask

from accounts.models import Event
from accounts.webhooks import services as webhooks
from accounts.webhooks.models import WebhookDelivery
from config.api.fields import datetime_output
from scheduling.models import ScheduledPost, ScheduledPostAttempt

OK, BEHIND, STOPPED = "ok", "behind", "stopped"
GRAVITY = {OK: 0, BEHIND: 1, STOPPED: 2}

# A post counts as late once it is this long past its due time (or its status check): the tick runs every 2 s.
# The posts list's "Overdue" filter uses it too.
GRACE = timedelta(seconds=60)
# Webhooks: the relay's own (accounts.webhooks.services), above its 15-second tick.
WEBHOOK_GRACE = webhooks.LATE_AFTER
# Late by more than this: stopped rather than behind. Workers short of a burst catch up within minutes; a post a
# quarter of an hour late has its partner asking.
STOPPED_AFTER = timedelta(minutes=15)
# Each late count reads at most this many index entries: past it, "10,000 or more".
COUNT_CAP = 10_000
# django-celery-beat's DatabaseScheduler writes what it sent (each entry's last_run_at) every sync_every seconds
# (Celery's default, 3 minutes), and when it stops: a running beat's record is at most that old, and older than
# twice that (and a minute) is a beat that stopped.
BEAT_SYNC_EVERY = timedelta(minutes=3)
BEAT_SILENT_AFTER = 2 * BEAT_SYNC_EVERY + timedelta(minutes=1)
# The beat entries (config/settings/base.py: CELERY_BEAT_SCHEDULE) whose ticks this watches.
DISPATCHER_TASK = "dispatch-due-posts"
RELAY_TASK = "webhooks-relay"


def due_late(now: datetime) -> Q:
    """Queued posts due more than GRACE ago: the sp_due_queued partial index's condition and column."""
    return Q(status=ScheduledPost.Status.QUEUED, due_at__lt=now - GRACE)


def publishing_late(now: datetime) -> Q:
    """Publishing posts whose status check, or claim lease, ran out more than GRACE ago: the resolver's, through
    the sp_publishing_check partial index. A claim sets next_check_at to its lease's end, and a check never moves
    it past that end, so a post past its lease is among them."""
    return Q(status=ScheduledPost.Status.PUBLISHING, next_check_at__lt=now - GRACE)


@dataclass
class Figure:
    """One count of a line, with the admin list of what it counts (None for staff who may not see that list)."""

    kind: str
    label: str
    n: int
    capped: bool = False
    url: str | None = None

    @property
    def shown(self) -> str:
        return f"{self.n:,} or more" if self.capped else f"{self.n:,}"


@dataclass
class LineNow:
    key: str
    label: str
    verdict: str = OK
    summary: str = OK
    late: int = 0
    capped: bool = False
    oldest_due_at: datetime | None = None
    counts: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # The line's own figures for the JSON answer, beyond the verdict and the late count.
    figures: dict = field(default_factory=dict)


def layers_now(*, now: datetime | None = None) -> list[LineNow]:
    """The four lines: dispatcher, due, publishing, webhooks (module docstring)."""
    now = now or timezone.now()
    beat = {
        name: (enabled, last_run_at)
        for name, enabled, last_run_at in PeriodicTask.objects.filter(name__in=(DISPATCHER_TASK, RELAY_TASK))
        .values_list("name", "enabled", "last_run_at")
        .order_by()
    }
    last_attempt = (
        # Attempts only (numbered): not a staff retry's row, nor the rows of posts a worker whose clock is off
        # gave back or hold_after_restore held, which say nothing of the dispatcher working.
        ScheduledPostAttempt.objects.exclude(outcome=ScheduledPostAttempt.Outcome.STAFF_RETRY)
        .filter(number__isnull=False)
        .order_by("-id")
        .values_list("finished_at", flat=True)
        .first()
    )
    return [
        _dispatcher(beat.get(DISPATCHER_TASK), last_attempt, now),
        _due(now),
        _publishing(now),
        _webhooks(beat.get(RELAY_TASK), now),
    ]


def worst(lines: list[LineNow]) -> str:
    return max((line.verdict for line in lines), key=GRAVITY.__getitem__, default=OK)


def as_json(lines: list[LineNow], *, now: datetime) -> dict:
    """The body of GET /ops/status: the worst verdict, and each line's verdict, summary and figures."""
    names = {"dispatcher": "dispatcher", "due": "duePosts", "publishing": "publishingPosts", "webhooks": "webhooks"}
    checks = {}
    for line in lines:
        check = {"verdict": line.verdict, "summary": line.summary}
        if line.key != "dispatcher":
            late_for = None if line.oldest_due_at is None else int((now - line.oldest_due_at).total_seconds())
            check |= {"late": line.late, "lateCapped": line.capped, "oldestLateSeconds": late_for}
        checks[names[line.key]] = check | line.figures
    return {"status": worst(lines), "checkedAt": datetime_output(now), "checks": checks}


# --- The lines -------------------------------------------------------------------------------------------


def _dispatcher(beat: tuple[bool, datetime | None] | None, last_attempt: datetime | None, now: datetime) -> LineNow:
    line = LineNow("dispatcher", "Dispatcher")
    problem, sent_at = _beat_problem(beat, "the dispatcher's tick", now)
    if problem:
        line.verdict, line.summary = STOPPED, f"stopped: {problem}"
    else:
        line.summary = f"ok: beat sent the tick, recorded {_shown(sent_at)} (beat records it every 3 minutes)"
    line.notes.append(
        f"The last publishing attempt ended {_shown(last_attempt)} ({_age(now - last_attempt)} ago)."
        if last_attempt
        else "No publishing attempt yet."
    )
    line.figures = {
        "tickSentAt": datetime_output(sent_at),
        "tickEnabled": bool(beat and beat[0]),
        "lastAttemptEndedAt": datetime_output(last_attempt),
    }
    return line


def _due(now: datetime) -> LineNow:
    line = LineNow("due", "Posts due")
    n, capped, oldest = _late(ScheduledPost.objects.filter(due_late(now)), "due_at")
    changelist = reverse("admin:scheduling_scheduledpost_changelist")
    line.counts = [Figure("late", "Due and not sent", n, capped, f"{changelist}?due=overdue")]
    _judge(line, n, capped, oldest, now, _count(n, capped, "post", "posts") + " due and not sent")
    return line


def _publishing(now: datetime) -> LineNow:
    line = LineNow("publishing", "Posts publishing")
    late = ScheduledPost.objects.filter(publishing_late(now)).order_by("next_check_at")
    row = late.values("next_check_at", "claimed_until")[: COUNT_CAP + 1].aggregate(
        n=Count("*"), oldest=Min("next_check_at"), past_lease=Count("claimed_until", filter=Q(claimed_until__lt=now))
    )
    n, capped = min(row["n"], COUNT_CAP), row["n"] > COUNT_CAP
    past_lease, oldest = min(row["past_lease"], n), row["oldest"]
    changelist = reverse("admin:scheduling_scheduledpost_changelist")
    line.counts = [Figure("late", "Waiting for the resolver", n, capped, f"{changelist}?due=check_overdue")]
    what = _count(n, capped, "post", "posts") + " waiting for the resolver"
    if past_lease:
        what += f" ({past_lease:,} past {'its' if n == 1 else 'their'} claim lease)"
    _judge(line, n, capped, oldest, now, what)
    line.figures = {"pastLease": past_lease}
    return line


def _webhooks(beat: tuple[bool, datetime | None] | None, now: datetime) -> LineNow:
    line = LineNow("webhooks", "Webhooks")
    held = webhooks.receivers_holding_back(now=now)
    sendable = webhooks.deliveries_sendable(held=held)
    pending, pending_capped, pending_oldest = _late(
        WebhookDelivery.objects.filter(webhooks.deliveries_late_pending(now=now), sendable), "next_attempt_at"
    )
    sending, sending_capped, sending_oldest = _late(
        WebhookDelivery.objects.filter(webhooks.deliveries_late_sending(now=now), sendable), "lease_until"
    )
    events, events_capped, events_oldest = _late(
        Event.objects.filter(webhooks.events_fan_out_late(now=now)), "created_at"
    )
    if events_oldest is not None:  # the relay's sweep takes an event FANOUT_GRACE after it was recorded
        events_oldest += webhooks.FANOUT_GRACE
    deliveries = pending + sending
    n, capped = deliveries + events, pending_capped or sending_capped or events_capped
    oldest = min((t for t in (pending_oldest, sending_oldest, events_oldest) if t is not None), default=None)
    deliveries_url = reverse("admin:webhooks_webhookdelivery_changelist") + "?late=yes"
    events_url = reverse("admin:accounts_event_changelist") + "?fanout=late"
    line.counts = [
        Figure("late", "Deliveries", deliveries, pending_capped or sending_capped, deliveries_url),
        Figure("events", "Events not fanned out", events, events_capped, events_url),
    ]
    parts = [
        _count(events, events_capped, "event", "events") + " not fanned out" if events else "",
        _count(deliveries, pending_capped or sending_capped, "delivery", "deliveries") if deliveries else "",
    ]
    waiting = _count(n, capped, "webhook", "webhooks") + f" waiting ({', '.join(p for p in parts if p)})"
    _judge(line, n, capped, oldest, now, waiting)
    problem, sent_at = _beat_problem(beat, "the relay's tick", now)
    if problem:
        line.verdict = STOPPED
        line.summary = f"stopped: {problem}" + (f"; {waiting}" if n else "")
    line.figures = {
        "eventsLate": events,
        "deliveriesLate": deliveries,
        "tickSentAt": datetime_output(sent_at),
        "tickEnabled": bool(beat and beat[0]),
    }
    return line


# --- Helpers ---------------------------------------------------------------------------------------------


def _late(late: QuerySet, due: str) -> tuple[int, bool, datetime | None]:
    """How many rows of `late` there are, up to COUNT_CAP (and whether there are more), and the oldest `due`:
    the first COUNT_CAP + 1 of them in `due` order, read from an index whose column is `due`."""
    row = late.order_by(due).values(due)[: COUNT_CAP + 1].aggregate(n=Count("*"), oldest=Min(F(due)))
    return min(row["n"], COUNT_CAP), row["n"] > COUNT_CAP, row["oldest"]


def _judge(
    line: LineNow,
    n: int,
    capped: bool,
    oldest: datetime | None,
    now: datetime,
    what: str,
) -> None:
    """ok with nothing late; behind, or stopped once the oldest is more than STOPPED_AFTER late (past its due time,
    the grace included: what partners see)."""
    line.late, line.capped, line.oldest_due_at = n, capped, oldest
    if not n or oldest is None:
        return
    lateness = now - oldest
    line.verdict = STOPPED if lateness > STOPPED_AFTER else BEHIND
    line.summary = f"{line.verdict}: {what}, the oldest {_age(lateness)} late"


def _beat_problem(beat: tuple[bool, datetime | None] | None, tick: str, now: datetime) -> tuple[str, datetime | None]:
    """Why beat is not sending `tick` ("" when it is), and when it last recorded sending it."""
    enabled, sent_at = beat or (True, None)
    if not enabled:
        return f"{tick} is paused in the admin (Periodic tasks)", sent_at
    if sent_at is None:
        return f"beat has never sent {tick}", None
    if now - sent_at > BEAT_SILENT_AFTER:
        return f"beat has not sent {tick} since {_shown(sent_at)} ({_age(now - sent_at)} ago)", sent_at
    return "", sent_at


def _count(n: int, capped: bool, one: str, many: str) -> str:
    if capped:
        return f"{n:,} or more {many}"
    return f"{n:,} {one if n == 1 else many}"


def _age(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 120:
        return f"{seconds} seconds"
    if seconds < 120 * 60:
        return f"{seconds // 60} minutes"
    if seconds < 48 * 3600:
        return f"{seconds // 3600} hours"
    return f"{seconds // 86400} days"


def _shown(when: datetime) -> str:
    """As the admin shows every time: to the second, with its zone."""
    return formats.date_format(timezone.localtime(when), "DATETIME_FORMAT")
