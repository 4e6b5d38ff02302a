"""/healthz and /readyz as load balancers and Kubernetes use them: they send the pod's address as Host, so the
probes are answered before the host check (and nothing else is); and /readyz says "not ready" while the
database lacks migrations, since every API call then fails."""

import json
import logging
import subprocess
import sys

import psycopg
import pytest
from django.conf import settings
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder
from django.test import Client

from accounts import views
from tests.reliability.processes import database_url, django_env

POD = "10.0.0.5:18431"


@pytest.fixture
def pod_client():
    return Client(HTTP_HOST=POD, raise_request_exception=False)


@pytest.fixture
def migrations_not_yet_known():
    """Each test starts from a process that has not yet seen its migrations all applied (readyz remembers
    that once it is true)."""
    views._migrations_applied = False
    yield
    views._migrations_applied = False


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_a_probe_with_the_pods_address_as_host_is_answered_without_an_error_log(db, pod_client, caplog, path):
    with caplog.at_level(logging.WARNING):
        response = pod_client.get(path)
    assert response.status_code == 200, response.content[:300]
    assert response.json()["status"] == "ok"
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize(
    "path", ["/healthz/", "/healthz/x", "/readyzz", "/v1/projects", "/admin/", "/docs/", "/v1/openapi.json"]
)
def test_anything_else_with_a_host_not_allowed_is_still_refused(db, pod_client, path):
    assert pod_client.get(path).status_code == 400


def test_a_probe_answers_the_same_with_an_allowed_host(db, pod_client):
    allowed = Client()
    assert allowed.get("/healthz").json() == pod_client.get("/healthz").json() == {"status": "ok"}
    assert allowed.get("/readyz").json() == pod_client.get("/readyz").json()


def test_readyz_is_unavailable_while_a_migration_is_unapplied(db, anon, migrations_not_yet_known, caplog):
    # The release's newest migration of accounts is not applied yet: its code would fail on the missing
    # schema, so the load balancer must not send it traffic.
    latest = MigrationRecorder.Migration.objects.filter(app="accounts").order_by("-name").first()
    latest.delete()
    with caplog.at_level(logging.INFO):
        response = anon.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": "error: 1 unapplied migration(s)", "broker": "ok"},
    }
    # Not ready is what a deploy looks like until `migrate` has run: one warning saying why, not an ERROR
    # ("Service Unavailable: /readyz") that pages whoever watches the errors and does not say why.
    (line,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert line.levelno == logging.WARNING and "1 unapplied migration(s)" in line.getMessage()


def test_readyz_looks_at_the_migrations_until_they_are_all_applied_then_only_selects_1(
    db, anon, migrations_not_yet_known, django_assert_num_queries
):
    assert anon.get("/readyz").status_code == 200
    with django_assert_num_queries(1):  # the database round trip of every probe: SELECT 1
        assert anon.get("/readyz").status_code == 200


@pytest.fixture
def empty_database():
    """A PostgreSQL database of its own with nothing in it: a deployment before its first `migrate`."""
    name = f"{connection.settings_dict['NAME']}_empty"
    admin = {k: v for k, v in psycopg.conninfo.conninfo_to_dict(database_url()).items() if k != "dbname"}
    with psycopg.connect(**admin, dbname="postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_url().rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(**admin, dbname="postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


ON_AN_EMPTY_DATABASE = """
import json, django
django.setup()
from django.core.management import call_command
from django.test import Client
client = Client(raise_request_exception=False)
ready = client.get("/readyz")
projects = client.get("/v1/projects", HTTP_AUTHORIZATION="Bearer lyr_x")
call_command("check", databases=["default"])  # the check on stored secrets: nothing stored, nothing refused
print(json.dumps({"ready": [ready.status_code, ready.json()], "projects": projects.status_code}))
"""


def test_readyz_is_unavailable_on_an_empty_database_where_the_api_fails(db, empty_database):
    result = subprocess.run(  # noqa: S603 - our own interpreter, a fixed program
        [sys.executable, "-c", ON_AN_EMPTY_DATABASE],
        cwd=settings.BASE_DIR,
        env={**django_env(application_name="layers-empty-db"), "DATABASE_URL": empty_database},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["projects"] == 500  # relation "accounts_apikey" does not exist
    status, body = seen["ready"]
    assert status == 503 and body["status"] == "unavailable" and body["checks"]["broker"] == "ok"
    assert body["checks"]["database"].startswith("error: ") and "unapplied migration" in body["checks"]["database"]


def boot_a_web_process(env: dict) -> subprocess.CompletedProcess:
    """What a gunicorn worker does at boot (config/wsgi.py, its start-up checks included); a hang fails the
    test at the timeout."""
    return subprocess.run(
        [sys.executable, "-c", "import config.wsgi; print('booted')"],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_a_web_process_starts_while_the_database_accepts_connections_and_never_answers():
    """A hung pooler or a failover address nobody answers behind: the start-up checks (config/startup.py)
    read the database, and without a connect timeout a gunicorn worker's boot hung there for good, /healthz
    unanswered, so a load balancer drained pods that were healthy. It starts, and says why it skipped them."""
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # the kernel completes the handshake; nobody ever reads or answers
    env = {
        **django_env(application_name="silent-db"),
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:{silent.getsockname()[1]}/layers",
    }
    env["DATABASE_URL"] += "?connect_timeout=2"  # the default (10 s), shortened for the test
    try:
        booted = boot_a_web_process(env)
    finally:
        silent.close()
    assert "booted" in booted.stdout, booted.stderr
    assert "database unreachable" in booted.stderr  # the checks that read the database said they were skipped


def test_the_default_connect_timeout_is_set_for_postgresql():
    from config.settings.base import database

    assert database("postgres://layers@db.internal/layers")["OPTIONS"]["connect_timeout"] == 10
    assert "connect_timeout" not in database("sqlite:////tmp/layers.sqlite3")["OPTIONS"]


@pytest.mark.django_db(transaction=True)
def test_a_web_process_starts_while_the_database_answers_connections_but_not_queries(owner):
    """The database accepts the connection and then never answers the start-up checks' queries (a table
    locked by a stuck migration, a pooler that hangs after the handshake): the connect timeout did not cover
    that, and a gunicorn worker's boot hung for good. The checks give up after as long as a connect may take."""
    from tests.concurrency import held_open

    def lock_the_accounts():
        with connection.cursor() as cursor:
            cursor.execute("LOCK TABLE accounts_socialaccount IN ACCESS EXCLUSIVE MODE")

    env = django_env(application_name="hung-queries")
    env["DATABASE_URL"] += ("&" if "?" in env["DATABASE_URL"] else "?") + "connect_timeout=2"
    with held_open(lock_the_accounts, timeout=180):  # held longer than the boot may take: a hang fails the test
        booted = boot_a_web_process(env)
    assert "booted" in booted.stdout, booted.stderr[-2000:]
    assert "layers.W002" in booted.stderr, booted.stderr[-2000:]  # the check said it could not read, and why


@pytest.mark.django_db(transaction=True)
def test_the_start_up_timeout_stays_in_the_checks_transaction():
    # Set for the session, the 10 s timeout went back to a transaction-mode pooler's pool with the server
    # connection, and cancelled whoever's long statement came next on it.
    from config import startup

    seen = []

    def spy(execute, sql, params, many, context):
        if sql.startswith("SET") and "statement_timeout" in sql:
            seen.append((connection.in_atomic_block, sql.split(" statement_timeout")[0]))
        elif not sql.startswith("SHOW"):
            with connection.cursor() as cursor:  # what every query of the checks runs under
                cursor.execute("SHOW statement_timeout")
                seen.append(cursor.fetchone()[0])
        return execute(sql, params, many, context)

    with connection.execute_wrapper(spy):
        startup.refuse_to_start_on_failed_checks("web")
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        after = cursor.fetchone()[0]
    assert seen[0] == (True, "SET LOCAL") and set(seen[1:]) == {"10s"}, seen
    assert after == "0"
