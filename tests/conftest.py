"""Fixtures: three organizations — the owner (two projects), a second organization of the same partner,
and an outsider — so every endpoint is also tested across organizations."""

from dataclasses import dataclass

import pytest
from rest_framework.test import APIClient

from accounts import services

# Records every test's outcome for RELIABILITY.md (var/reliability/results.json).
pytest_plugins = ["tests.reliability.results"]


@pytest.fixture(autouse=True)
def _redis_reachable_again():
    """Each test starts with Redis presumed reachable and an empty fallback memory: a test that saw Redis
    down would otherwise leave this process counting in memory for the next few seconds (config/cache.py)."""
    from config import cache

    cache._redis_unavailable_until = 0.0
    cache.FALLBACK.clear()
    yield


@dataclass
class Tenant:
    org: object
    projects: list
    key: object
    raw_key: str
    client: APIClient

    @property
    def project(self):
        return self.projects[0]


def make_tenant(name: str, *, projects: int = 1, domains=("app.acme.test", "localhost")) -> Tenant:
    org = services.organization_create(name=name)
    prjs = [services.project_create(organization=org, name=f"{name} project {i}") for i in range(projects)]
    key, raw = services.api_key_create(organization=org, return_domains=list(domains), name="test")
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return Tenant(org=org, projects=prjs, key=key, raw_key=raw, client=client)


@pytest.fixture
def owner(db) -> Tenant:
    return make_tenant("Acme", projects=2)


@pytest.fixture
def sibling(db) -> Tenant:
    """A second organization of the same partner company: still a different tenant."""
    return make_tenant("Acme Labs")


@pytest.fixture
def outsider(db) -> Tenant:
    return make_tenant("Globex", domains=("globex.test",))


@pytest.fixture
def anon() -> APIClient:
    return APIClient(raise_request_exception=False)


def assert_error(response, status: int, code: str):
    """The response is API.md's error envelope with this status and code."""
    assert response.status_code == status, (response.status_code, response.content[:500])
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    return body["error"]


@pytest.fixture
def receivers():
    """Start webhook receivers on 127.0.0.1 with `receivers(respond=..., port=...)`; all are stopped after the
    test (tests/webhooks/receiver.py)."""
    from tests.webhooks.receiver import Receiver

    started: list[Receiver] = []

    def start(**kwargs) -> Receiver:
        started.append(Receiver(**kwargs).start())
        return started[-1]

    yield start
    for receiver in started:
        receiver.stop()
