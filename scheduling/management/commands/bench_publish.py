"""`manage.py bench_publish`: publishing throughput and dispatch lag of a burst, next to an ETA baseline and
a floor. See scheduling/bench/publish.py for what is measured and BENCHMARKS.md for the figures."""

import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

from django.core.management import call_command
from django.core.management.base import CommandError

from config.bench import harness
from config.bench.command import BenchCommand
from scheduling.bench.publish import PREPARE_LIMIT

PHASES = ("pipeline", "baseline", "baseline_threads", "floor")
QUICK = {"posts": 24, "accounts": 6, "latency_ms": 10.0, "workers": 1, "threads": 4, "timeout": 60.0, "lead": 1.0}


class Command(BenchCommand):
    quick = QUICK
    ranges = {
        "posts": (1, 100_000),
        "accounts": (1, 10_000),
        "latency_ms": (0, 10_000),  # half the platform timeout: beyond it the bench measures timeouts
        "workers": (1, 32),
        "threads": (1, 256),
        "timeout": (1, 7200),
        "lead": (0, 3600),
        "publish_delay": (0, 600),
        "sandbox_workers": (1, 32),
        "sandbox_threads": (1, 256),
    }
    help = (
        "Benchmark publishing: N posts due at one instant across M accounts, sandbox latency L ms over real "
        "HTTP, real Celery workers and beat, against ETA-per-post baselines (a default prefork worker, and our "
        "threads pool) and a minimal floor. Runs on "
        "a throw-away PostgreSQL database (127.0.0.1:5432) and Redis (127.0.0.1:6379); loopback only."
    )

    def add_bench_arguments(self, parser):
        parser.add_argument("--posts", type=int, default=5000, help="N: posts due at the same instant")
        parser.add_argument("--accounts", type=int, default=500, help="M: accounts the posts are spread over")
        parser.add_argument("--latency-ms", type=float, default=50.0, help="L: sandbox latency per API call")
        parser.add_argument("--workers", type=int, default=2, help="worker processes (each variant)")
        parser.add_argument("--threads", type=int, default=12, help="threads per worker process")
        parser.add_argument("--platforms", default="tiktok,instagram", help="accounts' platforms, in turn")
        parser.add_argument(
            "--phases", default=",".join(PHASES), help="which of pipeline,baseline,baseline_threads,floor to run"
        )
        parser.add_argument("--timeout", type=float, default=900.0, help="hard limit per phase, seconds")
        parser.add_argument("--lead", type=float, default=None, help="seconds between seeding and the due time")
        parser.add_argument(
            "--publish-delay",
            type=float,
            default=0.0,
            help="sandbox processing time of a post, seconds (0: published at the first status check)",
        )
        parser.add_argument("--sandbox-workers", type=int, default=2)
        parser.add_argument("--sandbox-threads", type=int, default=16)
        parser.add_argument(
            "--no-prepare",
            action="store_true",
            help="make Instagram containers at the due time, as if posts were scheduled less than "
            "LAYERS_PREPARE_AHEAD before it (default: made ahead, as production does for posts scheduled earlier)",
        )
        parser.add_argument("--keep-logs", action="store_true", help="keep the servers' and workers' logs")

    # --- outer: pick the database and the port, then become the bench process -----------------------

    def reexec(self, options: dict) -> None:
        opts = self.plain_options(options)
        platforms = [p.strip() for p in opts["platforms"].split(",") if p.strip()]
        phases = [p.strip() for p in opts["phases"].split(",") if p.strip()]
        if not platforms or set(platforms) - {"tiktok", "instagram"}:
            raise CommandError("--platforms takes tiktok and/or instagram")
        if not phases or set(phases) - set(PHASES):
            raise CommandError(f"--phases takes some of {', '.join(PHASES)}")
        opts["platforms"], opts["phases"] = platforms, [p for p in PHASES if p in phases]
        if opts["lead"] is None:
            opts["lead"] = 4.0 + opts["posts"] / 1000
        port = harness.free_port()
        opts["sandbox_port"] = port
        harness.reexec(
            "bench_publish",
            opts,
            db_name=options["db_name"] or f"layers_bench_{os.getpid()}",
            extra_env={
                "LAYERS_PUBLIC_URL": f"http://127.0.0.1:{port}",
                "LAYERS_SANDBOX_LATENCY_MS": str(opts["latency_ms"]),
                "LAYERS_SANDBOX_PUBLISH_DELAY_SECONDS": str(opts["publish_delay"]),
                "LAYERS_PLATFORM_TRANSPORT": "http",
            },
        )

    # --- inner: the bench itself ----------------------------------------------------------------------

    def run(self, opts: dict) -> None:
        from scheduling.bench import seed
        from scheduling.bench.publish import Options, PublishBench

        quiet, out = opts["json"], self.printer(opts)

        db = os.environ["LAYERS_BENCH_DB"]
        phase_count = len(opts["phases"])
        hard_limit = int(
            180 + phase_count * (opts["timeout"] + opts["lead"] + opts["publish_delay"] + 120 + PREPARE_LIMIT)
        )
        harness.arm_hard_limit("bench_publish", hard_limit)
        log_dir = Path(tempfile.mkdtemp(prefix="layers-bench-"))
        ok = False
        try:
            started = time.monotonic()
            harness.create_database(db)
            call_command("migrate", verbosity=0, interactive=False)
            info = harness.machine()
            out(f"bench_publish on {harness.machine_line(info)}")
            out(f"  database {db} created and migrated in {time.monotonic() - started:.1f} s")
            options = Options(
                posts=opts["posts"],
                accounts=opts["accounts"],
                latency_ms=opts["latency_ms"],
                workers=opts["workers"],
                threads=opts["threads"],
                platforms=opts["platforms"],
                phases=opts["phases"],
                timeout=opts["timeout"],
                sandbox_workers=opts["sandbox_workers"],
                sandbox_threads=opts["sandbox_threads"],
                lead=opts["lead"],
                prepare=not opts["no_prepare"],
            )
            with harness.Processes(log_dir) as procs:
                url = f"http://127.0.0.1:{opts['sandbox_port']}"
                procs.start(
                    "sandbox",
                    harness.python_argv(
                        "-m",
                        "gunicorn",
                        "config.wsgi",
                        "--bind",
                        f"127.0.0.1:{opts['sandbox_port']}",
                        "--worker-class",
                        "gthread",
                        "--workers",
                        str(options.sandbox_workers),
                        "--threads",
                        str(options.sandbox_threads),
                        "--keep-alive",
                        "30",
                        "--backlog",
                        "2048",
                        "--graceful-timeout",
                        "3",
                        "--log-level",
                        "warning",
                    ),
                )
                harness.wait_until(lambda: harness.http_ok(f"{url}/healthz"), timeout=60, what="the sandbox server")
                organization, project = seed.seed_tenant("Bench publishing")
                accounts = seed.seed_accounts(
                    organization=organization,
                    project=project,
                    count=options.accounts,
                    platforms=options.platforms,
                    prefix="bench.",
                )
                out(
                    f"  {options.posts} posts due at one instant on {options.accounts} accounts "
                    f"({', '.join(options.platforms)}), sandbox latency {options.latency_ms:g} ms per call over "
                    f"HTTP (gunicorn gthread {options.sandbox_workers}x{options.sandbox_threads} at {url}), "
                    f"publish processing {opts['publish_delay']:g} s"
                )
                out(
                    f"  pipeline, baseline_threads and floor: {options.workers} processes x {options.threads} threads; "
                    f"celery worker --pool threads for the first two (+ beat for the pipeline); "
                    f"baseline: one celery worker as its defaults start it (prefork, {os.cpu_count()} children)"
                )
                bench = PublishBench(options=options, procs=procs, accounts=accounts, out=out)
                results = [getattr(bench, phase)() for phase in options.phases]
            ok = True
        finally:
            signal.alarm(0)
            harness.drop_database(db)
            if ok and not opts["keep_logs"]:
                shutil.rmtree(log_dir, ignore_errors=True)
            else:
                self.stderr.write(f"the servers' and workers' logs are in {log_dir}")
        report = _report(options, info, results)
        if quiet:
            self.stdout.write(json.dumps(report))
        else:
            self.stdout.write(_table(report))


def _report(options, info: dict, results: list) -> dict:
    by_phase = {r.phase: r for r in results}
    # What the machine could sustain if nothing but this variant ran on it: its CPUs over the CPU time one
    # post costs (publisher, sandbox and database together). Unlike posts/s, it does not move with the load
    # other programs put on the machine during the run.
    capacity = {
        r.phase: info["nproc"] * 1000 / total for r in results if (total := sum(r.cpu_ms_per_post.values())) > 0
    }
    ratios, capacity_ratios = {}, {}
    pipeline = by_phase.get("pipeline")
    for other in ("floor", "baseline", "baseline_threads"):
        if pipeline and other in by_phase and pipeline.posts_per_s and by_phase[other].posts_per_s:
            ratios[f"pipeline_vs_{other}"] = pipeline.posts_per_s / by_phase[other].posts_per_s
        if "pipeline" in capacity and other in capacity:
            capacity_ratios[f"pipeline_vs_{other}"] = capacity["pipeline"] / capacity[other]
    return {
        "machine": info,
        "options": {
            "posts": options.posts,
            "accounts": options.accounts,
            "latency_ms": options.latency_ms,
            "workers": options.workers,
            "threads": options.threads,
            "platforms": options.platforms,
        },
        "phases": [r.as_dict() for r in results],
        "ratios": ratios,
        "cpu_capacity_posts_per_s": capacity,
        "cpu_capacity_ratios": capacity_ratios,
        "duplicates": sum(r.duplicates for r in results),
        "lost": sum(r.lost for r in results),
    }


def _table(report: dict) -> str:
    f = harness.fmt
    head = (
        f"{'variant':<18}{'posts':>7}{'published':>11}{'lost':>6}{'dupes':>7}{'drain s':>9}{'posts/s':>9}"
        f"{'lag p50':>9}{'p95':>8}{'p99':>8}{'peak RSS MiB':>14}"
    )
    lines = ["", head, "-" * len(head)]
    for r in report["phases"]:
        lines.append(
            f"{r['phase']:<18}{r['posts']:>7}{r['published']:>11}{r['lost']:>6}{r['duplicates']:>7}"
            f"{f(r['drain_s']):>9}{f(r['posts_per_s']):>9}{f(r['lag_p50_s'], 's', 2):>9}"
            f"{f(r['lag_p95_s'], 's', 2):>8}{f(r['lag_p99_s'], 's', 2):>8}{r['peak_worker_rss_mib']:>14.0f}"
            + ("  TIMED OUT" if r["timed_out"] else "")
        )
    lines.append("")
    lines.append(
        "CPU per post (ms): "
        + "; ".join(
            f"{r['phase']}: " + ", ".join(f"{k} {v:.1f}" for k, v in r["cpu_ms_per_post"].items())
            for r in report["phases"]
        )
    )
    lines.append(
        "Dispatch lag p50 / p99 by platform: "
        + "; ".join(
            f"{r['phase']}: "
            + ", ".join(f"{k} {f(v['p50'], 's', 2)} / {f(v['p99'], 's', 2)}" for k, v in r["lag_by_platform"].items())
            for r in report["phases"]
        )
    )
    lines.append(
        "CPU used by other programs during each phase: "
        + ", ".join(f"{r['phase']} {100 * r['others_cpu_share']:.0f}%" for r in report["phases"])
    )
    lines.append(
        "CPU capacity (posts/s if only this variant ran on the machine): "
        + ", ".join(f"{phase} {value:.1f}" for phase, value in report["cpu_capacity_posts_per_s"].items())
    )
    for key, value in report["ratios"].items():
        by_cpu = report["cpu_capacity_ratios"].get(key)
        lines.append(
            f"{key.replace('_', ' ')}: {value:.2f}x throughput"
            + (f" ({by_cpu:.2f}x by CPU capacity)" if by_cpu else "")
        )
    for r in report["phases"]:
        lines.append(f"{r['phase']}: {r['duplicates']} duplicates, {r['lost']} lost")
    return "\n".join(lines)
