"""Ops could not tell whether Layers itself kept up: "Platforms now" says what TikTok and Instagram answered, and
/healthz and /readyz that a process serves and reaches its database and broker, but nothing said that beat had
died or that every worker was stuck: posts silently stopped going out until partners complained. The admin's
index page has a "Layers now" panel, and `GET /ops/status` the same figures as JSON for an uptime checker (200
when all is well, 503 otherwise): is the dispatcher's tick being sent, are posts going out on time, is the
resolver keeping up, are webhooks delivered. Real PostgreSQL; the clock moved with time_machine."""

import json
import re
from datetime import timedelta
from html import unescape

import pytest
import time_machine
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler

from accounts.callgate import CallGate
from accounts.models import Event
from accounts.webhooks import services as webhook_services
from accounts.webhooks import tasks as webhook_tasks
from accounts.webhooks.models import WebhookDelivery
from config.api.fields import datetime_output
from config.celery import app
from scheduling import pipeline_status, services
from scheduling.models import ScheduledPost
from tests.accounts.oauth_helpers import connected_account
from tests.admin_plans import reading_whole_table, statements_on
from tests.factories import make_account
from tests.scheduling.publish_helpers import schedule_now
from tests.scheduling.test_retry_window import run_ticks
from tests.staff import admin_panel_row, signed_in_staff
from tests.webhooks.helpers import create_endpoint, record
from tests.webhooks.test_relay_idle_tick import rows_examined

TOKEN = "ops-status-token-0123456789abcdefghijklmnop"
POSTS, DELIVERIES, EVENTS = "scheduling_scheduledpost", "webhooks_webhookdelivery", "accounts_event"


def beat_sent_the_ticks():
    """What a running beat writes: each periodic task's last_run_at, saved every few minutes (django-celery-beat's
    DatabaseScheduler, as `celery beat` runs it: the entry advanced as when it sends the tick, then synced)."""
    scheduler = DatabaseScheduler(app=app, lazy=False)
    for name in (pipeline_status.DISPATCHER_TASK, pipeline_status.RELAY_TASK):
        scheduler.reserve(scheduler.schedule[name])
    scheduler.sync()


def ops_status(client, token: str | None = TOKEN, **extra):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token is not None else {}
    return client.get("/ops/status", **headers, **extra)


def panel_row(page, key: str) -> tuple[str, dict[str, str]]:
    """The text of the panel's row for `key`, and its links by what they count."""
    return admin_panel_row(page, f"layers-{key}")


def verdict(page, key: str) -> str:
    row = re.search(rf'<tr id="layers-{key}">(.*?)</tr>', page.content.decode(), re.S).group(1)
    return " ".join(
        unescape(re.sub(r"<[^>]+>", " ", re.search(r'class="verdict[^"]*">(.*?)</div>', row, re.S)[1])).split()
    )


def rows_read(sql: str, table: str) -> int:
    """Rows of `table` its scans went through when `sql` ran (EXPLAIN ANALYZE): those they produced and those
    their filters removed, over every loop. A scan walking the table by id and filtering counts every row."""
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql)
        plan = cursor.fetchone()[0]
    plan = json.loads(plan) if isinstance(plan, str) else plan

    def walk(node) -> float:
        read = 0.0
        if node.get("Relation Name") == table:
            kept = float(node["Actual Rows"]) + float(node.get("Rows Removed by Filter", 0))
            read += (kept + float(node.get("Rows Removed by Index Recheck", 0))) * float(node.get("Actual Loops", 1))
        return read + sum(walk(child) for child in node.get("Plans", []))

    return round(walk(plan[0]["Plan"]))


def listed(staff, url: str) -> set[str]:
    page = staff.get(url)
    assert page.status_code == 200
    return {row.pk for row in page.context["cl"].result_list}


@pytest.mark.django_db(transaction=True)
def test_a_post_due_5_minutes_ago_and_never_claimed_reads_behind_until_a_dispatcher_tick_publishes_it(
    owner, client, settings
):
    settings.LAYERS_OPS_STATUS_TOKEN = TOKEN
    account = connected_account(owner, "tiktok", "now.late")
    _, staff = signed_in_staff("scheduling.view_scheduledpost")
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        late = schedule_now(owner, account["id"])["id"]
        beat_sent_the_ticks()
        # Beat goes on sending the dispatcher's tick; no worker takes it (stuck, or gone): nothing claims the post.
        clock.shift(timedelta(minutes=5))
        beat_sent_the_ticks()

        page = staff.get("/admin/")
        answer = ops_status(client)

        assert page.status_code == 200
        assert verdict(page, "due") == "behind: 1 post due and not sent, the oldest 5 minutes late"
        assert verdict(page, "dispatcher").startswith("ok: beat sent the tick"), verdict(page, "dispatcher")
        assert verdict(page, "publishing") == verdict(page, "webhooks") == "ok"
        # The count links to the posts behind it.
        assert listed(staff, panel_row(page, "due")[1]["late"]) == {late}
        assert answer.status_code == 503, answer.content
        body = answer.json()
        assert body["status"] == "behind"
        assert body["checks"]["duePosts"] | {"summary": ""} == {
            "verdict": "behind",
            "summary": "",
            "late": 1,
            "lateCapped": False,
            "oldestLateSeconds": 300,
        }
        assert body["checks"]["dispatcher"]["verdict"] == "ok"
        assert "no-store" in answer["Cache-Control"]

        run_ticks(clock, start + timedelta(minutes=6))  # the workers are back
        assert ScheduledPost.objects.get(pk=late).status == "published"
        page = staff.get("/admin/")
        answer = ops_status(client)

    assert verdict(page, "due") == "ok"
    assert answer.status_code == 200, answer.content
    assert answer.json()["status"] == "ok"
    assert {check["verdict"] for check in answer.json()["checks"].values()} == {"ok"}
    last = panel_row(page, "dispatcher")[0]
    assert "last publishing attempt ended" in last, last


@pytest.mark.django_db(transaction=True)
def test_a_post_late_past_the_stop_threshold_reads_stopped(owner, client, settings, caplog):
    settings.LAYERS_OPS_STATUS_TOKEN = TOKEN
    account = make_account(owner)
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        schedule_now(owner, account.pk)
        clock.shift(pipeline_status.STOPPED_AFTER + timedelta(seconds=1))
        beat_sent_the_ticks()
        rows = {row.key: row for row in pipeline_status.layers_now()}
        answer = ops_status(client)

    assert rows["due"].verdict == "stopped", rows["due"].summary
    assert rows["due"].summary.startswith("stopped: 1 post due and not sent, the oldest 15 minutes late")
    assert answer.status_code == 503 and answer.json()["status"] == "stopped"
    # One warning saying what is late, at each check; not Django's ERROR "Service Unavailable", which says nothing.
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.name in ("scheduling.views", "django.request")]
    assert said == [("WARNING", f"Layers is stopped (503 from /ops/status): duePosts {rows['due'].summary}")], said


@pytest.mark.django_db(transaction=True)
def test_a_publishing_post_past_its_claim_lease_counts_as_the_resolver_behind(owner, client, settings):
    settings.LAYERS_OPS_STATUS_TOKEN = TOKEN
    account = make_account(owner)
    _, staff = signed_in_staff("scheduling.view_scheduledpost")
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        claimed = schedule_now(owner, account.pk)["id"]
        waiting = schedule_now(owner, account.pk, when=start + timedelta(hours=1))["id"]
        # A tick claims the post, and its worker dies before doing anything: the post holds its claim's lease.
        assert services.posts_claim_due() == [claimed]
        clock.shift(services.CLAIM_LEASE + timedelta(minutes=2))
        beat_sent_the_ticks()

        page = staff.get("/admin/")
        answer = ops_status(client)
        text, links = panel_row(page, "publishing")
        concerned = listed(staff, links["late"])

    assert ScheduledPost.objects.get(pk=claimed).status == "publishing"
    assert verdict(page, "publishing") == (
        "behind: 1 post waiting for the resolver (1 past its claim lease), the oldest 2 minutes late"
    ), text
    assert verdict(page, "due") == "ok"  # the other one is not due yet
    assert concerned == {claimed} and waiting not in concerned
    check = answer.json()["checks"]["publishingPosts"]
    assert (answer.status_code, check["verdict"], check["late"], check["pastLease"]) == (503, "behind", 1, 1)
    assert check["oldestLateSeconds"] == 120


@pytest.fixture
def unsent(monkeypatch) -> list[str]:
    """The webhooks queue with no worker taking it: what reaches webhook_deliver.delay is never sent."""
    sent: list[str] = []
    monkeypatch.setattr(webhook_tasks.webhook_deliver, "delay", sent.append)
    return sent


@pytest.mark.django_db(transaction=True)
def test_an_undelivered_webhook_past_its_grace_counts_and_a_receiver_down_by_design_does_not(
    owner, sibling, outsider, client, settings, unsent
):
    settings.LAYERS_OPS_STATUS_TOKEN = TOKEN
    _, staff = signed_in_staff("scheduling.view_scheduledpost", "webhooks.view_webhookdelivery")
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        endpoint = create_endpoint(owner, "https://hooks.example/layers")
        cooling = create_endpoint(sibling, "https://down.example/layers")
        undelivered = WebhookDelivery.objects.get(event=record(owner), endpoint_id=endpoint["id"])
        held = WebhookDelivery.objects.get(event=record(sibling), endpoint_id=cooling["id"])
        # The sibling's receiver stopped answering: its deliveries wait for its cool-off, by design.
        CallGate.objects.create(
            key=webhook_services.endpoint_gate_key(cooling["id"]),
            failures=webhook_services.FAILURES_BEFORE_COOL_OFF,
            down_until=start + timedelta(hours=1),
        )
        # An endpoint disabled since: its deliveries are canceled, not late.
        gone = create_endpoint(outsider, "https://gone.example/layers")
        record(outsider)
        webhook_services.endpoint_disable(endpoint_id=gone["id"], reason="staff")
        clock.shift(timedelta(minutes=2))
        beat_sent_the_ticks()
        fresh = record(owner)  # a delivery due just now is not late

        page = staff.get("/admin/")
        answer = ops_status(client)
        text, links = panel_row(page, "webhooks")
        concerned = listed(staff, links["late"])

    assert verdict(page, "webhooks") == "behind: 1 webhook waiting (1 delivery), the oldest 2 minutes late", text
    assert concerned == {undelivered.pk}
    assert held.pk not in concerned and not WebhookDelivery.objects.filter(event=fresh, pk__in=concerned).exists()
    check = answer.json()["checks"]["webhooks"]
    assert (answer.status_code, check["verdict"], check["late"], check["oldestLateSeconds"]) == (503, "behind", 1, 120)


@pytest.mark.django_db(transaction=True)
def test_an_event_whose_fan_out_never_ran_counts_as_a_late_webhook(owner, client, settings, monkeypatch):
    settings.LAYERS_OPS_STATUS_TOKEN = TOKEN
    create_endpoint(owner, "https://hooks.example/layers")
    # The broker refused the fan-out (or the worker died before it committed): the event waits for the relay.
    monkeypatch.setattr(webhook_tasks.webhook_fan_out, "delay", lambda *args: None)
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        event = record(owner)
        clock.shift(webhook_services.FANOUT_GRACE + timedelta(minutes=3))
        beat_sent_the_ticks()
        rows = {row.key: row for row in pipeline_status.layers_now()}
        answer = ops_status(client)

    assert Event.objects.get(pk=event.pk).fanned_out_at is None
    assert rows["webhooks"].summary == "behind: 1 webhook waiting (1 event not fanned out), the oldest 3 minutes late"
    assert answer.json()["checks"]["webhooks"]["late"] == 1


@pytest.mark.django_db(transaction=True)
def test_beat_silent_or_the_tick_paused_reads_stopped(owner, client, settings):
    settings.LAYERS_OPS_STATUS_TOKEN = TOKEN
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        rows = {row.key: row for row in pipeline_status.layers_now()}
        assert rows["dispatcher"].summary == "stopped: beat has never sent the dispatcher's tick"
        beat_sent_the_ticks()
        assert {row.key: row.verdict for row in pipeline_status.layers_now()}["dispatcher"] == "ok"
        # Beat died: what it last wrote grows old (it writes every 3 minutes while it runs).
        clock.shift(pipeline_status.BEAT_SILENT_AFTER + timedelta(seconds=1))
        rows = {row.key: row for row in pipeline_status.layers_now()}
        answer = ops_status(client)
        assert rows["dispatcher"].verdict == "stopped"
        assert rows["dispatcher"].summary.startswith("stopped: beat has not sent the dispatcher's tick since ")
        assert rows["webhooks"].verdict == "stopped"  # the relay's tick is beat's too
        assert answer.status_code == 503 and answer.json()["status"] == "stopped"
        # Staff paused the tick in the admin (Periodic tasks).
        beat_sent_the_ticks()
        PeriodicTask.objects.filter(name=pipeline_status.DISPATCHER_TASK).update(enabled=False)
        rows = {row.key: row for row in pipeline_status.layers_now()}
    assert rows["dispatcher"].summary == "stopped: the dispatcher's tick is paused in the admin (Periodic tasks)"
    assert rows["webhooks"].verdict == "ok"


def test_beat_saves_what_it_sent_as_often_as_the_panel_expects():
    # The panel reads beat's last_run_at, which django-celery-beat writes every sync_every seconds only.
    assert DatabaseScheduler.sync_every == pipeline_status.BEAT_SYNC_EVERY.total_seconds()
    assert pipeline_status.BEAT_SILENT_AFTER > 2 * pipeline_status.BEAT_SYNC_EVERY


@pytest.mark.parametrize(
    "token, expected",
    [(None, 401), ("", 401), ("wrong-token-0123456789abcdefghijklmnop", 401), (TOKEN[:-1], 401), (TOKEN + "x", 401)],
)
def test_a_missing_or_wrong_token_is_401(db, client, settings, token, expected):
    settings.LAYERS_OPS_STATUS_TOKEN = TOKEN
    answer = ops_status(client, token)
    assert answer.status_code == expected
    assert answer["WWW-Authenticate"] == "Bearer"
    assert "no-store" in answer["Cache-Control"]
    assert "checks" not in answer.content.decode()


def test_other_schemes_and_methods_are_refused(db, client, settings):
    settings.LAYERS_OPS_STATUS_TOKEN = TOKEN
    assert client.get("/ops/status", HTTP_AUTHORIZATION=f"Basic {TOKEN}").status_code == 401
    assert client.get("/ops/status", HTTP_AUTHORIZATION=TOKEN).status_code == 401
    assert client.get(f"/ops/status?token={TOKEN}").status_code == 401
    refused = client.post("/ops/status", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert refused.status_code == 405 and refused["Allow"] == "GET, HEAD"
    assert client.head("/ops/status", HTTP_AUTHORIZATION=f"bearer {TOKEN}").status_code in (200, 503)


def test_with_no_token_configured_the_endpoint_does_not_exist(db, client, settings):
    settings.LAYERS_OPS_STATUS_TOKEN = ""
    browser = Client(enforce_csrf_checks=True)  # a POST is checked for CSRF before any view runs
    unknown = client.get("/ops/nothing-here")
    for answer in (ops_status(client), ops_status(client, None), browser.post("/ops/status")):
        assert answer.status_code == 404
        assert answer.content == unknown.content and answer.get("Cache-Control") == unknown.get("Cache-Control")
    settings.LAYERS_OPS_STATUS_TOKEN = TOKEN
    assert browser.post("/ops/status").status_code == 405


def test_staff_who_may_view_scheduled_posts_see_the_panel_and_others_do_not(owner):
    _, viewer = signed_in_staff("scheduling.view_scheduledpost", username="viewer")
    _, other = signed_in_staff("accounts.view_organization", username="other")

    page = viewer.get("/admin/")
    assert 'id="layers-now"' in page.content.decode()
    assert [
        key for key in ("dispatcher", "due", "publishing", "webhooks") if f'id="layers-{key}"' in page.content.decode()
    ]
    # The webhooks' count links to the deliveries only for staff who may view them.
    assert "late" not in panel_row(page, "webhooks")[1]
    page = other.get("/admin/")
    assert page.status_code == 200 and "Organizations" in page.content.decode()
    assert 'id="layers-now"' not in page.content.decode()


@pytest.mark.django_db(transaction=True)
def test_the_status_costs_the_same_few_statements_however_much_is_late_each_read_through_an_index(
    owner, sibling, client, settings, unsent, monkeypatch, django_assert_num_queries
):
    settings.LAYERS_OPS_STATUS_TOKEN = TOKEN
    monkeypatch.setattr(webhook_tasks.webhook_fan_out, "delay", lambda *args: None)
    monkeypatch.setattr(pipeline_status, "COUNT_CAP", 500)
    account = make_account(owner)
    endpoint = create_endpoint(owner, "https://hooks.example/layers")
    create_endpoint(sibling, "https://hooks.example/sibling")
    now = timezone.now()
    with time_machine.travel(now, tick=False):  # the ages below are exact
        beat_sent_the_ticks()

        def status_statements():
            with CaptureQueriesContext(connection) as captured:
                answer = ops_status(client)
            return answer, captured

        quiet, few = status_statements()
        assert len(few.captured_queries) == 9  # README: "Nine small statements in all"
        assert quiet.status_code == 200, quiet.content

        container = services.container_create(
            project=owner.project, media_type="video", media_urls=["https://cdn.acme.test/c.mp4"], caption=""
        )

        def posts(n, **fields):
            base = {"organization": owner.org, "project": owner.project, "container": container, "mode": "publish"}
            base["social_account"] = account
            ScheduledPost.objects.bulk_create([ScheduledPost(**base, **fields) for _ in range(n)], batch_size=5000)

        hour_ago = now - timedelta(hours=1)
        posts(800, status="queued", scheduled_for=hour_ago, due_at=hour_ago)  # late: more than the cap
        posts(20_000, status="queued", scheduled_for=now + timedelta(days=1), due_at=now + timedelta(days=1))
        posts(20_000, status="published", scheduled_for=hour_ago, due_at=hour_ago, published_at=hour_ago)
        posts(
            300,
            status="publishing",
            scheduled_for=hour_ago,
            due_at=hour_ago,
            claimed_until=now - timedelta(minutes=10),
            next_check_at=now - timedelta(minutes=10),
        )
        posts(
            3000, status="publishing", scheduled_for=hour_ago, due_at=hour_ago, next_check_at=now + timedelta(minutes=1)
        )
        events = Event.objects.bulk_create(
            [Event(organization=owner.org, type="social_account.connected", created_at=hour_ago) for _ in range(200)]
        )
        WebhookDelivery.objects.bulk_create(
            [
                WebhookDelivery(endpoint_id=endpoint["id"], event=e, body="{}", status=status, next_attempt_at=hour_ago)
                for e in events
                for status in ("pending",)
            ]
        )
        done = Event.objects.bulk_create(
            [
                Event(
                    organization=owner.org, type="social_account.connected", created_at=hour_ago, fanned_out_at=hour_ago
                )
                for _ in range(20_000)
            ],
            batch_size=5000,
        )
        WebhookDelivery.objects.bulk_create(
            [WebhookDelivery(endpoint_id=endpoint["id"], event=e, body="{}", status="delivered") for e in done],
            batch_size=5000,
        )
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {POSTS}; ANALYZE {DELIVERIES}; ANALYZE {EVENTS}")

        with django_assert_num_queries(len(few.captured_queries)):
            busy = ops_status(client)
        _, many = status_statements()

        checks = busy.json()["checks"]
        assert busy.status_code == 503
        assert (checks["duePosts"]["late"], checks["duePosts"]["lateCapped"]) == (500, True)
        assert checks["duePosts"]["oldestLateSeconds"] == 3600
        assert (
            checks["duePosts"]["summary"] == "stopped: 500 or more posts due and not sent, the oldest 60 minutes late"
        )
        assert (checks["publishingPosts"]["late"], checks["publishingPosts"]["pastLease"]) == (300, 300)
        assert checks["webhooks"]["late"] == 400  # 200 events not fanned out, 200 deliveries
        for table in (POSTS, DELIVERIES, EVENTS):
            statements = statements_on(many, table)
            assert statements and reading_whole_table(statements, table) == [], table
            # What is late, up to the cap: not the 20,000 rows of each table that are not.
            assert [rows_examined(sql)[table] <= 501 for sql in statements] == [True] * len(statements), table

        # The posts behind each count, most late first: their index's entries, not the table walked by id.
        _, staff = signed_in_staff("scheduling.view_scheduledpost")
        page = staff.get("/admin/")
        for key in ("due", "publishing"):
            with CaptureQueriesContext(connection) as listing:
                assert len(listed(staff, panel_row(page, key)[1]["late"])) == 100  # a page
            examined = {sql[:60]: rows_read(sql, POSTS) for sql in statements_on(listing, POSTS)}
            assert examined and max(examined.values()) <= 1000, (key, examined)


@pytest.mark.django_db
def test_the_last_attempt_is_a_publishing_attempt_not_a_row_of_a_post_given_back(owner):
    # A worker whose clock is off gives its posts back at every tick (a row each, no number): read as the
    # last publishing attempt, the dispatcher line said "0 seconds ago" while nothing was published.
    from scheduling.models import ScheduledPostAttempt

    account = connected_account(owner, "tiktok", "now.given.back")
    post = ScheduledPost.objects.get(pk=schedule_now(owner, account["id"])["id"])
    attempted = timezone.now() - timedelta(minutes=10)
    ScheduledPostAttempt.objects.create(
        post=post, number=1, started_at=attempted, finished_at=attempted, outcome="published", platform="tiktok"
    )
    ScheduledPostAttempt.objects.create(
        post=post, number=None, started_at=post.due_at, finished_at=timezone.now(), outcome="requeued",
        message="Given back before any platform call, for a worker whose clock is right: …",
    )  # fmt: skip

    [dispatcher] = [line for line in pipeline_status.layers_now() if line.key == "dispatcher"]

    assert dispatcher.figures["lastAttemptEndedAt"] == datetime_output(attempted), dispatcher.figures
