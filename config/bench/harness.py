"""Processes, database and figures of a benchmark run.

Every bench command runs in two steps: the command the user typed re-executes itself (same pid, `execve`)
with the bench settings (config/settings/bench.py) pointed at a database of its own, then that process
creates the database, migrates it, starts the servers and workers it measures and removes everything
again. Everything listens on and talks to 127.0.0.1 only, and everything is bounded in time.

Children are started in their own process group (so a gunicorn master and its workers stop together) and
with PR_SET_PDEATHSIG, so they are killed by the kernel even if the bench itself is SIGKILLed."""

import contextlib
import ctypes
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from django.conf import settings

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"
DB_NAME_RE = re.compile(r"^layers_bench[a-z0-9_]{0,40}$")
INNER_FLAG = "LAYERS_BENCH_INNER"
OPTIONS_VAR = "LAYERS_BENCH_OPTIONS"


class BenchError(RuntimeError):
    pass


# --- Re-execution with the bench settings --------------------------------------------------------------


def arm_hard_limit(command: str, seconds: int) -> None:
    """Turn SIGALRM after `seconds`, and SIGTERM, into a BenchError, so the command's `finally` still stops
    its processes and drops its database. The caller disarms it with `signal.alarm(0)`."""

    def timeout(*_):
        raise BenchError(f"{command} hit its hard time limit")

    def terminated(*_):
        raise BenchError(f"{command} was terminated")

    signal.signal(signal.SIGALRM, timeout)
    signal.signal(signal.SIGTERM, terminated)
    signal.alarm(seconds)


def machine_line(info: dict) -> str:
    """One line describing the machine of a run (from machine())."""
    return (
        f"{info['nproc']} CPU ({info['cpu']}), {info['memory_gib']} GiB, Python {info['python']}, "
        f"PostgreSQL {info['postgresql']}, load {info['loadavg_1m_at_start']}"
    )


def is_inner() -> bool:
    return os.environ.get(INNER_FLAG) == "1" and settings.SETTINGS_MODULE == "config.settings.bench"


def reexec(command: str, options: dict, *, db_name: str, extra_env: dict[str, str] | None = None) -> None:
    """Replace this process by `manage.py <command>` running with the bench settings on `db_name`.
    The parsed options travel as JSON, so a command called through call_command re-executes the same way."""
    check_db_name(db_name)
    run = f"{os.getpid()}"
    env = {
        **os.environ,
        INNER_FLAG: "1",
        OPTIONS_VAR: json.dumps(options, default=str),
        "DJANGO_SETTINGS_MODULE": "config.settings.bench",
        "DATABASE_URL": db_url(db_name),
        "CELERY_BROKER_URL": REDIS_URL,
        "LAYERS_BENCH_REDIS_PREFIX": f"layers-bench-{run}:",
        "LAYERS_BENCH_QUEUE": f"layers-bench-{run}",
        "LAYERS_BENCH_DB": db_name,
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }
    sys.stdout.flush()
    sys.stderr.flush()
    manage = str(Path(settings.BASE_DIR) / "manage.py")
    os.execve(sys.executable, [sys.executable, manage, command], env)  # noqa: S606 - this interpreter, manage.py


def inner_options() -> dict:
    return json.loads(os.environ[OPTIONS_VAR])


# --- Database --------------------------------------------------------------------------------------------


def check_db_name(name: str) -> str:
    if not DB_NAME_RE.match(name):
        raise BenchError(f"bench database names must match {DB_NAME_RE.pattern} (got {name!r})")
    return name


def db_url(name: str) -> str:
    return f"postgres://{PG_USER}@{PG_HOST}:{PG_PORT}/{check_db_name(name)}"


def _maintenance() -> psycopg.Connection:
    return psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True)


def create_database(name: str) -> None:
    check_db_name(name)
    with _maintenance() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(name: str) -> None:
    from django.db import connections

    check_db_name(name)
    connections.close_all()
    with _maintenance() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def connect(name: str) -> psycopg.Connection:
    """A plain connection to bench database `name` (for statements measured without Django around them)."""
    return psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=check_db_name(name))


def clone_database(source: str, target: str) -> None:
    """`target` as an exact copy of `source` (rows, indexes, statistics), so two measurements start from the
    same data. PostgreSQL copies only a database nobody is connected to: Django's connections are closed
    first (they reconnect on next use)."""
    from django.db import connections

    check_db_name(source), check_db_name(target)
    connections.close_all()
    with _maintenance() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{target}" TEMPLATE "{source}"')


@contextlib.contextmanager
def use_database(name: str):
    """Point Django's default connection at bench database `name` for the block, then back."""
    from django.db import connections

    default = connections["default"]
    previous = default.settings_dict["NAME"]
    default.close()
    default.settings_dict["NAME"] = check_db_name(name)
    try:
        yield
    finally:
        default.close()
        default.settings_dict["NAME"] = previous


def analyze() -> None:
    """Refresh the planner's statistics of the bench database. Rows inserted in bulk just before a
    measurement are not in them yet (autovacuum analyzes within a minute or so on a live database), and a
    plan made for an empty table (a sort of the whole project instead of the newest-first index) would
    measure the missing statistics rather than the code."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def postgres_version() -> str:
    with _maintenance() as conn:
        return conn.execute("SHOW server_version").fetchone()[0]


def purge_redis_prefix(prefix: str) -> int:
    """Delete the broker keys of this run (they all carry the run's prefix)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        return len(keys)
    finally:
        client.close()


# --- Processes ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: the kernel SIGKILLs this child when the bench process dies, however it dies.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Processes:
    """The children of a bench run. Use as a context manager: every child is stopped on exit."""

    log_dir: Path
    children: dict[str, Child] = field(default_factory=dict)

    def __enter__(self) -> "Processes":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()

    def start(self, name: str, argv: Sequence[str], *, env: dict[str, str] | None = None) -> Child:
        if name in self.children:
            raise BenchError(f"{name} is already running")
        log = self.log_dir / f"{name}.log"
        handle = log.open("ab")
        try:
            proc = subprocess.Popen(  # noqa: S603 - argv built by the bench from fixed module names
                list(argv),
                cwd=settings.BASE_DIR,
                env={**os.environ, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # only the main thread starts children
            )
        finally:
            handle.close()
        child = Child(name=name, proc=proc, log=log)
        self.children[name] = child
        return child

    def stop(self, name: str, *, grace: float = 5.0) -> None:
        """SIGTERM the child's process group, SIGKILL it after `grace` seconds."""
        child = self.children.pop(name, None)
        if child is None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(child.pid, sig)
            except ProcessLookupError:
                break
            try:
                child.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # The group may outlive its leader (gunicorn workers): make sure nothing of it is left.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        for name in list(self.children):
            self.stop(name, grace=3.0)

    def check_alive(self) -> None:
        for child in self.children.values():
            if child.proc.poll() is not None:
                raise BenchError(f"{child.name} exited with {child.proc.returncode}:\n{child.tail()}")


def rss_bytes(pid: int) -> int:
    """Resident memory of one process (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def group_rss_bytes(pgid: int) -> int:
    """Resident memory of every process of a process group (a gunicorn master and its workers)."""
    return sum(rss_bytes(pid) for pid in group_pids(pgid))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent busy so far (all processes, all CPUs; /proc/stat)."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid:
                    pids.append(int(entry))
            except (ProcessLookupError, PermissionError):
                continue
    return pids


def database_backend_pids(name: str) -> list[int]:
    """PostgreSQL server processes serving connections to database `name` (same machine)."""
    with _maintenance() as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [check_db_name(name)]).fetchall()
    return [row[0] for row in rows]


class CpuMeter:
    """CPU time used by sets of processes between start() and stop(). Processes are found again at stop()
    (workers' and servers' pids, and the database's backends), so the figure covers every process that
    was alive at either end; a process that came and went in between is missed (none do in the benches,
    whose connections are persistent)."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]]):
        self.groups = groups
        self.before: dict[int, float] = {}

    def start(self) -> None:
        self.before = {pid: cpu_seconds(pid) for pids in self.groups.values() for pid in pids()}

    def stop(self) -> dict[str, float]:
        used = {}
        for name, pids in self.groups.items():
            used[name] = sum(max(0.0, cpu_seconds(pid) - self.before.get(pid, 0.0)) for pid in set(pids()))
        return used


def wait_until(condition: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")


def http_ok(url: str) -> bool:
    if not url.startswith("http://127.0.0.1:"):
        raise BenchError("the bench only talks to 127.0.0.1")
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:  # noqa: S310 - loopback only, checked above
            return response.status == 200
    except OSError:
        return False


def python_argv(*args: str) -> list[str]:
    return [sys.executable, *args]


# --- Figures ---------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
    return ordered[rank - 1]


def machine() -> dict:
    mem_kb = 0
    try:
        with open("/proc/meminfo") as meminfo:
            mem_kb = int(next(line for line in meminfo if line.startswith("MemTotal:")).split()[1])
    except (OSError, StopIteration):
        pass
    cpu = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "postgresql": postgres_version(),
        "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
    }


def fmt(value: float | None, unit: str = "", digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{unit}"
