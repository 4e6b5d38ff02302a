"""globalPlatformPostsSync when an account's metrics cannot be read: a token without the metrics scope is
not a dead token, one account's failure does not stop the others' metrics, and a figure the platform has
no value for right now is unknown, not 0."""

from datetime import timedelta
from unittest import mock

import httpx
import pytest
import time_machine
from django.utils import timezone

from accounts.models import Event, SocialAccount
from accounts.platforms.instagram import InstagramClient
from accounts.platforms.tiktok import TikTokClient
from scheduling import services
from scheduling.models import ScheduledPost
from tests.accounts.oauth_helpers import connected_account, consent_and_return
from tests.platform_helpers import intercepted, platform_down
from tests.receivers import receiver
from tests.scheduling.publish_helpers import later, managed_provider, post, run_dispatcher, schedule_now

pytestmark = pytest.mark.django_db(transaction=True)

PUBLISH_SCOPES = ["user.info.basic", "user.info.profile", "video.publish", "video.upload"]


def reauthorize_with(owner, account_id: str, username: str, scopes: list[str], platform: str = "tiktok") -> None:
    """The customer follows a reauth link asking for `scopes` only (API.md's optional `scopes`)."""
    link = owner.client.post(
        f"/v1/projects/{owner.project.id}/social/reauth-url",
        {"socialAccountId": account_id, "scopes": scopes},
        format="json",
    )
    assert link.status_code == 200, link.content
    assert consent_and_return(platform, link.json()["authorizeUrl"], username).status_code == 302


def listed_metrics(owner) -> dict:
    return owner.client.get(f"/v1/projects/{owner.project.id}/posts").json()["data"][0]["metrics"]


def published_and_synced(owner, platform: str, handle: str, *, wait: timedelta, **schedule) -> tuple[dict, dict]:
    """A post of a new account published now, and its metrics synced `wait` later: (the account, the metrics
    the posts list shows then)."""
    account = connected_account(owner, platform, handle)
    schedule_now(owner, account["id"], **schedule)
    run_dispatcher()
    with time_machine.travel(later(seconds=wait.total_seconds())):
        assert services.posts_sync_metrics() == 1
        return account, listed_metrics(owner)


def test_a_token_that_can_post_but_not_read_metrics_is_not_declared_dead_by_the_metrics_sync(owner):
    account = connected_account(owner, "tiktok", "noscope")
    first = schedule_now(owner, account["id"])
    run_dispatcher()
    assert post(owner, first["id"])["status"] == "published"
    reauthorize_with(owner, account["id"], "noscope", PUBLISH_SCOPES)  # no video.list: no metrics
    second = schedule_now(owner, account["id"], when=later(hours=3))
    needs_reauth = Event.objects.filter(type="social_account.needs_reauth").count()

    with time_machine.travel(later(hours=2)):
        assert services.posts_sync_metrics() == 0
    with time_machine.travel(later(hours=3, seconds=5)):
        run_dispatcher()

    assert SocialAccount.objects.get(pk=account["id"]).status == "connected"
    assert Event.objects.filter(type="social_account.needs_reauth").count() == needs_reauth
    assert post(owner, second["id"])["status"] == "published"
    # The post was asked about (no metrics for this token): not asked again at every run.
    assert ScheduledPost.objects.get(pk=first["id"]).metrics_attempted_at is not None
    assert ScheduledPost.objects.get(pk=first["id"]).metrics_synced_at is None


def test_a_token_without_the_publish_scope_still_fails_the_post_as_credential_invalid(owner):
    from accounts.platforms.sandbox.models import Token

    account = connected_account(owner, "tiktok", "readonly")
    # A read-only reauth is refused (reauth-url answers 422, a grant without the permission access_denied); a
    # token that lost the permission at TikTok's end since (the customer withdrew it there) is only found out
    # when it posts.
    Token.objects.filter(username="readonly").update(scopes="user.info.basic,user.info.profile,video.list")
    scheduled = schedule_now(owner, account["id"])

    run_dispatcher()

    # The token cannot post: the customer has to authorize again, with the publishing scopes.
    body = post(owner, scheduled["id"])
    assert body["status"] == "failed" and body["error"]["code"] == "CREDENTIAL_INVALID", body
    assert "lacks the publishing permission" in body["error"]["message"]
    assert SocialAccount.objects.get(pk=account["id"]).status == "reauth_required"


def test_one_accounts_unexpected_error_does_not_stop_the_metrics_of_the_others(owner):
    accounts = [connected_account(owner, "tiktok", name) for name in ("broken.metrics", "fine.metrics")]
    ids = {a["id"]: schedule_now(owner, a["id"])["id"] for a in accounts}
    run_dispatcher()
    broken = SocialAccount.objects.get(pk=accounts[0]["id"]).identity.platform_user_id
    real_fetch = TikTokClient.fetch_metrics

    def fetch(self, *, platform_user_id, **kwargs):
        if platform_user_id == broken:
            raise ValueError("an answer the client did not expect")
        return real_fetch(self, platform_user_id=platform_user_id, **kwargs)

    with time_machine.travel(later(hours=2)), mock.patch.object(TikTokClient, "fetch_metrics", fetch):
        assert services.posts_sync_metrics() == 1

    fine = ScheduledPost.objects.get(pk=ids[accounts[1]["id"]])
    failing = ScheduledPost.objects.get(pk=ids[accounts[0]["id"]])
    assert fine.metrics_synced_at is not None and fine.views is not None
    assert failing.metrics_synced_at is None and failing.metrics_attempted_at is not None
    assert SocialAccount.objects.get(pk=accounts[0]["id"]).status == "connected"


def test_one_accounts_unexpected_error_does_not_stop_the_post_id_follow_up_of_the_others(owner, settings):
    settings.LAYERS_SANDBOX_TIKTOK_MODERATION_SECONDS = 30 * 60  # published before TikTok gives the ids
    accounts = [connected_account(owner, "tiktok", name) for name in ("broken.status", "fine.status")]
    ids = {a["id"]: schedule_now(owner, a["id"])["id"] for a in accounts}
    run_dispatcher()
    broken = SocialAccount.objects.get(pk=accounts[0]["id"]).identity.platform_user_id
    real_status = TikTokClient.publish_status

    def status(self, *, platform_user_id, **kwargs):
        if platform_user_id == broken:
            raise ValueError("an answer the client did not expect")
        return real_status(self, platform_user_id=platform_user_id, **kwargs)

    with time_machine.travel(later(hours=2)), mock.patch.object(TikTokClient, "publish_status", status):
        assert services.posts_sync_metrics() == 1

    fine = ScheduledPost.objects.get(pk=ids[accounts[1]["id"]])
    failing = ScheduledPost.objects.get(pk=ids[accounts[0]["id"]])
    assert fine.external_id and fine.metrics_synced_at is not None
    assert failing.external_id == "" and failing.metrics_attempted_at is not None


@pytest.mark.parametrize("platform, client", [("tiktok", TikTokClient), ("instagram", InstagramClient)])
def test_a_managed_posts_provider_id_is_never_asked_of_the_platform(owner, settings, platform, client):
    # A managed post's externalId is the provider's id, not the platform's: the platform cannot know it.
    settings.LAYERS_SANDBOX_TIKTOK_MODERATION_SECONDS = 0
    account = connected_account(owner, platform, f"managed.metrics.{platform}")
    with receiver(lambda r: (200, {"id": "mp-77", "url": "https://boost.test/p/77"}, {})) as (url, _):
        managed_provider(project=owner.project, name="Boost", endpoint_url=url)
        managed = schedule_now(owner, account["id"], mode="managed", media_type="image")
        own = schedule_now(owner, account["id"], media_type="image")
        run_dispatcher()
    assert post(owner, managed["id"])["externalId"] == "mp-77"
    assert post(owner, own["id"])["status"] == "published"

    asked: list = []

    def fetch_metrics(self, *, access_token, platform_user_id, external_ids):
        asked.extend(external_ids)
        return original(self, access_token=access_token, platform_user_id=platform_user_id, external_ids=external_ids)

    original = client.fetch_metrics
    with mock.patch.object(client, "fetch_metrics", fetch_metrics):
        for hours in (2, 4):
            with time_machine.travel(later(hours=hours)):
                services.posts_sync_metrics()

    assert "mp-77" not in asked and ScheduledPost.objects.get(pk=own["id"]).external_id in asked
    managed_row = ScheduledPost.objects.get(pk=managed["id"])
    assert managed_row.metrics_synced_at is None and managed_row.metrics_attempted_at is None
    assert ScheduledPost.objects.get(pk=own["id"]).metrics_synced_at is not None


def test_two_overlapping_sync_runs_never_ask_the_platform_about_the_same_post(owner):
    """Beat sends the sync every 15 minutes whether or not the last run has finished; a run that takes
    longer (thousands of accounts, a slow platform) overlapped the next, which asked about the very same
    posts again: double the rate budget, more throttling, longer runs. Each run now claims its posts first."""
    import threading

    from tests.concurrency import run_in_threads

    accounts = [connected_account(owner, "tiktok", f"overlap.{n}") for n in range(2)]
    posts = [schedule_now(owner, account["id"]) for account in accounts]
    run_dispatcher()
    assert all(post(owner, p["id"])["status"] == "published" for p in posts)
    asked: list[list[str]] = []
    second_run_asked = threading.Event()
    real_fetch = TikTokClient.fetch_metrics

    def slow_fetch(self, *, external_ids, **kwargs):
        asked.append(list(external_ids))
        if len(asked) == 1:
            second_run_asked.wait(timeout=3)  # the first run is still going when the next one starts
        else:
            second_run_asked.set()
        return real_fetch(self, external_ids=external_ids, **kwargs)

    with time_machine.travel(later(hours=2)), mock.patch.object(TikTokClient, "fetch_metrics", slow_fetch):
        updated = run_in_threads(services.posts_sync_metrics, services.posts_sync_metrics)

    assert sorted(id for ids in asked for id in ids) == sorted(
        ScheduledPost.objects.filter(pk__in=[p["id"] for p in posts]).values_list("external_id", flat=True)
    )  # each post asked about once, by one run or the other
    assert sum(updated) == 2


def test_posts_published_before_the_metrics_window_are_refreshed_daily_not_hourly(owner, settings):
    """API.md: the sync refreshes the metrics of connected accounts' published posts; an old post's figures
    barely move, so past the window (30 days) it is asked about once a day instead of every hour."""
    account = connected_account(owner, "tiktok", "window.fan")
    old, recent = (schedule_now(owner, account["id"], caption=c)["id"] for c in ("old", "recent"))
    run_dispatcher()
    assert services.posts_sync_metrics() == 2
    now = timezone.now()
    ScheduledPost.objects.filter(pk=old).update(published_at=now - timedelta(days=31))
    ScheduledPost.objects.filter(pk=recent).update(published_at=now - timedelta(days=28))
    external = dict(ScheduledPost.objects.filter(pk__in=[old, recent]).values_list("pk", "external_id"))
    before = ScheduledPost.objects.get(pk=old)
    asked: list[str] = []
    real_fetch = TikTokClient.fetch_metrics

    def fetch(self, *, external_ids, **kwargs):
        asked.extend(external_ids)
        return real_fetch(self, external_ids=external_ids, **kwargs)

    with time_machine.travel(later(hours=2)), mock.patch.object(TikTokClient, "fetch_metrics", fetch):
        assert services.posts_sync_metrics() == 1
        listed = {p["id"]: p for p in owner.client.get(f"/v1/projects/{owner.project.id}/posts").json()["data"]}

    # Two hours on, only the post within the default 30 days was asked about; the older one keeps its metrics.
    assert asked == [external[recent]]
    after = ScheduledPost.objects.get(pk=old)
    assert (after.views, after.metrics_synced_at) == (before.views, before.metrics_synced_at)
    assert listed[old]["metrics"]["views"] == before.views and listed[old]["metrics"]["syncedAt"] is not None

    # A day on, both are asked about again: the older one is still refreshed, daily.
    asked.clear()
    with time_machine.travel(later(hours=25)), mock.patch.object(TikTokClient, "fetch_metrics", fetch):
        assert services.posts_sync_metrics() == 2
    assert sorted(asked) == sorted(external.values())
    assert ScheduledPost.objects.get(pk=old).metrics_synced_at > before.metrics_synced_at

    # The window is a setting: with 7 days, the 28-day-old post is daily too.
    settings.LAYERS_METRICS_SYNC_WINDOW = timedelta(days=7)
    with time_machine.travel(later(hours=27)), mock.patch.object(TikTokClient, "fetch_metrics", fetch):
        assert services.posts_sync_metrics() == 0


# --- Figures the platform does not have right now -----------------------------------------------------


def test_an_empty_instagram_insights_answer_does_not_zero_a_posts_known_metrics(owner):
    """Meta: insights that "do not exist or are currently unavailable" come back as an empty data set, not
    0 (and may be up to 48 h late). The post did not lose its views: Instagram had no figures right now."""
    _, before = published_and_synced(owner, "instagram", "insights.gap", wait=timedelta(hours=6), caption="reel")
    assert before["views"] > 0 and before["likes"] > 0 and before["shares"] is not None, before

    def unavailable(request, sandbox):
        return httpx.Response(200, json={"data": []})

    with time_machine.travel(later(hours=30)), intercepted({"/insights": unavailable}):
        services.posts_sync_metrics()
        after = listed_metrics(owner)

    # views and shares kept; likes and comments read from the counts any token can read (grown since)
    assert after["views"] == before["views"] and after["shares"] == before["shares"], (before, after)
    assert after["likes"] > before["likes"] and after["comments"] >= before["comments"], (before, after)
    assert after["syncedAt"] > before["syncedAt"]


def test_an_instagram_token_without_insights_does_not_report_known_views_as_zero(owner):
    """README: without the insights permission the sync falls back to the like / comment counts any token can
    read. Views and shares are then unknown: a post whose views were synced before the reauth keeps them."""
    account, before = published_and_synced(owner, "instagram", "insights.lost", wait=timedelta(hours=6), caption="reel")
    assert before["views"] > 0, before

    reauthorize_with(
        owner, account["id"], "insights.lost", ["instagram_business_content_publish"], platform="instagram"
    )
    with time_machine.travel(later(hours=30)):
        assert services.posts_sync_metrics() == 1
        after = listed_metrics(owner)

    assert after["likes"] > before["likes"], (before, after)  # the fallback read the counts
    assert after["views"] == before["views"] and after["shares"] == before["shares"], (before, after)


def test_an_instagram_post_synced_before_its_insights_exist_has_unknown_views_until_they_do(owner):
    """In a media's first hour the sandbox's Instagram has no insights yet (the documented empty data set):
    the post shows the public like / comment counts and null views and shares, not 0, then the real figures."""
    _, early = published_and_synced(owner, "instagram", "insights.early", wait=timedelta(minutes=40), caption="fresh")
    assert early["views"] is None and early["shares"] is None, early
    assert early["likes"] is not None and early["comments"] is not None and early["syncedAt"], early

    with time_machine.travel(later(hours=3)):
        assert services.posts_sync_metrics() == 1
        known = listed_metrics(owner)
    assert known["views"] > 0 and known["shares"] is not None, known


def test_a_tiktok_answer_without_a_figure_keeps_the_posts_known_value(owner):
    """TikTok answers only the fields it has for a video: one it left out is unknown, not 0."""
    _, before = published_and_synced(owner, "tiktok", "partial.figures", wait=timedelta(hours=6))
    assert before["views"] > 0, before

    def without_views(request, sandbox):
        answer = sandbox.handle_request(request)
        answer.read()
        body = answer.json()
        for video in body["data"]["videos"]:
            video.pop("view_count", None)
        return httpx.Response(200, json=body)

    with time_machine.travel(later(hours=30)), intercepted({"/v2/video/query/": without_views}):
        assert services.posts_sync_metrics() == 1
        after = listed_metrics(owner)

    assert after["views"] == before["views"] and after["likes"] > before["likes"], (before, after)


# --- One post's calls failing -------------------------------------------------------------------------


def insights_unavailable(request, sandbox):
    """Meta's answer to a media's insights call that keeps failing on its side (code 2, is_transient)."""
    error = {"message": "Service temporarily unavailable", "type": "OAuthException", "code": 2, "is_transient": True}
    return httpx.Response(500, json={"error": error})


def test_one_instagram_post_whose_insights_keep_failing_does_not_stop_the_metrics_of_the_others(owner):
    """Every insights call about one media failed with Meta's transient error, run after run: the account's
    other posts got no metrics at all (the error threw away the group's readings and ended the account's sync)."""
    account = connected_account(owner, "instagram", "one.bad.media")
    ids = [schedule_now(owner, account["id"], media_type="image", caption=f"p{i}")["id"] for i in range(3)]
    run_dispatcher()
    bad, *good = ScheduledPost.objects.filter(pk__in=ids).order_by("pk")

    failing = {f"/{bad.external_id}/insights": insights_unavailable}
    for hours in (2, 4):
        with time_machine.travel(later(hours=hours)), intercepted(failing):
            assert services.posts_sync_metrics() == 2

    for row in good:
        row.refresh_from_db()
        assert row.metrics_synced_at is not None and row.views is not None, row.pk
    bad.refresh_from_db()
    # Asked (so it waits its turn like any other), and nothing invented for it.
    assert bad.metrics_attempted_at is not None and bad.metrics_synced_at is None and bad.views is None


def test_an_instagram_outage_costs_the_sync_a_few_calls_per_account_not_one_per_post(owner):
    """A transient error about one media skips that media only; Instagram failing every call is no single
    media's problem, and each call may cost its whole timeout: the account's sync stops after a few."""
    account = connected_account(owner, "instagram", "down.everywhere")
    for i in range(6):
        schedule_now(owner, account["id"], media_type="image", caption=f"p{i}")
    run_dispatcher()
    calls: list = []

    with time_machine.travel(later(hours=2)), intercepted(platform_down("instagram", calls)):
        assert services.posts_sync_metrics() == 0

    assert len(calls) == 3
    assert SocialAccount.objects.get(pk=account["id"]).status == "connected"


# --- Runs that overlap --------------------------------------------------------------------------------


def test_a_sync_run_outlasted_by_the_next_never_writes_its_older_figures_over_newer_ones(owner):
    """A run that outlasts METRICS_STALE_AFTER (a slow platform, a huge backlog) while the next run reads the
    same post again: the slow run wrote its figures last, with the time its batch started, and the post's
    syncedAt and figures went back in time."""
    import threading

    from tests.concurrency import run_in_threads

    account = connected_account(owner, "tiktok", "slow.run")
    post_id = schedule_now(owner, account["id"])["id"]
    run_dispatcher()
    external_id = ScheduledPost.objects.get(pk=post_id).external_id
    t0 = timezone.now() + timedelta(hours=1)
    t1 = t0 + timedelta(minutes=61)
    first_read, second_done = threading.Event(), threading.Event()
    readings: list = []
    real_fetch = TikTokClient.fetch_metrics

    def fetch(self, **kwargs):
        answer = real_fetch(self, **kwargs)
        readings.append(answer[external_id])
        if not first_read.is_set():
            first_read.set()
            second_done.wait(timeout=20)  # the first run is still going when the second has read and written
        return answer

    def second_run():
        assert first_read.wait(timeout=20)
        try:
            return services.posts_sync_metrics(now=t1)
        finally:
            second_done.set()

    with time_machine.travel(t0), mock.patch.object(TikTokClient, "fetch_metrics", fetch):
        updated = run_in_threads(lambda: services.posts_sync_metrics(now=t0), second_run)

    assert updated == [0, 1]  # the first run's reading was older than the one stored: not written
    row = ScheduledPost.objects.get(pk=post_id)
    assert row.metrics_synced_at == t1
    assert (row.views, row.likes) == (readings[1].views, readings[1].likes)


# --- Figures and answers in shapes the platform does not document -------------------------------------


def tiktok_videos_edited(change):
    """TikTok's /v2/video/query/ answer from the sandbox, its `videos` edited by `change(videos)`."""

    def answer(request, sandbox):
        real = sandbox.handle_request(request)
        real.read()
        body = real.json()
        change(body["data"]["videos"])
        return httpx.Response(200, json=body)

    return answer


def the_post(tenant, post_id: str) -> dict:
    listed = tenant.client.get(f"/v1/projects/{tenant.project.id}/posts").json()["data"]
    return next(p for p in listed if p["id"] == post_id)


@pytest.mark.parametrize(
    "views", [10**20, 1e20, -5, 2**63], ids=["over-bigint", "float-over-bigint", "negative", "2^63"]
)
def test_a_count_no_post_can_have_is_not_stored_and_every_other_figure_and_organization_is(
    owner, sibling, views, caplog
):
    """A view count over PostgreSQL's bigint made the batch's one write fail: the run ended, and every account of
    every organization in that batch and the batches after it got no metrics, every hour (the posts were
    stamped asked, the bad one came back each time). A negative count was stored as it came."""
    huge = connected_account(owner, "tiktok", "shape.huge")
    fine = connected_account(sibling, "instagram", "shape.fine")
    odd = schedule_now(owner, huge["id"])
    other = schedule_now(sibling, fine["id"], media_type="image")
    run_dispatcher()
    odd_row = ScheduledPost.objects.get(pk=odd["id"])

    def change(videos):
        for video in videos:
            if str(video.get("id")) == odd_row.external_id:
                video["view_count"] = views

    with intercepted({"/v2/video/query/": tiktok_videos_edited(change)}):
        for hours in (2, 4):
            with time_machine.travel(later(hours=hours)):
                services.posts_sync_metrics()

    assert the_post(sibling, other["id"])["metrics"]["syncedAt"]
    metrics = the_post(owner, odd["id"])["metrics"]
    # Unknown, not a figure the post cannot have; the figures TikTok gave readably are kept.
    assert metrics["views"] is None and metrics["likes"] is not None and metrics["syncedAt"], metrics
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and odd["id"] in r.getMessage()]
    assert warned and "tiktok" in warned[0] and "views" in warned[0], warned


def test_a_batch_write_the_database_refuses_does_not_stop_other_organizations_or_later_batches(
    owner, sibling, monkeypatch, caplog
):
    """Should a reading get past the checks and the database refuse the batch's write, the posts it can store are
    written (those of the other organization in the same batch, those of the next batch) and the run goes on,
    the failure logged: it used to end the run with the DataError, every hour."""
    monkeypatch.setattr(services, "METRICS_SYNC_BATCH", 2)
    monkeypatch.setattr(services, "METRIC_COUNT_MAX", 10**30)  # a check that let a bad figure through
    huge = connected_account(owner, "tiktok", "batch.huge")
    fine = connected_account(sibling, "tiktok", "batch.fine")
    odd = schedule_now(owner, huge["id"])
    others = [schedule_now(sibling, fine["id"], caption=f"fine {n}") for n in range(2)]
    run_dispatcher()
    odd_row = ScheduledPost.objects.get(pk=odd["id"])

    def change(videos):
        for video in videos:
            if str(video.get("id")) == odd_row.external_id:
                video["view_count"] = 10**20

    with time_machine.travel(later(hours=2)), intercepted({"/v2/video/query/": tiktok_videos_edited(change)}):
        assert services.posts_sync_metrics() == 2

    # Round-robin over organizations: the first batch holds the odd post and one of the sibling's, the second
    # batch the sibling's other post.
    for other in others:
        assert the_post(sibling, other["id"])["metrics"]["syncedAt"], other["id"]
    assert the_post(owner, odd["id"])["metrics"]["syncedAt"] is None
    assert any(odd["id"] in r.getMessage() for r in caplog.records if r.levelname == "ERROR")


def test_tiktok_video_entries_that_are_not_objects_are_passed_over(owner):
    """One entry of TikTok's `videos` that is no object raised an AttributeError in the client: the account's
    metrics were never synced again, at every run."""
    account = connected_account(owner, "tiktok", "shape.videos")
    scheduled = schedule_now(owner, account["id"])
    run_dispatcher()

    def change(videos):
        videos[:0] = ["7513605806270863771", 7, None, [1, 2]]

    with time_machine.travel(later(hours=2)), intercepted({"/v2/video/query/": tiktok_videos_edited(change)}):
        assert services.posts_sync_metrics() == 1

    assert the_post(owner, scheduled["id"])["metrics"]["views"] is not None


def test_instagram_insights_items_in_unexpected_shapes_are_passed_over(owner):
    """An insights item that is no object, or whose `values` is an object, raised in the client (AttributeError,
    KeyError): the account's metrics stopped for good. Such items are unknown figures; the others are read."""
    account = connected_account(owner, "instagram", "shape.insights")
    scheduled = schedule_now(owner, account["id"], media_type="image")
    run_dispatcher()

    def insights(request, sandbox):
        real = sandbox.handle_request(request)
        real.read()
        body = real.json()
        for item in body["data"]:
            if item.get("name") == "shares":
                item.pop("total_value", None)
                item["values"] = {"value": 3}
        body["data"][:0] = ["views", 12, None, {"name": ["views"], "values": [{"value": 1}]}]
        return httpx.Response(200, json=body)

    with time_machine.travel(later(hours=2)), intercepted({"/insights": insights}):
        assert services.posts_sync_metrics() == 1

    metrics = the_post(owner, scheduled["id"])["metrics"]
    assert metrics["views"] is not None and metrics["syncedAt"], metrics
    assert metrics["shares"] is None, metrics
