"""Background work a platform refused for now (account health checks, pool token refreshes) is retried when
the platform said to (Retry-After), not sooner: coming back early only spends the token's quota again."""

from types import SimpleNamespace

from accounts.platforms.base import PlatformUnavailable, RateLimited
from config.queueing import platform_retry_countdown


def task(retries: int):
    return SimpleNamespace(request=SimpleNamespace(retries=retries))


def test_the_platforms_retry_after_decides_the_countdown():
    assert platform_retry_countdown(task(0), RateLimited("slow down", retry_after=900)) == 900
    assert platform_retry_countdown(task(3), RateLimited("slow down", retry_after=45)) == 45


def test_without_retry_after_the_countdown_doubles_from_a_minute_up_to_an_hour():
    assert [platform_retry_countdown(task(n), PlatformUnavailable("down")) for n in range(8)] == [
        60,
        120,
        240,
        480,
        960,
        1920,
        3600,
        3600,
    ]


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
