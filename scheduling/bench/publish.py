"""`bench_publish`: a burst of posts due at one instant, published three ways on the same machine and data.

- **pipeline** — what production runs: Celery workers (threads pool) and Celery beat, whose
  `dispatch-due-posts` tick claims due rows in batches (FOR UPDATE SKIP LOCKED) and hands them to workers;
- **baseline** — the approach most Django teams would take: one task per post queued ahead with
  `eta=scheduledFor` (scheduling/bench/baseline_tasks.py), run by a worker as `celery worker` starts one
  without options (prefork pool, one child process per CPU);
- **baseline_threads** — the same ETA tasks on our workers (threads pool, the pipeline's concurrency): it
  separates what the pool buys from what the dispatch design buys;
- **floor** — the same number of threads doing only the claim query and the platform calls
  (scheduling/bench/floor.py).

The platform is the sandbox, served over real HTTP by its own gunicorn (gthread) with
LAYERS_SANDBOX_LATENCY_MS added to every API call. "Platform accepted" is the sandbox's own record of
the post (its Post row's created_at: TikTok's init call, Instagram's media_publish); the dispatch lag of
a post is that instant minus scheduledFor. A duplicate is a second sandbox post for one scheduled post
(matched by the unique caption); a lost post is one that is not `published` when the run ends."""

import os
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Max
from django.utils import timezone

from accounts.platforms.sandbox.models import Post as SandboxPost
from config.bench import harness
from scheduling.bench import seed
from scheduling.models import ScheduledPost

PREPARED_SEED_AHEAD = timedelta(hours=1)
SAMPLE_EVERY = 0.25  # seconds between memory samples
ETA_QUEUING_SECONDS = 0.005  # lead time per post for the baseline's apply_async calls
POLL_EVERY = 0.5  # seconds between progress queries
PREPARE_LIMIT = 600  # seconds at most to make a phase's Instagram containers ahead of the due time


@dataclass
class Options:
    posts: int
    accounts: int
    latency_ms: float
    workers: int
    threads: int
    platforms: list[str]
    phases: list[str]
    timeout: float
    sandbox_workers: int
    sandbox_threads: int
    lead: float
    prepare: bool = True


@dataclass
class PhaseResult:
    phase: str
    posts: int
    published: int
    lost: int
    duplicates: int
    drain_s: float | None
    posts_per_s: float | None
    lag_p50_s: float | None
    lag_p95_s: float | None
    lag_p99_s: float | None
    # Instagram's lag is what preparing containers ahead changes; TikTok's init call is the post itself.
    lag_by_platform: dict[str, dict[str, float | None]]
    peak_worker_rss_mib: float
    cpu_ms_per_post: dict[str, float]
    # Share of the machine's CPU time during the phase used by other programs (other test suites, ...).
    others_cpu_share: float
    timed_out: bool

    def as_dict(self) -> dict:
        return asdict(self)


class PublishBench:
    def __init__(self, *, options: Options, procs: harness.Processes, accounts: list, out):
        self.options = options
        self.procs = procs
        self.accounts = accounts
        self.out = out
        self.run_id = os.environ.get("LAYERS_BENCH_QUEUE", "layers-bench")

    # --- phases ----------------------------------------------------------------------------------------

    def pipeline(self) -> PhaseResult:
        workers = self._start_workers(
            "pipeline", processes=self.options.workers, pool="threads", concurrency=self.options.threads
        )
        self.procs.start(
            "pipeline-beat",
            harness.python_argv(
                "-m",
                "celery",
                "-A",
                "config",
                "beat",
                "-l",
                "warning",
                "--scheduler",
                "django_celery_beat.schedulers:DatabaseScheduler",
            ),
        )
        try:
            due, ids = self._seed("pipeline")
            return self._measure("pipeline", due, ids, workers, others=["pipeline-beat"])
        finally:
            self.procs.stop("pipeline-beat")
            for name in workers:
                self.procs.stop(name)

    def baseline(self) -> PhaseResult:
        # `celery -A config worker` with no options: one node, prefork, as many children as CPUs.
        return self._eta_phase("baseline", processes=1, pool="prefork", concurrency=os.cpu_count() or 1)

    def baseline_threads(self) -> PhaseResult:
        return self._eta_phase(
            "baseline_threads", processes=self.options.workers, pool="threads", concurrency=self.options.threads
        )

    def _eta_phase(self, phase: str, *, processes: int, pool: str, concurrency: int) -> PhaseResult:
        from scheduling.bench.baseline_tasks import publish_at_eta

        workers = self._start_workers(phase, processes=processes, pool=pool, concurrency=concurrency)
        try:
            # Every ETA task must be queued before the due time (a few ms each): a longer lead.
            due, ids = self._seed(phase, lead=self.options.lead + self.options.posts * ETA_QUEUING_SECONDS)
            started = time.monotonic()
            for post_id in ids:
                publish_at_eta.apply_async((post_id,), eta=due)
            self.out(f"  {phase}: {len(ids)} ETA tasks queued in {time.monotonic() - started:.1f} s")
            if timezone.now() > due:
                self.out(f"  {phase}: WARNING queuing ended after the due time; raise --lead")
            return self._measure(phase, due, ids, workers)
        finally:
            for name in workers:
                self.procs.stop(name)

    def floor(self) -> PhaseResult:
        names = []
        try:
            for n in range(self.options.workers):
                name = f"floor-{n}"
                self.procs.start(
                    name, harness.python_argv("-m", "scheduling.bench.floor", "--threads", str(self.options.threads))
                )
                names.append(name)
            harness.wait_until(
                lambda: all("floor ready" in self.procs.children[n].tail() for n in names),
                timeout=60,
                what="the floor workers",
            )
            due, ids = self._seed("floor")
            return self._measure("floor", due, ids, names)
        finally:
            for name in names:
                self.procs.stop(name)

    # --- plumbing --------------------------------------------------------------------------------------

    def _start_workers(self, phase: str, *, processes: int, pool: str, concurrency: int) -> list[str]:
        from config.celery import app

        names = []
        nodes = []
        for n in range(processes):
            name = f"{phase}-worker-{n}"
            node = f"{self.run_id}-{phase}-{n}@bench"
            self.procs.start(
                name,
                harness.python_argv(
                    "-m",
                    "celery",
                    "-A",
                    "config",
                    "worker",
                    "--pool",
                    pool,
                    "--concurrency",
                    str(concurrency),
                    "-l",
                    "warning",
                    "-n",
                    node,
                    "--without-mingle",
                    "--without-gossip",
                    "--without-heartbeat",
                    "-I",
                    "scheduling.bench.baseline_tasks",
                ),
            )
            names.append(name)
            nodes.append(node)

        def all_ready() -> bool:
            self.procs.check_alive()
            replies = app.control.ping(destination=nodes, timeout=0.5) or []
            return {node for reply in replies for node in reply} >= set(nodes)

        harness.wait_until(all_ready, timeout=90, what=f"{phase} workers", interval=0.5)
        return names

    def _seed(self, phase: str, *, lead: float | None = None) -> tuple[datetime, list[str]]:
        # Due a little in the future, so that every post exists (and, for the baseline, every ETA task is
        # queued) before the instant they are all due.
        lead = self.options.lead if lead is None else lead
        started = time.monotonic()
        # Seeded an hour ahead, out of the dispatcher's preparation window: the bench makes the Instagram
        # containers itself, for every variant alike, then brings the due instant to `lead` from now. That is
        # what a burst scheduled earlier than LAYERS_PREPARE_AHEAD looks like at its time, without waiting.
        ids = seed.seed_posts(
            accounts=self.accounts, count=self.options.posts, scheduled_for=timezone.now() + PREPARED_SEED_AHEAD,
            label=phase,
        )  # fmt: skip
        self.out(f"  {phase}: {len(ids)} posts seeded in {time.monotonic() - started:.1f} s")
        if self.options.prepare:
            self._prepare(phase, ids)
            # Made at least a processing time before the due instant, as LAYERS_PREPARE_AHEAD gives them.
            lead = max(lead, float(settings.LAYERS_SANDBOX_PUBLISH_DELAY_SECONDS))
        due = (timezone.now() + timedelta(seconds=lead)).replace(microsecond=0)
        # Every post is marked taken for preparation (prepared or not), so no dispatcher prepares any later.
        ScheduledPost.objects.filter(pk__in=ids).update(
            scheduled_for=due, due_at=due, prepare_claimed_at=timezone.now()
        )
        harness.analyze()
        self.out(f"  {phase}: due {due:%H:%M:%S}")
        return due, ids

    def _prepare(self, phase: str, ids: list[str]) -> None:
        """services.post_prepare for the phase's Instagram posts, on as many threads as the publishers have."""
        from django.db import connection

        from scheduling import services

        todo = list(
            ScheduledPost.objects.filter(pk__in=ids, placement__in=services.INSTAGRAM_PLACEMENT.values())
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        threads = self.options.workers * self.options.threads
        outcomes: list[str] = []
        deadline = time.monotonic() + PREPARE_LIMIT

        def work(share: list[str]) -> None:
            try:
                for post_id in share:
                    if time.monotonic() > deadline:
                        return
                    outcomes.append(services.post_prepare(post_id=post_id))
            finally:
                connection.close()  # this thread's own connection

        started = time.monotonic()
        workers = [threading.Thread(target=work, args=(todo[n::threads],), daemon=True) for n in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        counts = dict(Counter(outcomes))
        self.out(
            f"  {phase}: {len(todo)} Instagram posts prepared ahead in {time.monotonic() - started:.1f} s {counts}"
        )

    def _measure(
        self, phase: str, due: datetime, ids: list[str], worker_names: list[str], others: list[str] = ()
    ) -> PhaseResult:
        n = len(ids)
        worker_pgids = [self.procs.children[name].pid for name in worker_names]
        publisher_pgids = worker_pgids + [self.procs.children[name].pid for name in others]
        sandbox_pgid = self.procs.children["sandbox"].pid
        db = os.environ["LAYERS_BENCH_DB"]
        cpu = harness.CpuMeter(
            {
                "publisher": lambda: [pid for pgid in publisher_pgids for pid in harness.group_pids(pgid)],
                "sandbox": lambda: harness.group_pids(sandbox_pgid),
                "postgres": lambda: harness.database_backend_pids(db),
            }
        )
        cpu.start()
        busy_before, started = harness.machine_busy_seconds(), time.monotonic()
        deadline = time.monotonic() + max(0.0, (due - timezone.now()).total_seconds()) + self.options.timeout
        peak = 0
        next_poll = 0.0
        last_report = time.monotonic()
        timed_out = False
        rows = ScheduledPost.objects.filter(project_id=self.accounts[0].project_id, scheduled_for=due)
        while True:
            self.procs.check_alive()
            peak = max(peak, sum(harness.group_rss_bytes(pgid) for pgid in worker_pgids))
            now = time.monotonic()
            if now >= next_poll:
                next_poll = now + POLL_EVERY
                counts = dict(rows.values_list("status").annotate(n=Count("pk")).order_by())
                terminal = counts.get("published", 0) + counts.get("failed", 0) + counts.get("canceled", 0)
                if now - last_report >= 10:
                    last_report = now
                    self.out(f"  {phase}: {counts}")
                if terminal >= n:
                    break
            if now >= deadline:
                timed_out = True
                self.out(f"  {phase}: TIMED OUT after {self.options.timeout:.0f} s")
                break
            time.sleep(SAMPLE_EVERY)
        cpu_used = cpu.stop()
        busy = harness.machine_busy_seconds() - busy_before
        capacity = (time.monotonic() - started) * (os.cpu_count() or 1)
        others = max(0.0, busy - sum(cpu_used.values())) / capacity if capacity else 0.0
        published = rows.filter(status=ScheduledPost.Status.PUBLISHED)
        published_count = published.count()
        last = published.aggregate(last=Max("published_at"))["last"]
        drain = (last - due).total_seconds() if last else None
        accepted: dict[str, list[datetime]] = {}
        platform_of: dict[str, str] = {}
        label = seed.caption_of(phase, 0).rsplit("#", 1)[0]
        for caption, created_at, platform in SandboxPost.objects.filter(caption__startswith=label).values_list(
            "caption", "created_at", "platform"
        ):
            accepted.setdefault(caption, []).append(created_at)
            platform_of[caption] = platform
        lag_of = {caption: (min(times) - due).total_seconds() for caption, times in accepted.items()}
        lags = list(lag_of.values())
        by_platform: dict[str, list[float]] = {}
        for caption, lag in lag_of.items():
            by_platform.setdefault(platform_of[caption], []).append(lag)
        duplicates = sum(len(times) - 1 for times in accepted.values())
        return PhaseResult(
            phase=phase,
            posts=n,
            published=published_count,
            lost=n - published_count,
            duplicates=duplicates,
            drain_s=drain,
            posts_per_s=(published_count / drain) if drain else None,
            lag_p50_s=harness.percentile(lags, 50),
            lag_p95_s=harness.percentile(lags, 95),
            lag_p99_s=harness.percentile(lags, 99),
            lag_by_platform={
                platform: {"p50": harness.percentile(values, 50), "p99": harness.percentile(values, 99)}
                for platform, values in sorted(by_platform.items())
            },
            peak_worker_rss_mib=peak / 1024 / 1024,
            cpu_ms_per_post={name: 1000 * seconds / n for name, seconds in cpu_used.items()},
            others_cpu_share=others,
            timed_out=timed_out,
        )
