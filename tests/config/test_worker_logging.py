"""Celery workers and beat log as the web processes do: at LAYERS_LOG_LEVEL, through Django's LOGGING. Out of
the box Celery takes the root logger over at its own `-l` level (WARNING when none is given), so a worker
started the README's way logged nothing at INFO (no "Task … succeeded", no INFO line of ours), whatever
LAYERS_LOG_LEVEL said; beat, likewise, logged none of the ticks it sent. Real worker and beat processes on a
throw-away Redis, as tests/reliability starts them."""

import re
import sys
from datetime import timedelta

import pytest
from celery import Celery
from django.utils import timezone

from accounts.models import IdempotencyKey
from tests.reliability.processes import RedisServer, django_env, start, stop, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

WORKER = "layers-logging-worker"
BEAT = "layers-logging-beat"
TASK = "accounts.tasks.purge_idempotency_keys"
SUCCEEDED = re.compile(rf"Task {re.escape(TASK)}\[[^\]]+\] succeeded")
# Django's LOGGING format ("plain"), not Celery's "[… INFO/MainProcess] …".
# With the task's id as the line's request id (config/requestid.py): a worker's lines name their task.
DJANGO_FORMAT = re.compile(
    rf"^\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ INFO celery\.app\.trace task:[0-9a-f-]{{36}} {SUCCEEDED.pattern}", re.M
)


@pytest.fixture
def redis(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.mark.parametrize(
    ("log_level", "level_args", "logged"),
    [
        ("INFO", [], True),  # the README's command had no -l: Celery's default, WARNING, won
        ("WARNING", ["-l", "info"], False),  # -l info (make run's) overrode the environment the other way
    ],
    ids=["info-without-l", "warning-with-l-info"],
)
def test_a_worker_logs_at_layers_log_level_in_djangos_format(owner, redis, tmp_path, log_level, level_args, logged):
    # given a key past its window, which the worker's task deletes (the sign that the task ran)
    expired = IdempotencyKey.objects.create(
        organization_id=owner.org.pk, key="old", fingerprint="f", created_at=timezone.now() - timedelta(days=3)
    )
    env = django_env(
        application_name=WORKER,
        settings_module="config.settings.dev",  # a real broker, no eager tasks
        CELERY_BROKER_URL=redis.url,
        LAYERS_LOG_LEVEL=log_level,
    )
    args = [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "threads", "--concurrency", "2"]
    args += ["-Q", "celery", *level_args, "--without-gossip", "--without-mingle", "--without-heartbeat"]
    log = tmp_path / "worker.log"
    worker = start(args, env=env, log=log)
    try:
        # when a task is sent to it
        sender = Celery("logging-test", broker=redis.url, set_as_current=False)
        with sender.connection_for_write() as conn:
            sender.send_task(TASK, connection=conn, retry=False)
        wait_for(lambda: not IdempotencyKey.objects.filter(pk=expired.pk).exists(), timeout=90, what="the task run")
        if logged:
            wait_for(lambda: SUCCEEDED.search(log.read_text()), timeout=10, what="the INFO line written")
    finally:
        stop(worker)

    # then its INFO line is there exactly when LAYERS_LOG_LEVEL lets INFO through, in Django's format
    text = log.read_text()
    assert bool(SUCCEEDED.search(text)) is logged, text[-3000:]
    assert bool(DJANGO_FORMAT.search(text)) is logged, text[-3000:]


def test_beat_started_without_l_logs_the_ticks_it_sends_at_layers_log_level(redis, tmp_path):
    env = django_env(
        application_name=BEAT,
        settings_module="config.settings.dev",
        CELERY_BROKER_URL=redis.url,
        LAYERS_LOG_LEVEL="INFO",
    )
    args = [sys.executable, "-m", "celery", "-A", "config", "beat"]
    args += ["--scheduler", "django_celery_beat.schedulers:DatabaseScheduler"]
    log = tmp_path / "beat.log"
    beat = start(args, env=env, log=log)
    sent = re.compile(
        r"^\d{4}-\d\d-\d\d [\d:,]+ INFO celery\.beat - Scheduler: Sending due task dispatch-due-posts ", re.M
    )
    try:
        # the dispatcher's tick is due every 2 seconds
        assert wait_for(lambda: sent.search(log.read_text()), timeout=60, what="an INFO line of beat")
    finally:
        stop(beat)
