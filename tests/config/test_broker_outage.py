"""A broker that is down, or that accepts connections and never answers, is not an API outage: a request
whose change has committed answers, and the task it meant to queue is left to the periodic ticks
(config/queueing). Each request runs in a subprocess of its own with real Celery (not eager) on a real
broker URL: a loopback socket that accepts and says nothing (Redis or AMQP), or a real redis-server, killed.
Before the broker settings had timeouts, the silent Redis hung such a request forever (and /readyz too)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from tests.config.test_rate_limit_outage import SilentServer
from tests.factories import make_account
from tests.reliability.processes import RedisServer, django_env

pytestmark = pytest.mark.django_db(transaction=True)  # the subprocess reads what the test committed

# A partner disconnects an account: the change commits, then its event's fan-out is queued on the broker.
REVOKE = """
import sys
import django
django.setup()
from rest_framework.test import APIClient
client = APIClient()
client.credentials(HTTP_AUTHORIZATION="Bearer " + sys.argv[1])
response = client.delete("/v1/social-accounts/" + sys.argv[2])
print(response.status_code, flush=True)
"""

READYZ = """
import django
django.setup()
from django.test import Client
response = Client().get("/readyz")
print(response.status_code, response.content.decode(), flush=True)
"""


def silent_broker_url(scheme: str, port: int) -> str:
    return f"redis://127.0.0.1:{port}/0" if scheme == "redis" else f"amqp://guest:guest@127.0.0.1:{port}//"


def in_a_process_of_its_own(script: str, *args: str, broker_url: str) -> tuple[int | None, str, str]:
    env = django_env(
        application_name="layers-broker-outage-request",
        settings_module="tests.broker_settings",
        CELERY_BROKER_URL=broker_url,
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        cwd=django_settings.BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = proc.communicate(timeout=60)  # a safety net for a hang, not a timed assertion
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return proc.returncode, out.decode(), err.decode()


def assert_answered_and_committed(account, result):
    returncode, out, err = result
    account.refresh_from_db()
    assert account.status == "disconnected"
    assert returncode == 0 and out.startswith("200"), (returncode, out, err[-2000:])
    assert "fan-out of" in err and "not done" in err, err[-2000:]  # the broker was tried, and failed


@pytest.mark.parametrize("scheme", ["redis", "amqp"])
def test_a_revoke_answers_while_the_broker_accepts_connections_but_never_answers(owner, scheme):
    account = make_account(owner)
    silent = SilentServer()
    try:
        result = in_a_process_of_its_own(
            REVOKE, owner.raw_key, account.pk, broker_url=silent_broker_url(scheme, silent.port)
        )
    finally:
        silent.close()
    assert_answered_and_committed(account, result)
    assert silent.connections >= 1  # the request did reach the silent broker


def test_a_revoke_answers_while_the_redis_broker_is_killed(owner, tmp_path: Path):
    account = make_account(owner)
    redis = RedisServer(tmp_path)
    redis.start()
    redis.kill()  # SIGKILL: its port now refuses connections
    result = in_a_process_of_its_own(REVOKE, owner.raw_key, account.pk, broker_url=redis.url)
    assert_answered_and_committed(account, result)


@pytest.mark.parametrize("scheme", ["redis", "amqp"])
def test_readiness_reports_a_broker_that_never_answers_instead_of_hanging(db, scheme):
    silent = SilentServer()
    try:
        returncode, out, err = in_a_process_of_its_own(READYZ, broker_url=silent_broker_url(scheme, silent.port))
    finally:
        silent.close()
    assert returncode == 0 and out.startswith("503 "), (returncode, out, err[-2000:])
    checks = json.loads(out.split(" ", 1)[1])["checks"]
    assert checks["database"] == "ok" and checks["broker"].startswith("error")
