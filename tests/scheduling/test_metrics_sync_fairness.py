"""The metrics sync (globalPlatformPostsSync) is a capacity every organization shares: one organization's
backlog of stale posts must not push another organization's due post past its hourly refresh, and a run
must not stop at one batch while posts are due. Counts, not timings; real PostgreSQL."""

from datetime import timedelta

import httpx
import pytest
import time_machine
from django.utils import timezone

from accounts.platforms.sandbox.models import Post as SandboxPost
from scheduling import services
from scheduling.models import ScheduledPost
from tests.accounts.oauth_helpers import connected_account
from tests.platform_helpers import intercepted, platform_down
from tests.scheduling.publish_helpers import run_dispatcher, schedule_now

pytestmark = pytest.mark.django_db(transaction=True)


def clones(post_id: str, n: int) -> None:
    """n more rows like the scheduled post `post_id` (same account, container, external id)."""
    rows = []
    for _ in range(n):
        row = ScheduledPost.objects.get(pk=post_id) if not rows else ScheduledPost(**_fields(rows[0]))
        row.pk = row.id = None
        rows.append(row)
    ScheduledPost.objects.bulk_create(rows, batch_size=1000)


def _fields(row: ScheduledPost) -> dict:
    return {f.attname: getattr(row, f.attname) for f in ScheduledPost._meta.concrete_fields}


def published_posts(owner, sibling, *, a_posts: int) -> tuple[str, str, timezone.datetime]:
    """Org A: `a_posts` published posts last asked 2 h ago; org B: one, last asked 65 minutes ago."""
    a_account = connected_account(owner, "tiktok", "big.a")
    b_account = connected_account(sibling, "tiktok", "small.b")
    first_a = schedule_now(owner, a_account["id"], caption="a")["id"]
    b_id = schedule_now(sibling, b_account["id"], caption="b")["id"]
    run_dispatcher()
    assert set(ScheduledPost.objects.values_list("status", flat=True)) == {"published"}
    now = timezone.now()
    ScheduledPost.objects.update(published_at=now - timedelta(days=1), metrics_synced_at=None)
    clones(first_a, a_posts - 1)
    ScheduledPost.objects.filter(organization_id=owner.org.id).update(metrics_attempted_at=now - timedelta(hours=2))
    ScheduledPost.objects.filter(pk=b_id).update(metrics_attempted_at=now - timedelta(minutes=65))
    return first_a, b_id, now


def test_org_b_metrics_are_refreshed_hourly_whatever_org_a_volume(owner, sibling, monkeypatch):
    # One batch smaller than A's backlog, as 5,000 a run was against an organization with 6,000 posts: B's
    # post, stale 65 minutes, must be in the first batch, not after every older post of A.
    monkeypatch.setattr(services, "METRICS_SYNC_BATCH", 100)
    _, b_id, now = published_posts(owner, sibling, a_posts=600)

    with time_machine.travel(now, tick=False):
        services.posts_sync_metrics(limit=100)  # one batch only: which posts does it take?

    assert ScheduledPost.objects.get(pk=b_id).metrics_attempted_at == now, "B's post waited behind org A's backlog"
    # A's posts are not starved either: the rest of the batch is theirs.
    assert ScheduledPost.objects.filter(organization_id=owner.org.id, metrics_attempted_at=now).count() == 99


def test_a_run_asks_every_due_post_when_the_backlog_exceeds_one_batch(owner, sibling, monkeypatch):
    monkeypatch.setattr(services, "METRICS_SYNC_BATCH", 100)
    _, b_id, now = published_posts(owner, sibling, a_posts=350)

    with time_machine.travel(now, tick=False):
        updated = services.posts_sync_metrics()  # globalPlatformPostsSync's call

    assert ScheduledPost.objects.filter(metrics_attempted_at=now).count() == 351  # 4 batches, one run
    assert updated == 351  # every clone shares a real post's id: the platform answered for each
    assert ScheduledPost.objects.get(pk=b_id).metrics_synced_at == now


def test_a_run_stops_taking_batches_when_its_time_budget_is_spent(owner, sibling, monkeypatch):
    """The next run (15 minutes later) takes the rest: runs do not pile up on each other."""
    monkeypatch.setattr(services, "METRICS_SYNC_BATCH", 100)
    monkeypatch.setattr(services, "METRICS_SYNC_RUN_BUDGET", timedelta(0))
    _, _, now = published_posts(owner, sibling, a_posts=350)

    with time_machine.travel(now, tick=False):
        services.posts_sync_metrics()
        assert ScheduledPost.objects.filter(metrics_attempted_at=now).count() == 100  # its first batch only
    later = now + timedelta(minutes=15)
    with time_machine.travel(later, tick=False):
        services.posts_sync_metrics()
        assert ScheduledPost.objects.filter(metrics_attempted_at=later).count() == 100


def test_6000_posts_of_one_organization_do_not_hold_another_past_the_first_run(owner, sibling):
    """The audit's numbers, with the real batch size and budget."""
    _, b_id, now = published_posts(owner, sibling, a_posts=6000)

    with time_machine.travel(now, tick=False):
        services.posts_sync_metrics()

    assert ScheduledPost.objects.get(pk=b_id).metrics_attempted_at == now
    assert ScheduledPost.objects.filter(metrics_attempted_at__lt=now).count() == 0  # all 6,001 in one run


# --- An account whose sync is cut off partway -------------------------------------------------------------


def test_an_account_throttled_partway_each_run_gets_every_post_read_in_turn(owner, settings):
    """TikTok answers one metrics call a minute for this token, so each run reads the first 20 of the
    account's 60 posts and is refused after. Every post taken was marked asked before any call, so the 40 not
    reached tied with the 20 read and went behind them by id again: the same 20 were read every run and the
    other 40 never."""
    settings.LAYERS_SANDBOX_TIKTOK_RATE_LIMITS = {**settings.LAYERS_SANDBOX_TIKTOK_RATE_LIMITS, "video_query": 1}
    account = connected_account(owner, "tiktok", "throttled.tail")
    first = schedule_now(owner, account["id"])["id"]
    run_dispatcher()
    clones(first, 59)
    now = timezone.now()
    ScheduledPost.objects.update(published_at=now - timedelta(days=1), metrics_synced_at=None)

    for hour in (1, 2, 3):  # three hourly runs, one call each
        with time_machine.travel(now + timedelta(hours=hour, minutes=hour), tick=False):
            assert services.posts_sync_metrics() == 20

    assert ScheduledPost.objects.filter(metrics_synced_at__isnull=True).count() == 0


def test_posts_an_instagram_throttle_cut_off_are_asked_first_next_time(owner):
    """Read before the throttle: kept. Not reached: asked before the posts read this time."""
    account = connected_account(owner, "instagram", "cut.off")
    ids = [schedule_now(owner, account["id"], media_type="image", caption=f"p{i}")["id"] for i in range(3)]
    run_dispatcher()
    now = timezone.now()
    ScheduledPost.objects.update(published_at=now - timedelta(days=1))
    read, throttled, behind = ScheduledPost.objects.filter(pk__in=ids).order_by("pk")

    def throttle(request, sandbox):
        error = {"message": "Application request limit reached", "type": "OAuthException", "code": 4}
        return httpx.Response(400, json={"error": error})

    throttled_insights = {f"/{throttled.external_id}/insights": throttle}
    with time_machine.travel(now + timedelta(hours=2), tick=False), intercepted(throttled_insights):
        assert services.posts_sync_metrics() == 1
    with time_machine.travel(now + timedelta(hours=3, minutes=5), tick=False):
        assert services.posts_sync_metrics(limit=2) == 2  # room for two posts only: the two not reached

    synced = dict(ScheduledPost.objects.filter(pk__in=ids).values_list("pk", "metrics_synced_at"))
    assert synced == {
        read.pk: now + timedelta(hours=2),
        throttled.pk: now + timedelta(hours=3, minutes=5),
        behind.pk: now + timedelta(hours=3, minutes=5),
    }


def test_a_public_tiktok_post_behind_30_that_never_get_a_public_id_still_gets_its_url(owner, settings):
    """TikTok answers 30 status calls a minute per token. Forty posts the public cannot see (never a public id)
    came first, the follow-up was refused at the 31st call, and the one public post behind them was never
    asked: no externalUrl, no metrics, for its whole week of follow-up."""
    settings.LAYERS_SANDBOX_TIKTOK_MODERATION_SECONDS = 30 * 60  # published before TikTok gives the ids
    account = connected_account(owner, "tiktok", "mostly.private")
    private = schedule_now(owner, account["id"], caption="private")["id"]
    public = schedule_now(owner, account["id"], caption="public")["id"]
    run_dispatcher()
    row = ScheduledPost.objects.get(pk=private)
    SandboxPost.objects.filter(publish_id=row.publish_id).update(privacy_level="SELF_ONLY")
    # Forty more like the private one, ahead of the public one in line (same mark, lower ids).
    ScheduledPost.objects.bulk_create([ScheduledPost(**{**_fields(row), "id": f"sp_{n:032x}"}) for n in range(40)])
    now = timezone.now()
    ScheduledPost.objects.update(metrics_attempted_at=now - timedelta(hours=2))

    for hour in (1, 2):
        with time_machine.travel(now + timedelta(hours=hour, minutes=hour), tick=False):
            services.posts_sync_metrics()

    found = ScheduledPost.objects.get(pk=public)
    assert found.external_id and found.external_url.startswith("https://")
    assert found.metrics_synced_at is not None


# --- The platform's Retry-After ---------------------------------------------------------------------------


def test_an_account_tiktok_throttled_is_not_asked_again_by_the_rest_of_the_run(owner, monkeypatch):
    monkeypatch.setattr(services, "METRICS_SYNC_BATCH", 20)
    account = connected_account(owner, "tiktok", "told.to.wait")
    first = schedule_now(owner, account["id"])["id"]
    run_dispatcher()
    clones(first, 99)
    now = timezone.now()
    ScheduledPost.objects.update(published_at=now - timedelta(days=1), metrics_synced_at=None)
    calls: list = []

    throttled = platform_down("tiktok", calls, status=429, retry_after=3600)
    with time_machine.travel(now + timedelta(hours=1), tick=False), intercepted(throttled):
        assert services.posts_sync_metrics() == 0

    # One call, refused: not one more per batch of the run (there were five batches' worth of posts).
    assert len(calls) == 1


def test_an_account_tiktok_throttled_is_asked_again_once_its_retry_after_has_passed(owner):
    account = connected_account(owner, "tiktok", "told.to.wait.2")
    ids = [schedule_now(owner, account["id"], caption=c)["id"] for c in ("a", "b")]
    run_dispatcher()
    now = timezone.now()
    ScheduledPost.objects.update(published_at=now - timedelta(days=1))
    ScheduledPost.objects.filter(pk=ids[0]).update(metrics_synced_at=now - timedelta(minutes=61))
    ScheduledPost.objects.filter(pk=ids[1]).update(metrics_synced_at=now - timedelta(minutes=50))
    calls: list = []

    with intercepted(platform_down("tiktok", calls, status=429, retry_after=3600)):
        with time_machine.travel(now, tick=False):
            services.posts_sync_metrics()
        with time_machine.travel(now + timedelta(minutes=15), tick=False):  # the next beat: "b" is due now
            services.posts_sync_metrics()
    assert len(calls) == 1  # TikTok said an hour

    with time_machine.travel(now + timedelta(minutes=61), tick=False):
        assert services.posts_sync_metrics() == 2
