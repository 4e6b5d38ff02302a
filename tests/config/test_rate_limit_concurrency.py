"""The per-key request budget holds when a key's requests arrive at the same time, as they do from a
partner's dashboard behind several web processes: every process counts in the same Redis, and no two
requests may both take the last unit of the budget."""

import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
import time_machine
from django.db import connection
from rest_framework.test import APIClient

from tests.conftest import make_tenant
from tests.reliability.processes import RedisServer

# Ten seconds into a minute: the whole test runs inside one budget window.
EARLY_IN_A_MINUTE = datetime(2026, 5, 4, 12, 0, 10, tzinfo=UTC)


@pytest.fixture
def redis_cache(settings, tmp_path: Path):
    server = RedisServer(tmp_path)
    server.start()
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": server.url}}
    yield server
    server.kill()


def test_concurrent_requests_of_one_key_never_exceed_its_budget(transactional_db, settings, redis_cache):
    settings.LAYERS_API_RATE = "10/min"
    tenant = make_tenant("Acme")
    threads, per_thread = 8, 5
    start = threading.Barrier(threads)
    statuses: list[int] = []
    retry_after: list[str] = []
    lock = threading.Lock()

    def partner_dashboard():
        client = APIClient(raise_request_exception=False)
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {tenant.raw_key}")
        start.wait()
        try:
            for _ in range(per_thread):
                response = client.get("/v1/projects")
                with lock:
                    statuses.append(response.status_code)
                    if response.status_code == 429:
                        retry_after.append(response["Retry-After"])
        finally:
            connection.close()

    with time_machine.travel(EARLY_IN_A_MINUTE, tick=True):
        workers = [threading.Thread(target=partner_dashboard) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)

    assert sorted(set(statuses)) == [200, 429]
    assert statuses.count(200) == 10, statuses
    assert statuses.count(429) == threads * per_thread - 10
    # The budget comes back at the next minute, at most 50 s away.
    assert all(1 <= int(seconds) <= 50 for seconds in retry_after), retry_after
    # One counter for the key's minute, which Redis drops by itself once the minute is over.
    client = redis.Redis.from_url(redis_cache.url)
    counters = client.keys("*ratelimit:api_key*")
    assert len(counters) == 1 and int(client.get(counters[0])) == threads * per_thread
    assert 0 < client.ttl(counters[0]) <= 61
    client.close()
