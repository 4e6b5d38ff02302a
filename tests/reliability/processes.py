"""Real processes for fault injection: Django subprocesses on the test database (each with its own
PostgreSQL application_name, so a test can kill exactly its connections), a Redis server of our own on a
free loopback port, and a direct PostgreSQL connection for pg_stat_activity / pg_terminate_backend.
Everything is bounded in time and stopped in `finally` blocks by the tests."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import psycopg
from django.conf import settings
from django.db import connection


def wait_for(condition, *, timeout: float = 30.0, what: str = "condition", interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what}: not reached within {timeout:.0f} s")


def database_url(application_name: str | None = None) -> str:
    db = connection.settings_dict
    auth = quote(db["USER"] or "postgres") + (f":{quote(db['PASSWORD'])}" if db.get("PASSWORD") else "")
    url = f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    return f"{url}?application_name={quote(application_name)}" if application_name else url


def pg(sql: str, params=()) -> list[tuple]:
    """One statement on a fresh autocommit connection (not Django's: its snapshot of pg_stat_activity
    would be frozen inside a transaction, and the test may be holding locks on its own connection)."""
    db = connection.settings_dict
    with psycopg.connect(
        host=db["HOST"] or "127.0.0.1",
        port=db["PORT"] or 5432,
        user=db["USER"] or "postgres",
        password=db.get("PASSWORD") or None,
        dbname=db["NAME"],
        autocommit=True,
    ) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def terminate_backends(application_name: str, *, waiting_on_lock: bool = False) -> int:
    """Drop the database connections of that application (pg_terminate_backend): what a PostgreSQL restart,
    a failover or a network cut does to a worker. Returns how many were dropped."""
    sql = (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s AND pid <> pg_backend_pid()"
    )
    if waiting_on_lock:
        sql += " AND wait_event_type = 'Lock'"
    return sum(1 for (dropped,) in pg(sql, [application_name]) if dropped)


def terminate_own_backend() -> None:
    """Drop this thread's own Django database connection from the server's side, as a PostgreSQL restart, a
    failover or an idle connection killed by a proxy would: Django learns of it at its next query."""
    connection.ensure_connection()
    pg("SELECT pg_terminate_backend(%s)", [connection.connection.info.backend_pid])


def backends(application_name: str, *, waiting_on_lock: bool = False) -> int:
    sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
    if waiting_on_lock:
        sql += " AND wait_event_type = 'Lock'"
    return pg(sql, [application_name])[0][0]


def django_env(*, application_name: str, settings_module: str = "config.settings.test", **extra) -> dict:
    live = {k: v for k, v in extra.items() if v is not None}
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": settings_module,
        "DATABASE_URL": database_url(application_name),
        "PYTHONUNBUFFERED": "1",
        **live,
    }


def start(args: list[str], *, env: dict, log: Path) -> subprocess.Popen:
    """A child process in its own session (so that stopping it stops everything it started), its output
    to a file (a pipe nobody reads would block it)."""
    out = open(log, "ab")  # noqa: SIM115 - handed to the child; closed with it
    try:
        return subprocess.Popen(
            args, cwd=settings.BASE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    finally:
        out.close()


def manage(*args: str) -> list[str]:
    return [sys.executable, "manage.py", *args]


def stop(proc: subprocess.Popen | None, *, grace: float = 15.0) -> int | None:
    """SIGTERM (a Celery worker finishes its running tasks), then SIGKILL after `grace` seconds."""
    if proc is None:
        return None
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            kill(proc)
    return proc.returncode


def kill(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A throw-away Redis on a loopback port, without persistence: killing it loses every queued message,
    the worst a broker outage can do."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--daemonize", "no", "--dir", str(self.workdir)]
        self.proc = start(args, env=dict(os.environ), log=self.workdir / "redis.log")
        wait_for(self.ping, timeout=15, what="redis-server answering")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def queue_length(self, queue: str = "celery") -> int:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(f"LLEN {queue}\r\n".encode())
            answer = s.recv(64)
        return int(answer[1:].split(b"\r\n")[0])

    def kill(self) -> None:
        """SIGKILL: no shutdown, no save; the queue is gone."""
        kill(self.proc)
        self.proc = None
        wait_for(lambda: not self.ping(), timeout=10, what="redis-server gone")
