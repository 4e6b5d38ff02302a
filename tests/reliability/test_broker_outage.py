"""The broker stopped and restarted while posts are due: a real Redis server (no persistence, so killing it
loses every queued message), a real Celery worker process (threads pool) and the periodic tick sent to it
as beat sends it. The rows are the truth: ticks sent after the restart find the posts that are still due,
and the resolver finds, once their claim lease ran out, the posts whose messages died with the broker.
Every post ends published exactly once."""

import sys
import threading
from datetime import timedelta

import pytest
import time_machine
from celery import Celery
from django.utils import timezone

from scheduling.models import ScheduledPost
from scheduling.tasks import dispatch_due_posts
from tests.accounts.oauth_helpers import connected_account
from tests.reliability.outcomes import tally
from tests.reliability.processes import RedisServer, django_env, start, stop, wait_for
from tests.scheduling.publish_helpers import schedule_now

pytestmark = pytest.mark.django_db(transaction=True)

WORKER = "layers-broker-worker"
FINAL = (ScheduledPost.Status.PUBLISHED, ScheduledPost.Status.FAILED)


class Beat:
    """Sends the dispatch tick to the broker every `interval` seconds, as celery beat does; a tick that
    cannot be sent (broker down) is lost, as it would be."""

    def __init__(self, broker_url: str, interval: float = 0.3):
        self.app = Celery("reliability-beat", broker=broker_url, set_as_current=False)
        self.interval = interval
        self.sent = self.lost = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                with self.app.connection_for_write() as conn:
                    self.app.send_task("scheduling.tasks.dispatch_due_posts", connection=conn, retry=False)
                self.sent += 1
            except Exception:  # noqa: BLE001 - the broker is down: this tick is lost
                self.lost += 1
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)


def published(post_ids) -> int:
    return ScheduledPost.objects.filter(pk__in=post_ids, status=ScheduledPost.Status.PUBLISHED).count()


def test_every_post_is_published_exactly_once_across_a_broker_crash_and_restart(
    owner, live, settings, figures, tmp_path
):
    # given two TikTok and two Instagram accounts, 16 posts due now, and a platform that takes its time
    # (so that the broker dies with publish messages still queued)
    settings.LAYERS_SANDBOX_LATENCY_MS = 120
    accounts = [connected_account(owner, "tiktok", f"broker.tt{i}") for i in range(2)]
    accounts += [connected_account(owner, "instagram", f"broker.ig{i}") for i in range(2)]
    first = [
        schedule_now(owner, a["id"], media_type="video", caption=f"broker {a['handle']} #{i}")["id"]
        for i in range(4)
        for a in accounts
    ]
    redis = RedisServer(tmp_path)
    redis.start()
    env = django_env(
        application_name=WORKER,
        settings_module="config.settings.dev",  # a real broker, no eager tasks
        CELERY_BROKER_URL=redis.url,
        LAYERS_PUBLIC_URL=live,
        LAYERS_PLATFORM_TRANSPORT="http",
    )
    worker_args = [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "threads", "--concurrency"]
    worker_args += ["4", "-l", "info", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    worker = start(worker_args, env=env, log=tmp_path / "worker.log")
    second: list[str] = []
    try:
        with Beat(redis.url) as beat:
            # when the broker is killed while the worker is publishing them
            wait_for(lambda: published(first) >= 3, timeout=90, what="the worker publishing")
            queued_when_killed = redis.queue_length()
            redis.kill()
            # and more posts fall due while it is down (scheduling needs no broker)
            second = [
                schedule_now(owner, a["id"], media_type="video", caption=f"broker {a['handle']} late")["id"]
                for a in accounts
            ]
            wait_for(
                lambda: "Connection to broker lost" in (tmp_path / "worker.log").read_text(),
                timeout=30,
                what="the worker noticing the outage",
            )
            # and it comes back, empty
            redis.start()
            # then ticks sent after the restart find every post still due, and the worker publishes them
            wait_for(lambda: published(second) == len(second), timeout=90, what="the late posts published")
            wait_for(
                lambda: (
                    ScheduledPost.objects.filter(pk__in=first + second, status=ScheduledPost.Status.QUEUED).count() == 0
                ),
                timeout=60,
                what="nothing left queued",
            )
        worker_alive = worker.poll() is None
    finally:
        stop(worker)
        redis.kill()

    # the posts whose publish messages died with the broker are still claimed ("publishing", never sent)...
    post_ids = first + second
    orphaned = ScheduledPost.objects.filter(
        pk__in=post_ids, status=ScheduledPost.Status.PUBLISHING, publish_attempted_at__isnull=True, publish_id=""
    ).count()
    published_by_worker = published(post_ids)
    # ...until the resolver finds them once their claim lease has run out, and they are published once
    settings.LAYERS_SANDBOX_LATENCY_MS = 0
    with time_machine.travel(timezone.now() + timedelta(minutes=6)):
        for _ in range(4):
            dispatch_due_posts()

    out = tally(post_ids)
    figures(
        "broker_restart",
        cases=out.posts,
        faults_injected=1,
        losses=out.losses,
        **out.as_figures(),
        messagesQueuedWhenKilled=queued_when_killed,
        ticksLostDuringTheOutage=beat.lost,
        ticksSent=beat.sent,
        publishedByTheWorker=published_by_worker,
        foundAgainByTheResolver=orphaned,
    )
    assert worker_alive, (tmp_path / "worker.log").read_text()[-3000:]
    assert queued_when_killed > 0  # the outage destroyed real work in flight
    assert out.published_once == len(post_ids), out
    assert out.losses == 0, out
