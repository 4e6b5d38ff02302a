"""`manage.py bench_api`: latency and query count of the main partner endpoints in process next to a
trivial DRF view, then requests/s under gunicorn next to /healthz. See scheduling/bench/api.py for what
is measured and BENCHMARKS.md for the figures."""

import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

from django.core.management import call_command

from config.bench import harness
from config.bench.command import BenchCommand

QUICK = {"iterations": 10, "warmup": 2, "duration": 0.5, "posts": 60}


class Command(BenchCommand):
    quick = QUICK
    ranges = {
        "accounts": (1, 1000),
        "posts": (1, 100_000),
        "iterations": (1, 100_000),
        "warmup": (0, 10_000),
        "duration": (0.1, 120),
        "concurrency": (1, 256),
        "gunicorn_workers": (1, 32),
        "gunicorn_threads": (1, 256),
    }
    help = (
        "Benchmark the partner API: p50/p99 latency and query count of the main endpoints in process next to "
        "a trivial DRF view, then requests/s under gunicorn next to /healthz. Runs on a throw-away PostgreSQL "
        "database (127.0.0.1:5432); the load generator only talks to 127.0.0.1 and stops after --duration."
    )

    def add_bench_arguments(self, parser):
        parser.add_argument("--accounts", type=int, default=50, help="accounts in the listed project")
        parser.add_argument("--posts", type=int, default=500, help="scheduled posts in the listed project")
        parser.add_argument("--iterations", type=int, default=300, help="timed calls per endpoint in process")
        parser.add_argument("--warmup", type=int, default=30)
        parser.add_argument("--duration", type=float, default=8.0, help="seconds of load per endpoint")
        parser.add_argument("--concurrency", type=int, default=16, help="load generator connections")
        parser.add_argument("--gunicorn-workers", type=int, default=2)
        parser.add_argument("--gunicorn-threads", type=int, default=8)
        parser.add_argument("--no-load", action="store_true", help="in-process measurements only")

    def reexec(self, options):
        opts = self.plain_options(options)
        opts["port"] = harness.free_port()
        harness.reexec(
            "bench_api",
            opts,
            db_name=options["db_name"] or f"layers_bench_{os.getpid()}",
            extra_env={"LAYERS_BENCH_URLCONF": "scheduling.bench.urls", "LAYERS_CACHE_URL": harness.REDIS_URL},
        )

    def run(self, opts: dict) -> None:
        from scheduling.bench import api

        quiet, out = opts["json"], self.printer(opts)
        db = os.environ["LAYERS_BENCH_DB"]
        harness.arm_hard_limit("bench_api", int(600 + 8 * (opts["duration"] + 60)))
        log_dir = Path(tempfile.mkdtemp(prefix="layers-bench-api-"))
        ok = False
        try:
            started = time.monotonic()
            harness.create_database(db)
            call_command("migrate", verbosity=0, interactive=False)
            info = harness.machine()
            out(f"bench_api on {harness.machine_line(info)}")
            out(f"  database {db} created and migrated in {time.monotonic() - started:.1f} s")
            data = api.seed_api(accounts=opts["accounts"], small=5, posts=opts["posts"])
            out(f"  in process: {opts['iterations']} timed calls per endpoint after {opts['warmup']} warm-up calls")
            local = api.in_process(data, iterations=opts["iterations"], warmup=opts["warmup"])
            load = []
            if not opts["no_load"]:
                with harness.Processes(log_dir) as procs:
                    port = opts["port"]
                    procs.start(
                        "web",
                        harness.python_argv(
                            "-m",
                            "gunicorn",
                            "config.wsgi",
                            "--bind",
                            f"127.0.0.1:{port}",
                            "--worker-class",
                            "gthread",
                            "--workers",
                            str(opts["gunicorn_workers"]),
                            "--threads",
                            str(opts["gunicorn_threads"]),
                            "--log-level",
                            "warning",
                        ),
                    )
                    harness.wait_until(
                        lambda: harness.http_ok(f"http://127.0.0.1:{port}/healthz"), timeout=60, what="gunicorn"
                    )
                    out(
                        f"  under load: gunicorn gthread {opts['gunicorn_workers']}x{opts['gunicorn_threads']}, "
                        f"{opts['concurrency']} keep-alive connections, {opts['duration']:g} s per endpoint "
                        f"in {api.LOAD_ROUNDS} slices taken in turn"
                    )
                    load = api.under_load(
                        data, port=port, duration=opts["duration"], concurrency=opts["concurrency"], work_dir=log_dir
                    )
            ok = True
        finally:
            signal.alarm(0)
            harness.drop_database(db)
            if ok:
                shutil.rmtree(log_dir, ignore_errors=True)
            else:
                self.stderr.write(f"the server's log is in {log_dir}")
        report = {"machine": info, "in_process": api.as_dicts(local), "load": api.as_dicts(load)}
        floor = local[0]
        report["in_process_vs_floor"] = {row.name: row.p50_ms / floor.p50_ms for row in local[1:]}
        if load:
            health = load[0].rps
            report["load_vs_healthz"] = {row.name: row.rps / health for row in load[1:]}
        if quiet:
            self.stdout.write(json.dumps(report))
        else:
            self.stdout.write(_tables(report))


def _tables(report: dict) -> str:
    f = harness.fmt
    head = f"{'endpoint (in process)':<34}{'p50 ms':>9}{'p99 ms':>9}{'x floor':>9}{'queries':>9}"
    lines = ["", head, "-" * len(head)]
    ratios = report["in_process_vs_floor"]
    for row in report["in_process"]:
        ratio = ratios.get(row["name"])
        queries = f"{row['queries']}" + (f"-{row['queries_max']}" if row["queries_max"] != row["queries"] else "")
        lines.append(
            f"{row['name']:<34}{f(row['p50_ms'], '', 2):>9}{f(row['p99_ms'], '', 2):>9}"
            f"{(f'{ratio:.2f}' if ratio else '1.00'):>9}{queries:>9}"
        )
    if report["load"]:
        head = f"{'endpoint (gunicorn, loopback)':<34}{'req/s':>9}{'x healthz':>10}"
        head += f"{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
        lines += ["", head, "-" * len(head)]
        ratios = report.get("load_vs_healthz", {})
        for row in report["load"]:
            ratio = ratios.get(row["name"], 1.0)
            lines.append(
                f"{row['name']:<34}{row['rps']:>9.0f}{ratio:>10.2f}{f(row['p50_ms'], '', 1):>9}"
                f"{f(row['p99_ms'], '', 1):>9}{row['errors']:>8}"
            )
    return "\n".join(lines)
