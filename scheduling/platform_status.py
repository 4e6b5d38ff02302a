"""Platforms now: what TikTok, Instagram and the managed providers answered our publishing calls lately, for ops
(the admin's index page and the posts list). A post the platform refuses for now is retried for
LAYERS_PUBLISH_RETRY_WINDOW (an hour) before it fails, so during an outage no failed post showed anything for
that hour; the refused calls show it from the first one.

Read from the publishing attempts the publisher writes anyway (ScheduledPostAttempt, one per call's outcome),
each carrying whose answer ended it (`platform`: tiktok, instagram or managed; no extra write, no extra
statement). Attempts no platform answered (a worker that died, Layers giving up on its own) carry none and are
not counted: a deploy killing workers is no outage. The attempts table grows by millions of rows, so every read
here goes through one of two partial indexes on (platform, finished_at) — the refusals
(spa_refused_by_platform) and the publishes (spa_published_by_platform), disjoint, so an attempt enters one of
them at most — and reads no post or account: the window's counts read that window's entries of the three
platforms (what happened in the last WINDOW, and nothing else), each latest publish and refusal is the first
entry of its platform's range (one row each, however busy the other platforms were). Two statements, whose
cost follows the last WINDOW's calls, not the day's or the table's.

Staff-wide, not scoped to an organization: an outage is every partner's."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlencode

from django.db import connection
from django.db.models import Count, Q
from django.urls import reverse
from django.utils import formats, timezone

from scheduling.models import ScheduledPostAttempt

WINDOW = timedelta(minutes=15)
# How far back the last publish and the last refusal are shown: "none published in the last 24 hours" beyond.
# Each is one index entry whatever the horizon (the newest of its platform's range).
LOOKBACK = timedelta(hours=24)

# The codes of the platform's "not now" (API.md): an outage, a 5xx, a timeout, a throttle. Other failures
# (refused content, a dead token) are about one post or account, not the platform.
UNAVAILABLE, RATE_LIMITED = "PLATFORM_UNAVAILABLE", "RATE_LIMITED"
REFUSAL_CODES = (UNAVAILABLE, RATE_LIMITED)
# An attempt the platform refused for now: the post waits to retry, or failed once its retry window ran out.
# Only the platform's own answers (`platform` set): a run that stopped mid-call fails PLATFORM_UNAVAILABLE too.
# Written as the index's condition (models.ScheduledPostAttempt.Meta): the planner uses the index only for a
# condition that implies it.
REFUSED = Q(platform__isnull=False, outcome__in=("retry", "failed"), error_code__in=REFUSAL_CODES)
PUBLISHED = Q(platform__isnull=False, outcome="published")
# What each count of the panel counts, for its link to the posts list (admin.RecentAnswerFilter).
ANSWERS = {
    "unavailable": REFUSED & Q(error_code=UNAVAILABLE),
    "rate_limited": REFUSED & Q(error_code=RATE_LIMITED),
    "published": PUBLISHED,
}

# Where a post's calls go: a managed post to its project's provider, any other to its account's platform — the
# key its attempts carry in `platform` (services._answering). (key, label, the posts list's URL parameters that
# select the group's posts: those behind its counts)
GROUPS = (
    ("tiktok", "TikTok", {"mode__in": "publish,draft", "social_account__platform__exact": "tiktok"}),
    ("instagram", "Instagram", {"mode__in": "publish,draft", "social_account__platform__exact": "instagram"}),
    ("managed", "Managed providers", {"mode__exact": "managed"}),
)
GROUP_KEYS = tuple(key for key, _, _ in GROUPS)


def recent_attempts(answer: str, *, now: datetime | None = None):
    """The attempts of the last WINDOW that ended as `answer` says (a key of ANSWERS), the panel's platforms'
    (each one's range of the index: a platform is the leading column)."""
    since = (now or timezone.now()) - WINDOW
    return ScheduledPostAttempt.objects.filter(ANSWERS[answer], platform__in=GROUP_KEYS, finished_at__gte=since)


@dataclass
class PlatformNow:
    key: str
    label: str
    unavailable: int = 0
    rate_limited: int = 0
    published: int = 0
    last_published_at: datetime | None = None
    last_refused_at: datetime | None = None
    last_refusal_message: str = ""
    verdict: str = "ok"
    summary: str = "ok"
    links: dict[str, str] = field(default_factory=dict)

    @property
    def refused(self) -> int:
        return self.unavailable + self.rate_limited


def platforms_now(*, now: datetime | None = None) -> list[PlatformNow]:
    """One PlatformNow per GROUPS entry: its counts over the last WINDOW, its last publish and refusal within
    LOOKBACK (the refusal's message: the platform's words, which the clients redact of tokens), a verdict and
    links to the posts list."""
    now = now or timezone.now()
    rows = {key: PlatformNow(key, label) for key, label, _ in GROUPS}
    counts = (
        ScheduledPostAttempt.objects.filter(REFUSED | PUBLISHED, platform__in=GROUP_KEYS, finished_at__gte=now - WINDOW)
        .values_list("platform", "outcome", "error_code")
        .annotate(n=Count("id"))
        .order_by()
    )
    for key, outcome, code, n in counts:
        row = rows[key]
        if outcome == "published":
            row.published += n
        elif code == UNAVAILABLE:
            row.unavailable += n
        else:
            row.rate_limited += n

    # The latest publish and the latest refusal of each group: the newest entry of the group's range of each index.
    latest = [
        ScheduledPostAttempt.objects.filter(answer, platform=key, finished_at__gte=now - LOOKBACK)
        .order_by("-finished_at")
        .values_list("platform", "outcome", "finished_at", "error_code", "message")[:1]
        for key in GROUP_KEYS
        for answer in (PUBLISHED, REFUSED)
    ]
    # One statement where the database takes a LIMIT in each part of a UNION (PostgreSQL); SQLite, the `make
    # run` default, refuses that, and gets one statement per part.
    if connection.features.supports_slicing_ordering_in_compound:
        found = list(latest[0].union(*latest[1:], all=True))
    else:
        found = [row for part in latest for row in part]
    refusal_codes = {}
    for key, outcome, finished_at, code, message in found:
        row = rows[key]
        if outcome == "published":
            row.last_published_at = finished_at
        else:
            row.last_refused_at, row.last_refusal_message, refusal_codes[key] = finished_at, message, code

    changelist = reverse("admin:scheduling_scheduledpost_changelist")
    for key, _, params in GROUPS:
        row = rows[key]
        row.links = {answer: f"{changelist}?{urlencode({**params, 'answered': answer})}" for answer in ANSWERS}
        _judge(row, refusal_codes.get(key))
    return list(rows.values())


def lookback_text() -> str:
    return f"{LOOKBACK.total_seconds() / 3600:.0f} hours"


def _judge(row: PlatformNow, last_refusal_code: str | None) -> None:
    """Down (the latest refusal unavailable) or throttled (rate-limited) when the platform's latest answer was a
    refusal and it refused more calls than it published in the window; ok otherwise. The first publish after an
    outage says ok, while the window still counts the refusals before it; a few refusals among many publishes (a
    creator's own quota, one 5xx) say ok too, their counts beside it."""
    refused_last = row.last_refused_at is not None and (
        row.last_published_at is None or row.last_published_at < row.last_refused_at
    )
    if not refused_last or row.refused <= row.published:
        return
    row.verdict = "down" if last_refusal_code == UNAVAILABLE else "throttled"
    calls = f"{row.refused} call{'' if row.refused == 1 else 's'} refused"
    if row.last_published_at is None:
        since = f"none published in the last {lookback_text()}"
    else:  # as the admin shows every time: to the second, with its zone
        shown = formats.date_format(timezone.localtime(row.last_published_at), "DATETIME_FORMAT")
        since = f"none published since {shown}"
    row.summary = f"{row.verdict}: {calls}, {since}"
