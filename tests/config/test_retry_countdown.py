"""Background work a platform refused for now (account health checks, pool token refreshes) is retried when
the platform said to (Retry-After), not sooner: coming back early only spends the token's quota again.

A retry waits in the broker no longer than LAYERS_MAX_TASK_COUNTDOWN: with acks_late a message retried with
a countdown stays unacknowledged until it runs, and a longer wait made RabbitMQ close the worker's channel
(consumer_timeout) or Redis hand the message out again (visibility_timeout), the task then running several
times. A platform asking for longer (Instagram counts its waits in minutes: hours are common) is waited out
by the periodic ticks instead, which read the wait from the row."""

import json
from datetime import datetime, timedelta
from types import SimpleNamespace

import httpx
import pytest
import time_machine
from celery.exceptions import Retry
from django.conf import settings
from django.utils import timezone

from accounts.models import SocialAccount
from accounts.platforms.base import PlatformUnavailable, RateLimited
from config.queueing import platform_retry_countdown
from config.settings.base import broker_timeouts
from leasing.models import PoolAccount
from tests.accounts.oauth_helpers import connected_account
from tests.leasing.helpers import add_pool
from tests.platform_helpers import intercepted, platform_down

TWO_HOURS = timedelta(hours=2)


def task(retries: int):
    return SimpleNamespace(request=SimpleNamespace(retries=retries))


def test_the_platforms_retry_after_decides_the_countdown():
    assert platform_retry_countdown(task(0), RateLimited("slow down", retry_after=900)) == 900
    assert platform_retry_countdown(task(3), RateLimited("slow down", retry_after=45)) == 45


def test_a_retry_after_longer_than_the_longest_countdown_is_left_to_the_periodic_ticks():
    assert settings.LAYERS_MAX_TASK_COUNTDOWN == 15 * 60
    assert platform_retry_countdown(task(0), RateLimited("slow down", retry_after=2 * 3600)) is None
    assert platform_retry_countdown(task(0), RateLimited("slow down", retry_after=15 * 60 + 1)) is None


def test_without_retry_after_the_countdown_doubles_from_a_minute_up_to_the_longest_countdown():
    assert [platform_retry_countdown(task(n), PlatformUnavailable("down")) for n in range(8)] == [
        60,
        120,
        240,
        480,
        900,
        900,
        900,
        900,
    ]


def test_the_longest_countdown_stays_well_below_what_the_brokers_wait_for_an_unacknowledged_message():
    # RabbitMQ's default consumer_timeout is 30 minutes (README, Production: keep it above the countdown
    # plus a task's run); Redis hands a message out again after the transport's visibility_timeout.
    assert settings.LAYERS_MAX_TASK_COUNTDOWN <= 30 * 60 / 2
    for url in ("redis://127.0.0.1:6379/0", "rediss://cache.example:6380/0", "sentinel://127.0.0.1:26379"):
        assert broker_timeouts(url)["visibility_timeout"] >= 2 * settings.LAYERS_MAX_TASK_COUNTDOWN


def test_with_the_broker_refusing_nothing_counts_as_queued_and_it_stops_at_the_first_refusal():
    """Periodic ticks leave the ids not queued (`ids[queued:]`) due for the next tick: with the broker down,
    none of them may count as queued (they would wait out their mark instead), and only one refusal is paid."""
    from config.queueing import enqueue_each

    calls = []

    def refuse(*args):
        calls.append(args)
        raise ConnectionError("broker down")

    down = SimpleNamespace(name="tick", delay=refuse)
    assert enqueue_each(down, ["a", "b", "c"]) == 0
    assert calls == [("a",)]


class ParkedRetries:
    """A task's retries as a worker sees them: held for their countdown, then run (eager tasks, as in the
    tests, would run them again at once), until the task's max_retries. `countdowns`: every wait asked."""

    def __init__(self, monkeypatch, task):
        self.task, self.parked, self.countdowns = task, [], []

        def retry(*, countdown=None, eta=None, **options):
            attempt = task.request.retries + 1
            if attempt > task.max_retries:
                raise task.MaxRetriesExceededError()
            wait = countdown if eta is None else (eta - timezone.now()).total_seconds()
            self.countdowns.append(wait)
            self.parked.append((timezone.now() + timedelta(seconds=wait), list(task.request.args), attempt))
            return Retry(when=wait)

        monkeypatch.setattr(task, "retry", retry)

    def run_due(self) -> None:
        now = timezone.now()
        due = [(args, attempt) for at, args, attempt in self.parked if at <= now]
        self.parked = [parked for parked in self.parked if parked[0] > now]
        for args, attempt in due:
            self.task.apply(args=args, retries=attempt)


def run_ticks(*, start: datetime, until: datetime, tick, every: float, retries: ParkedRetries) -> None:
    """Minute by minute from `start` to `until`: the parked retries that are due, and the tick every `every`."""
    minute = 0
    while start + timedelta(minutes=minute) <= until:
        with time_machine.travel(start + timedelta(minutes=minute), tick=False):
            retries.run_due()
            if (minute * 60) % every == 0:
                tick()
        minute += 1


def waited_out_in_the_ticks(monkeypatch, *, start, path, throttling, task, tick, beat_entry) -> None:
    """Run `tick` as beat sends it (its `beat_entry`) from `start` for 2 h and one interval more, the platform
    answering `path` with `throttling()` for the first 2 h; `task` is what the tick queues and retries. Then no
    retry waited in the broker longer than the longest countdown, and the platform was asked once at the start,
    not again before the 2 h had passed, and again once they had."""
    calls: list = []
    retries = ParkedRetries(monkeypatch, task)
    every = settings.CELERY_BEAT_SCHEDULE[beat_entry]["schedule"]
    with intercepted({path: throttled_until(start + TWO_HOURS, calls, throttling)}):
        run_ticks(
            start=start, until=start + TWO_HOURS + timedelta(seconds=every), tick=tick, every=every, retries=retries
        )
    assert all(wait <= settings.LAYERS_MAX_TASK_COUNTDOWN for wait in retries.countdowns), retries.countdowns
    assert calls[0] == start
    assert [at for at in calls if start < at < start + TWO_HOURS] == []
    assert any(at >= start + TWO_HOURS for at in calls)


def throttled_until(until: datetime, calls: list, answer):
    """A platform that throttles every call made before `until` (answer(): its throttling answer), and
    passes the later ones to the sandbox; `calls` gets the time of each."""

    def handle(request: httpx.Request, sandbox: httpx.WSGITransport) -> httpx.Response:
        calls.append(timezone.now())
        return sandbox.handle_request(request) if timezone.now() >= until else answer()

    return handle


@pytest.mark.django_db(transaction=True)
def test_a_health_check_instagram_throttles_for_two_hours_waits_them_out_in_the_ticks_not_the_broker(
    owner, monkeypatch
):
    from accounts import tasks

    # given an account due for its daily check, and Instagram saying (in minutes) that access is back in 2 h
    pk = connected_account(owner, "instagram", "throttled.health")["id"]
    SocialAccount.objects.filter(pk=pk).update(health_checked_at=None)
    start = timezone.now()
    usage = {"0": [{"type": "instagram", "call_count": 100, "estimated_time_to_regain_access": 120}]}
    error = {"message": "(#4) Application request limit reached", "type": "OAuthException", "code": 4}

    def throttling():
        return httpx.Response(400, json={"error": error}, headers={"X-Business-Use-Case-Usage": json.dumps(usage)})

    # when the health tick runs, as beat sends it, for the 2 h and a bit more: Instagram is asked once at the
    # start, not again before the 2 h have passed, and again once they have, no retry waiting in the broker
    waited_out_in_the_ticks(
        monkeypatch,
        start=start,
        path="/me",
        throttling=throttling,
        task=tasks.social_account_check_health,
        tick=tasks.social_accounts_health_tick,
        beat_entry="social-accounts-health",
    )

    # and the account was checked then
    row = SocialAccount.objects.get(pk=pk)
    assert row.status == "connected" and row.health_checked_at >= start + TWO_HOURS


@pytest.mark.django_db(transaction=True)
def test_a_pool_token_refresh_tiktok_throttles_for_two_hours_waits_them_out_in_the_ticks_not_the_broker(
    owner, monkeypatch
):
    from leasing import tasks

    # given a pool account whose access token is due for its refresh, and TikTok answering 429 for 2 h
    [pool_id] = add_pool(1)
    before = PoolAccount.objects.get(pk=pool_id)
    start = timezone.now() + timedelta(hours=20)

    def throttling():
        body = {"error": "rate_limit_exceeded", "error_description": "Too many requests"}
        return httpx.Response(429, json=body, headers={"Retry-After": str(int(TWO_HOURS.total_seconds()))})

    # when the refresh tick runs, as beat sends it, for the 2 h and a bit more (TikTok asked as above)
    waited_out_in_the_ticks(
        monkeypatch,
        start=start,
        path="/oauth/token/",
        throttling=throttling,
        task=tasks.pool_account_refresh_token,
        tick=tasks.pool_accounts_refresh_tick,
        beat_entry="pool-accounts-token-refresh",
    )

    # then the token was refreshed once they had passed (before it expired: 24 h after it was issued)
    pool = PoolAccount.objects.get(pk=pool_id)
    assert pool.status == "available" and pool.access_token != before.access_token
    assert pool.token_expires_at > start + TWO_HOURS + timedelta(hours=23)


def test_the_post_connect_fan_out_never_waits_in_the_broker_longer_than_the_longest_countdown(monkeypatch):
    from accounts import services, tasks

    # fails each time
    monkeypatch.setattr(services, "social_account_fan_out", lambda *, account_id, **options: ["avatar"])
    retries = ParkedRetries(monkeypatch, tasks.social_account_after_connect)
    tasks.social_account_after_connect.apply(args=["sa_x"])
    while retries.parked:
        with time_machine.travel(retries.parked[0][0], tick=False):
            retries.run_due()
    assert len(retries.countdowns) == tasks.social_account_after_connect.max_retries
    assert max(retries.countdowns) <= settings.LAYERS_MAX_TASK_COUNTDOWN, retries.countdowns


@pytest.mark.django_db(transaction=True)
def test_the_last_retry_during_an_outage_ends_with_one_warning_and_leaves_the_work_to_the_tick(owner, caplog):
    """Celery's MaxRetriesExceededError was an ERROR traceback per account (and per pool account) each time a
    platform outage outlasted the retries: thousands of them, none saying the platform was down."""
    from accounts import tasks as account_tasks
    from leasing import tasks as leasing_tasks

    pk = connected_account(owner, "tiktok", "outage.health")["id"]
    SocialAccount.objects.filter(pk=pk).update(token_expires_at=timezone.now() + timedelta(hours=1))
    [pool_id] = add_pool(1)
    with caplog.at_level("INFO"), intercepted(platform_down("tiktok")):
        checked = account_tasks.social_account_check_health.apply(args=[pk], retries=5)
        with time_machine.travel(timezone.now() + timedelta(hours=20), tick=False):
            refreshed = leasing_tasks.pool_account_refresh_token.apply(args=[pool_id], retries=5)

    assert (checked.result, refreshed.result) == ("unavailable", "unavailable")
    assert SocialAccount.objects.get(pk=pk).status == "connected"
    assert PoolAccount.objects.get(pk=pool_id).status == "available"
    assert [r.levelname for r in caplog.records if r.levelno >= 30 and "still unavailable" in r.getMessage()] == [
        "WARNING",
        "WARNING",
    ]
    assert not [r for r in caplog.records if r.levelno >= 40]
    # and the ticks still find both due, so they are queued again
    from accounts import services as account_services
    from leasing import services as leasing_services

    assert pk in account_services.social_accounts_due_for_health(now=timezone.now() + timedelta(minutes=31))
    later_on = timezone.now() + timedelta(hours=20)
    assert pool_id in leasing_services.pool_accounts_due_for_refresh(now=later_on)


def test_the_post_connect_fan_outs_last_retry_ends_with_one_warning_not_a_traceback(monkeypatch, caplog):
    from accounts import services, tasks

    # fails each time
    monkeypatch.setattr(services, "social_account_fan_out", lambda *, account_id, **options: ["avatar"])
    with caplog.at_level("INFO"):
        result = tasks.social_account_after_connect.apply(
            args=["sa_x"], retries=tasks.social_account_after_connect.max_retries
        )
    assert result.successful() and result.result == ["avatar"], repr(result.result)
    assert [r.levelname for r in caplog.records if "still failing" in r.getMessage()] == ["WARNING"]
    assert not [r for r in caplog.records if r.levelno >= 40]
