"""At most once on the platform, with real killed processes: a publisher process is SIGKILLed while the
platform (the sandbox, served over real HTTP by the live test server) is handling its call, then the
resolver settles the post. Never a second post; a post whose call never happened is published once, and
so is a post whose Instagram container was being made ahead of its time when the process died."""

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pytest
import time_machine
from django.conf import settings as django_settings
from django.db import connection
from django.test import Client
from django.utils import timezone

from scheduling.models import ScheduledPost
from scheduling.tasks import dispatch_due_posts
from tests.accounts.oauth_helpers import connected_account
from tests.e2e.browser import point_platforms_at
from tests.scheduling.publish_helpers import sandbox_posts, schedule_now

pytestmark = pytest.mark.django_db(transaction=True)


def stall(platform: str, path: str, seconds: float = 15):
    response = Client().post(
        f"/sandbox/{platform}/_control/stall", {"path": path, "seconds": seconds}, content_type="application/json"
    )
    assert response.status_code == 201, response.content


def start_publisher(live_url: str) -> subprocess.Popen:
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "LAYERS_PUBLIC_URL": live_url,
        "LAYERS_PLATFORM_TRANSPORT": "http",
    }
    return subprocess.Popen(
        [sys.executable, "manage.py", "dispatch_posts", "--once"],
        cwd=django_settings.BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_for(condition, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def kill_when(proc: subprocess.Popen, condition) -> None:
    try:
        wait_for(lambda: condition() or proc.poll() is not None)
        assert proc.poll() is None, proc.communicate()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


def resolve_after_lease():
    with time_machine.travel(timezone.now() + timedelta(minutes=6)):
        for _ in range(3):
            dispatch_due_posts()


@pytest.fixture
def live(live_server, settings):
    point_platforms_at(settings, live_server.url)
    return live_server.url


def test_worker_killed_after_tiktok_accepted_the_post_never_posts_twice(owner, live):
    account = connected_account(owner, "tiktok", "crash.after")
    scheduled = schedule_now(owner, account["id"])
    stall("tiktok", "/post/publish/video/init/")

    proc = start_publisher(live)
    kill_when(proc, lambda: len(sandbox_posts("tiktok", "crash.after")) == 1)

    row = ScheduledPost.objects.get(pk=scheduled["id"])
    assert row.status == "publishing" and row.publish_attempted_at and not row.publish_id
    resolve_after_lease()

    assert len(sandbox_posts("tiktok", "crash.after")) == 1
    row.refresh_from_db()
    assert row.status == "failed" and row.error_code == "PLATFORM_UNAVAILABLE"  # outcome unknown, never re-sent


def test_worker_killed_after_instagram_media_publish_is_resolved_as_published(owner, live):
    account = connected_account(owner, "instagram", "crash.ig")
    scheduled = schedule_now(owner, account["id"], caption="crash-test caption")
    stall("instagram", "/media_publish")

    proc = start_publisher(live)
    kill_when(proc, lambda: len(sandbox_posts("instagram", "crash.ig")) == 1)

    assert ScheduledPost.objects.get(pk=scheduled["id"]).status == "publishing"
    resolve_after_lease()

    posts = sandbox_posts("instagram", "crash.ig")
    assert len(posts) == 1
    row = ScheduledPost.objects.get(pk=scheduled["id"])
    assert row.status == "published" and row.external_id == posts[0].external_id


def test_worker_killed_before_the_platform_call_leads_to_exactly_one_post(owner, live):
    account = connected_account(owner, "tiktok", "crash.before")
    scheduled = schedule_now(owner, account["id"])
    stall("tiktok", "/post/publish/creator_info/query/")

    proc = start_publisher(live)
    kill_when(proc, lambda: ScheduledPost.objects.filter(pk=scheduled["id"], status="publishing").exists())
    assert sandbox_posts("tiktok", "crash.before") == []
    assert ScheduledPost.objects.get(pk=scheduled["id"]).publish_attempted_at is None

    resolve_after_lease()

    assert len(sandbox_posts("tiktok", "crash.before")) == 1
    assert ScheduledPost.objects.get(pk=scheduled["id"]).status == "published"


def test_worker_killed_while_preparing_an_instagram_post_leaves_it_to_be_published_once_at_its_time(owner, live):
    from accounts.platforms.sandbox.models import Container

    account = connected_account(owner, "instagram", "crash.prep")
    scheduled = schedule_now(owner, account["id"], when=timezone.now() + timedelta(minutes=5))
    stall("instagram", "/media")  # the container is made; the answer with its id never arrives

    proc = start_publisher(live)  # nothing is due: its tick prepares the post
    kill_when(proc, lambda: Container.objects.filter(username="crash.prep").exists())

    row = ScheduledPost.objects.get(pk=scheduled["id"])
    assert row.status == "queued" and row.prepare_claimed_at and not row.prepared_publish_id
    with time_machine.travel(timezone.now() + timedelta(minutes=5, seconds=1)):
        dispatch_due_posts()

    row.refresh_from_db()
    assert row.status == "published"
    assert len(sandbox_posts("instagram", "crash.prep")) == 1
    assert Container.objects.filter(username="crash.prep").count() == 2  # the orphan is never published
