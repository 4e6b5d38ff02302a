"""Ops noticed a TikTok or Instagram outage only from posts failing one by one, and since posts are retried for
an hour (LAYERS_PUBLISH_RETRY_WINDOW) none fails for that hour: nothing said the platform was down. The admin's
index page (and the posts list) has a "Platforms now" panel: per platform, and for the managed providers, the
calls refused as unavailable or rate-limited and the posts published in the last 15 minutes, the last publish and
refusal, the latest refusal's words and a verdict, read from the publishing attempts already written."""

import re
from datetime import UTC, timedelta
from html import unescape

import httpx
import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import SocialAccount
from scheduling import platform_status, services
from scheduling.models import ManagedProvider, ScheduledPost, ScheduledPostAttempt
from tests.accounts.oauth_helpers import connected_account
from tests.admin_plans import reading_whole_table, statements_on
from tests.factories import make_account
from tests.platform_helpers import intercepted, platform_down
from tests.scheduling.publish_helpers import later, run_dispatcher, schedule_now
from tests.scheduling.test_requeue_attempts import lose_runs
from tests.scheduling.test_retry_window import TICK, run_ticks
from tests.staff import admin_panel_row, signed_in_staff
from tests.webhooks.test_relay_idle_tick import rows_examined

ATTEMPTS, POSTS = "scheduling_scheduledpostattempt", "scheduling_scheduledpost"


def shown(when) -> str:
    """A time as the admin shows it."""
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def panel_row(page, key: str) -> tuple[str, dict[str, str]]:
    """The text of the panel's row for `key` (tiktok, instagram, managed), and its links by what they count."""
    return admin_panel_row(page, f"platform-{key}")


def cell(page, key: str, name: str) -> str:
    html = page.content.decode()
    row = re.search(rf'<tr id="platform-{key}">(.*?)</tr>', html, re.S).group(1)
    match = re.search(rf'class="{name}( [a-z]+)?">(.*?)</(a|span|div)>', row, re.S)
    assert match, f"no {name} in the {key} row"
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", match.group(2))).split())


def listed(staff, url: str) -> set[str]:
    page = staff.get(url)
    assert page.status_code == 200
    return {row.pk for row in page.context["cl"].result_list}


@pytest.mark.django_db(transaction=True)
def test_a_tiktok_outage_shows_tiktok_down_and_instagram_ok_and_ok_again_once_it_is_over(owner):
    tiktok = connected_account(owner, "tiktok", "status.tiktok")
    instagram = connected_account(owner, "instagram", "status.instagram")
    _, staff = signed_in_staff("scheduling.view_scheduledpost")
    start = timezone.now()
    calls = []
    with time_machine.travel(start, tick=False) as clock:
        before = schedule_now(owner, tiktok["id"])
        run_ticks(clock, start + TICK)
        last_ok = ScheduledPost.objects.get(pk=before["id"]).published_at
        assert last_ok is not None
        with intercepted(platform_down("tiktok", calls, until=start + timedelta(minutes=13))):
            run_ticks(clock, start + timedelta(minutes=1))
            stuck = {schedule_now(owner, tiktok["id"])["id"] for _ in range(3)}
            fine = schedule_now(owner, instagram["id"], media_type="image")["id"]
            run_ticks(clock, start + timedelta(minutes=12))

            page = staff.get("/admin/")
            assert page.status_code == 200
            text, links = panel_row(page, "tiktok")
            # Every refused call of the outage is within the last 15 minutes; no post has failed yet.
            assert len(calls) > 3 and not ScheduledPost.objects.filter(status="failed").exists()
            summary = f"down: {len(calls)} calls refused, none published since {shown(last_ok)}"
            assert cell(page, "tiktok", "verdict") == summary, text
            assert cell(page, "tiktok", "unavailable") == str(len(calls)), text
            assert cell(page, "tiktok", "published") == "1", text  # the post before the outage
            assert "tiktok internal_error: down" in cell(page, "tiktok", "message"), text
            # Each count links to the posts behind it: the TikTok posts refused as unavailable just now.
            assert listed(staff, links["unavailable"]) == stuck
            ig_text, _ = panel_row(page, "instagram")
            assert cell(page, "instagram", "verdict") == "ok", ig_text
            assert cell(page, "instagram", "published") == "1", ig_text
            assert cell(page, "instagram", "unavailable") == "0", ig_text
            assert cell(page, "managed", "verdict") == "ok"

            # The posts list shows the same panel.
            posts = staff.get("/admin/scheduling/scheduledpost/")
            assert cell(posts, "tiktok", "verdict") == summary

            run_ticks(clock, start + timedelta(minutes=20))
            page = staff.get("/admin/")
            published_now = listed(staff, panel_row(page, "tiktok")[1]["published"])

    assert set(ScheduledPost.objects.filter(status="published").values_list("pk", flat=True)) == {
        before["id"],
        fine,
        *stuck,
    }
    text, _ = panel_row(page, "tiktok")
    assert cell(page, "tiktok", "verdict") == "ok", text
    assert cell(page, "tiktok", "published") == "3", text
    last_publish = max(ScheduledPost.objects.filter(pk__in=stuck).values_list("published_at", flat=True))
    assert cell(page, "tiktok", "last-published") == shown(last_publish), text
    assert published_now == stuck


@pytest.mark.django_db(transaction=True)
def test_the_refusal_shown_never_carries_the_token_the_platform_echoed(owner):
    tiktok = connected_account(owner, "tiktok", "status.echo")
    token = SocialAccount.objects.get(pk=tiktok["id"]).access_token
    _, staff = signed_in_staff("scheduling.view_scheduledpost")

    def echoing(request, sandbox):
        said = f"down for {request.headers['Authorization'].removeprefix('Bearer ')}"
        return httpx.Response(500, json={"data": {}, "error": {"code": "internal_error", "message": said}})

    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        schedule_now(owner, tiktok["id"])
        with intercepted({"/sandbox/tiktok/v2/": echoing}):
            run_ticks(clock, start + timedelta(minutes=2))
        page = staff.get("/admin/")

    assert token and token not in page.content.decode()
    assert cell(page, "tiktok", "message").startswith("tiktok internal_error: down for [redacted]")


def test_staff_who_may_not_view_scheduled_posts_do_not_see_the_panel(owner):
    _, viewer = signed_in_staff("scheduling.view_scheduledpost", username="viewer")
    _, other = signed_in_staff("accounts.view_organization", username="other")

    assert 'id="platforms-now"' in viewer.get("/admin/").content.decode()
    page = other.get("/admin/")
    assert page.status_code == 200 and "Organizations" in page.content.decode()
    assert 'id="platforms-now"' not in page.content.decode()


def _attempts(
    post_id: str,
    *,
    finished_at,
    outcome: str,
    code: str = "",
    n: int = 1,
    message: str = "",
    every=timedelta(0),
):
    """`n` attempts of the post as the publisher writes them (services._attempt), the i-th ended i × `every`
    before `finished_at`."""
    post = ScheduledPost.objects.select_related("social_account").get(pk=post_id)
    rows = []
    for i in range(n):
        attempt = services._attempt(post, outcome, error_code=code, message=message)
        attempt.number, attempt.started_at = 1, finished_at - i * every
        attempt.finished_at = attempt.started_at
        rows.append(attempt)
    ScheduledPostAttempt.objects.bulk_create(rows, batch_size=5000)


def test_the_panel_costs_the_same_few_statements_however_many_attempts_each_found_through_an_index(owner):
    now = timezone.now()
    ManagedProvider.objects.create(project=owner.project, name="Boost", endpoint_url="https://provider.example/in")
    tiktok = schedule_now(owner, make_account(owner, platform="tiktok").pk, when=now + timedelta(hours=1))["id"]
    insta = schedule_now(owner, make_account(owner, platform="instagram").pk, when=now + timedelta(hours=1))["id"]
    managed = schedule_now(owner, make_account(owner).pk, mode="managed", when=now + timedelta(hours=1))["id"]
    _, staff = signed_in_staff("scheduling.view_scheduledpost")

    def visit():
        with CaptureQueriesContext(connection) as captured:
            page = staff.get("/admin/")
        assert page.status_code == 200
        return page, captured

    _attempts(tiktok, finished_at=now - timedelta(minutes=1), outcome="retry", code="RATE_LIMITED")
    _, few = visit()

    recent, old = now - timedelta(minutes=5), now - timedelta(minutes=40)
    _attempts(tiktok, finished_at=recent, outcome="retry", code="PLATFORM_UNAVAILABLE", n=700)
    _attempts(tiktok, finished_at=old, outcome="retry", code="PLATFORM_UNAVAILABLE", n=2000)
    _attempts(tiktok, finished_at=recent, outcome="failed", code="MEDIA_INVALID", n=300)  # refused content
    _attempts(tiktok, finished_at=recent, outcome="requeued", n=300)  # never reached the platform
    _attempts(insta, finished_at=recent, outcome="published", n=40)
    _attempts(insta, finished_at=old, outcome="published", n=2000)
    _attempts(insta, finished_at=now - timedelta(minutes=2), outcome="failed", code="RATE_LIMITED", n=5)
    _attempts(managed, finished_at=recent, outcome="retry", code="PLATFORM_UNAVAILABLE", n=30, message="answered 503")
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {ATTEMPTS}")
    page, many = visit()

    assert len(many) == len(few), [q["sql"] for q in many]
    assert cell(page, "tiktok", "unavailable") == "700"
    assert cell(page, "tiktok", "rate_limited") == "1"
    assert cell(page, "tiktok", "verdict") == "throttled: 701 calls refused, none published in the last 24 hours"
    assert cell(page, "instagram", "published") == "40"
    assert cell(page, "instagram", "rate_limited") == "5"
    assert cell(page, "instagram", "verdict") == "ok"  # a few refusals among many publishes
    assert cell(page, "managed", "unavailable") == "30"
    assert cell(page, "managed", "verdict").startswith("down: 30 calls refused")
    assert cell(page, "managed", "message") == "answered 503"
    # The panel's own statements (the page also shows "Layers now", which reads the late posts: test_layers_now.py).
    with CaptureQueriesContext(connection) as panel:
        platform_status.platforms_now()
    statements = statements_on(panel, ATTEMPTS)
    assert statements and reading_whole_table(statements, ATTEMPTS) == []
    assert statements_on(panel, POSTS) == []  # an attempt says whose answer it was: no post read to tell
    # The posts behind a count are found the same way.
    with CaptureQueriesContext(connection) as behind:
        assert listed(staff, panel_row(page, "tiktok")[1]["unavailable"]) == {tiktok}
    assert reading_whole_table(statements_on(behind, ATTEMPTS), ATTEMPTS) == []


def test_a_platform_with_no_publish_today_costs_a_look_not_a_walk_through_every_other_platforms_attempts(owner):
    """The last publish of a platform that had none today (TikTok during its outage, when ops look; the managed
    providers most days) was found by walking back through every publish of the day, each joined to its post to
    tell its platform: 200,000 Instagram publishes made each admin page 484 ms slower. Each platform's last
    publish and refusal is one look now, and the window's counts read that window's attempts and nothing else.
    Rows read are asserted, never time."""
    now = timezone.now()
    tiktok = schedule_now(owner, make_account(owner, platform="tiktok").pk, when=now + timedelta(hours=1))["id"]
    insta = schedule_now(owner, make_account(owner, platform="instagram").pk, when=now + timedelta(hours=1))["id"]
    # A day of Instagram publishes, one every 4 s (22 hours); TikTok has refused 3 calls and published nothing.
    _attempts(insta, finished_at=now, outcome="published", n=20_000, every=timedelta(seconds=4))
    _attempts(tiktok, finished_at=now - timedelta(minutes=3), outcome="retry", code="PLATFORM_UNAVAILABLE", n=3)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {ATTEMPTS}")

    with CaptureQueriesContext(connection) as captured:
        rows = {row.key: row for row in platform_status.platforms_now(now=now)}

    in_window = 15 * 60 // 4 + 1  # the Instagram publishes of the last 15 minutes
    assert (rows["instagram"].published, rows["instagram"].last_published_at) == (in_window, now)
    assert (rows["tiktok"].unavailable, rows["tiktok"].last_published_at) == (3, None)
    assert rows["tiktok"].summary == "down: 3 calls refused, none published in the last 24 hours"
    counts, latest = statements_on(captured, ATTEMPTS)
    # The last publish and refusal of each platform: the one row each has, not the 20,000 of another platform.
    assert rows_examined(latest) == {ATTEMPTS: 2}
    # The counts: the window's attempts, their platform read from themselves, not from their posts and accounts.
    assert rows_examined(counts) == {ATTEMPTS: in_window + 3}


def test_a_worker_that_died_is_not_counted_as_the_platform_refusing(owner):
    """A post whose worker was killed in its platform call (a deploy), or whose runs kept stopping before the
    platform, fails PLATFORM_UNAVAILABLE, as a post the platform refused for its whole retry window does. The
    panel counted those as TikTok refusing calls: a deploy showed as a TikTok outage. The platform said nothing
    of them."""
    account = connected_account(owner, "tiktok", "panel.lost")
    _, staff = signed_in_staff("scheduling.view_scheduledpost")
    gave_up = schedule_now(owner, account["id"])["id"]
    died = schedule_now(owner, account["id"], when=later(minutes=31))["id"]
    # Runs of `gave_up` stop before the platform call until the resolver gives up (minutes 0 to 30).
    minutes = lose_runs(gave_up, services.MAX_LOST_RUNS - 1, minutes=0)
    with time_machine.travel(later(minutes=minutes)):
        assert services.posts_claim_due() == [gave_up]
    with time_machine.travel(later(minutes=minutes + 6)):
        [resolving] = services.posts_claim_for_resolution()
        assert services.post_resolve(post_id=resolving) == "failed"
    # `died`'s run marks its point of no return and is killed in its call to TikTok (minute 31).
    with time_machine.travel(later(minutes=minutes + 7)):
        assert services.posts_claim_due() == [died]
        run = services._publishing_posts([died])[died]
        services._unless_account_gone(run, lambda rows: rows.update(publish_attempted_at=timezone.now()))
    with time_machine.travel(later(minutes=minutes + 13)):
        [resolving] = services.posts_claim_for_resolution()
        assert services.post_resolve(post_id=resolving) == "failed"

    with time_machine.travel(later(minutes=minutes + 14)):
        page = staff.get("/admin/")
        text, links = panel_row(page, "tiktok")
        behind_unavailable = listed(staff, links["unavailable"])
    failed = ScheduledPost.objects.filter(pk__in=(gave_up, died), status="failed", error_code="PLATFORM_UNAVAILABLE")
    assert failed.count() == 2
    assert cell(page, "tiktok", "unavailable") == "0", text
    assert cell(page, "tiktok", "verdict") == "ok", text
    assert behind_unavailable == set()


def test_a_post_layers_gave_up_waiting_for_is_not_counted_as_the_platform_refusing(owner, settings):
    """A post TikTok was still processing a day later fails PLATFORM_UNAVAILABLE: Layers stopped waiting, TikTok
    refused nothing (it answered "processing" every time)."""
    settings.LAYERS_SANDBOX_PUBLISH_DELAY_SECONDS = 3 * 24 * 3600  # TikTok never gets there
    account = connected_account(owner, "tiktok", "panel.stuck")
    _, staff = signed_in_staff("scheduling.view_scheduledpost")
    stuck = schedule_now(owner, account["id"])["id"]
    run_dispatcher()
    assert ScheduledPost.objects.get(pk=stuck).status == "publishing"

    with time_machine.travel(later(days=1, minutes=5)):
        run_dispatcher()
        page = staff.get("/admin/")
    failed = ScheduledPost.objects.get(pk=stuck)
    assert (failed.status, failed.error_code) == ("failed", "PLATFORM_UNAVAILABLE"), failed.error_message
    assert "within 24 hours" in failed.error_message
    text, _ = panel_row(page, "tiktok")
    assert cell(page, "tiktok", "unavailable") == "0", text
    assert cell(page, "tiktok", "verdict") == "ok", text


def test_a_token_refused_while_layers_renews_it_is_not_counted_as_the_platform_down(owner, monkeypatch):
    """TikTok refused a token Layers is renewing (its refresh underway): the post waits for the new token as
    PLATFORM_UNAVAILABLE, but TikTok answered, and was not down. The panel read it as an outage."""
    from accounts.platforms.base import TokenInvalid

    account = connected_account(owner, "tiktok", "panel.renewing")
    scheduled = schedule_now(owner, account["id"])

    def refused(*args, **kwargs):
        raise TokenInvalid("tiktok access_token_invalid: m", code="access_token_invalid", status=401)

    monkeypatch.setattr(services, "_platform_publish", refused)
    monkeypatch.setattr(services, "social_account_token_rejected", lambda **kwargs: False)  # being renewed
    run_dispatcher()

    assert ScheduledPost.objects.get(pk=scheduled["id"]).error_code == "PLATFORM_UNAVAILABLE"  # waits to retry
    tiktok = next(row for row in platform_status.platforms_now() if row.key == "tiktok")
    assert (tiktok.unavailable, tiktok.verdict) == (0, "ok")
