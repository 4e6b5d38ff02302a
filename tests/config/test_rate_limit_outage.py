"""The request budgets count in Redis; when Redis is killed or stops answering, the API keeps answering
(each process counts in its own memory meanwhile, so budgets still hold per process) and goes back to Redis
once it is back. Before, every partner request, OAuth callback and sandbox call failed with a 500."""

import socket
import threading
from pathlib import Path

import pytest
import redis
from django.conf import settings as django_settings
from django.db import connection
from rest_framework.test import APIClient

from config import cache as cache_module
from tests.conftest import assert_error
from tests.reliability.processes import RedisServer

pytestmark = pytest.mark.django_db


def redis_cache(settings, url: str) -> None:
    """The deployed cache configuration (its socket timeouts included), pointed at `url`."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": url,
            "OPTIONS": django_settings.REDIS_CACHE_OPTIONS,
        }
    }


def counters(url: str) -> dict[str, int]:
    client = redis.Redis.from_url(url)
    try:
        return {key.decode(): int(client.get(key)) for key in client.keys("*ratelimit:api_key*")}
    finally:
        client.close()


def test_partner_requests_survive_a_killed_redis_and_count_there_again_once_it_is_back(
    owner, settings, tmp_path: Path, monkeypatch
):
    server = RedisServer(tmp_path)
    server.start()
    redis_cache(settings, server.url)
    settings.LAYERS_API_RATE = "1000/min"
    monkeypatch.setattr(cache_module, "REDIS_RETRY_SECONDS", 0.0)
    try:
        assert owner.client.get("/v1/projects").status_code == 200
        assert list(counters(server.url).values()) == [1]

        server.kill()
        for _ in range(3):
            response = owner.client.get("/v1/projects")
            assert response.status_code == 200, response.content

        server.start()  # same port, empty: it kept nothing
        assert owner.client.get("/v1/projects").status_code == 200
        assert list(counters(server.url).values()) == [1]
    finally:
        server.kill()


def test_while_redis_is_down_the_budget_still_holds_in_the_process(owner, settings):
    redis_cache(settings, f"redis://127.0.0.1:{closed_port()}/0")
    settings.LAYERS_API_RATE = "3/min"
    statuses = [owner.client.get("/v1/projects").status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    assert_error(owner.client.get("/v1/projects"), 429, "RATE_LIMITED")


@pytest.mark.django_db(transaction=True)  # the request runs in a thread of its own, on its own connection
def test_a_redis_that_never_answers_is_given_up_on_and_not_asked_on_every_request(owner, settings, caplog):
    silent = SilentServer()
    redis_cache(settings, f"redis://127.0.0.1:{silent.port}/0")
    answers: list[int] = []

    def dashboard():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {owner.raw_key}")
        try:
            answers.extend(client.get("/v1/projects").status_code for _ in range(4))
        finally:
            connection.close()

    try:
        worker = threading.Thread(target=dashboard)
        worker.start()
        worker.join(timeout=30)  # without socket timeouts the first request would wait forever
        assert not worker.is_alive(), "a request hung on a Redis that does not answer"
    finally:
        silent.close()
    assert answers == [200, 200, 200, 200]
    assert silent.connections == 1  # the later requests counted in the process without trying Redis
    warnings = [r.getMessage() for r in caplog.records if r.name == "config.cache"]
    assert len(warnings) == 1 and "rate-limit counters: Redis unavailable" in warnings[0]


def test_oauth_callback_and_sandbox_answer_normally_while_redis_is_down(db, settings):
    redis_cache(settings, f"redis://127.0.0.1:{closed_port()}/0")
    client = APIClient()
    page = client.get("/oauth/tiktok/callback?code=abc&state=st_unknown")
    assert page.status_code == 400 and b"unknown or invalid" in page.content
    sandbox = client.get("/sandbox/tiktok/v2/user/info/")
    assert sandbox.status_code == 401  # the sandbox's own answer to a request without a token


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SilentServer:
    """Accepts connections on a loopback port and never answers: a Redis that hangs."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self.accepted.append(conn)

    def close(self):
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def test_while_redis_is_down_the_fallback_is_one_memory_per_process_not_one_per_thread(settings):
    # Django gives each thread its own cache object: a TOTP code allauth marks used in one gunicorn thread
    # must be refused in another, and the sign-in limits must count across threads.
    settings.CACHES = {
        "default": {
            "BACKEND": "config.cache.TolerantRedisCache",
            "LOCATION": f"redis://127.0.0.1:{closed_port()}/0",
            "OPTIONS": django_settings.REDIS_CACHE_OPTIONS,
        }
    }

    def in_a_thread(work):
        from django.core.cache import cache

        box = {}
        thread = threading.Thread(target=lambda: box.setdefault("result", work(cache)))
        thread.start()
        thread.join()
        return box["result"]

    first_use = in_a_thread(lambda cache: cache.add("allauth-totp-used-123456", "y", timeout=90))
    replay = in_a_thread(lambda cache: cache.add("allauth-totp-used-123456", "y", timeout=90))

    assert (first_use, replay) == (True, False)
