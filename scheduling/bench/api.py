"""`bench_api`: latency and query count of the main partner endpoints in process, next to a trivial DRF
view (the floor), then requests/s of the same endpoints under gunicorn next to /healthz.

The trivial view is an ApiView like every partner endpoint — API-key authentication, throttling, the
error envelope — that returns a constant: what any endpoint costs before doing its own work. In process,
requests go through Django's test client (the whole middleware stack, no sockets); the load run sends
real HTTP over loopback with config/bench/loadgen.py."""

import json
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass
from datetime import timedelta

from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext, override_settings
from django.utils import timezone
from rest_framework.response import Response

from config.api.views import ApiView
from config.bench import harness
from scheduling.bench import seed

RETURN_DOMAIN = "app.bench.test"


class TrivialApi(ApiView):
    """The floor: authentication, throttling and rendering, no work."""

    def get(self, request):
        return Response({"ok": True})


@dataclass
class Endpoint:
    name: str
    method: str
    path: str
    body: dict | None = None
    expect: int = 200


@dataclass
class InProcess:
    name: str
    p50_ms: float
    p99_ms: float
    queries: int
    queries_max: int


@dataclass
class Load:
    name: str
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    requests: int
    errors: int


@dataclass
class ApiData:
    raw_key: str
    endpoints: list[Endpoint]
    small_list: Endpoint


def seed_api(*, accounts: int, small: int, posts: int) -> ApiData:
    """One organization: a project with `accounts` accounts and `posts` scheduled posts, a second project
    with `small` accounts (the same list with fewer rows, for the constant query count), an API key."""
    from accounts import services as account_services

    organization, project = seed.seed_tenant("Bench API")
    other = account_services.project_create(organization=organization, name="Bench API small project")
    many = seed.seed_accounts(
        organization=organization, project=project, count=accounts, platforms=["tiktok", "instagram"], prefix="api."
    )
    seed.seed_accounts(
        organization=organization, project=other, count=small, platforms=["tiktok", "instagram"], prefix="apismall."
    )
    seed.seed_posts(accounts=many, count=posts, scheduled_for=timezone.now() + timedelta(days=1), label="api")
    _, raw = account_services.api_key_create(organization=organization, return_domains=[RETURN_DOMAIN], name="bench")
    from scheduling import services as scheduling_services

    container = scheduling_services.container_create(
        project=project, media_type="video", media_urls=["https://cdn.bench.test/api.mp4"], caption="bench api"
    )
    targets = [{"socialAccountId": a.pk, "mode": "publish"} for a in many[:50]]
    when = (timezone.now() + timedelta(days=2)).isoformat().replace("+00:00", "Z")
    return ApiData(
        raw_key=raw,
        endpoints=[
            Endpoint("trivial DRF view (floor)", "GET", "/bench/trivial"),
            Endpoint(
                f"list social accounts ({min(accounts, 50)})",
                "GET",
                f"/v1/projects/{project.pk}/social-accounts?limit=50",
            ),
            Endpoint(
                f"schedule {len(targets)} targets",
                "POST",
                f"/v1/content/{container.pk}/schedule",
                {"targets": targets, "scheduledFor": when},
                201,
            ),
            Endpoint(
                "oauth-url",
                "POST",
                f"/v1/projects/{project.pk}/social/oauth-url",
                {"platform": "tiktok", "returnUrl": f"https://{RETURN_DOMAIN}/connected"},
            ),
            Endpoint("list scheduled posts (50)", "GET", f"/v1/projects/{project.pk}/scheduled-posts?limit=50"),
        ],
        small_list=Endpoint(f"list social accounts ({small})", "GET", f"/v1/projects/{other.pk}/social-accounts"),
    )


def _call(client: Client, endpoint: Endpoint):
    if endpoint.method == "GET":
        response = client.get(endpoint.path)
    else:
        response = client.post(endpoint.path, json.dumps(endpoint.body), content_type="application/json")
    if response.status_code != endpoint.expect:
        raise harness.BenchError(
            f"{endpoint.method} {endpoint.path} answered {response.status_code}: {response.content[:300]!r}"
        )
    return response


# Statistics are refreshed every this many timed rounds, as autovacuum would on a live database: the
# schedule endpoint adds 50 posts per call to the project whose posts are listed.
ANALYZE_EVERY = 50


def in_process(data: ApiData, *, iterations: int, warmup: int) -> list[InProcess]:
    """p50 / p99 latency over `iterations` calls after `warmup`, then the query count of a few more.

    The endpoints are called in turn, one call each per round, rather than one endpoint after the other:
    every endpoint is then timed under the same conditions as the floor, so a machine that slows down or
    speeds up during the run (other programs, CPU frequency, a neighbour on shared cores) moves all of them
    together instead of skewing the ratios."""
    endpoints = [*data.endpoints, data.small_list]
    timings: dict[str, list[float]] = {endpoint.name: [] for endpoint in endpoints}
    with override_settings(ROOT_URLCONF="scheduling.bench.urls"):
        client = Client(HTTP_AUTHORIZATION=f"Bearer {data.raw_key}", raise_request_exception=True)
        for _ in range(warmup):
            for endpoint in endpoints:
                _call(client, endpoint)
        for n in range(iterations):
            if n % ANALYZE_EVERY == 0:
                harness.analyze()
            for endpoint in endpoints:
                started = time.perf_counter()
                _call(client, endpoint)
                timings[endpoint.name].append((time.perf_counter() - started) * 1000)
        results = []
        for endpoint in endpoints:
            counts = []
            for _ in range(5):
                with CaptureQueriesContext(connection) as queries:
                    _call(client, endpoint)
                counts.append(len(queries.captured_queries))
            results.append(
                InProcess(
                    name=endpoint.name,
                    p50_ms=harness.percentile(timings[endpoint.name], 50),
                    p99_ms=harness.percentile(timings[endpoint.name], 99),
                    queries=int(statistics.median(counts)),
                    queries_max=max(counts),
                )
            )
    return results


# The load run's time per endpoint is cut into this many slices, taken in turn (/healthz, each endpoint, then
# again), for the reason the in-process calls are made in turn: a machine whose speed drifts during the run
# then moves every figure alike instead of skewing the ratios to /healthz.
LOAD_ROUNDS = 4


def under_load(data: ApiData, *, port: int, duration: float, concurrency: int, work_dir) -> list[Load]:
    """Requests/s of /healthz and of each endpoint, `duration` seconds each in LOAD_ROUNDS slices."""
    runs = [Endpoint("/healthz", "GET", "/healthz"), *data.endpoints]
    key_file = work_dir / "key.txt"
    key_file.write_text(data.raw_key)
    slice_seconds = duration / LOAD_ROUNDS
    totals = {endpoint.name: {"requests": 0, "errors": 0, "seconds": 0.0, "latencies": []} for endpoint in runs}
    for _ in range(LOAD_ROUNDS):
        harness.analyze()
        for endpoint in runs:
            answer = _load(endpoint, port=port, seconds=slice_seconds, concurrency=concurrency, key_file=key_file)
            total = totals[endpoint.name]
            for field_name in ("requests", "errors", "seconds"):
                total[field_name] += answer[field_name]
            total["latencies"] += answer["latencies_ms"]
    return [
        Load(
            name=name,
            rps=total["requests"] / total["seconds"] if total["seconds"] else 0.0,
            p50_ms=harness.percentile(total["latencies"], 50),
            p99_ms=harness.percentile(total["latencies"], 99),
            requests=total["requests"],
            errors=total["errors"],
        )
        for name, total in totals.items()
    ]


def _load(endpoint: Endpoint, *, port: int, seconds: float, concurrency: int, key_file) -> dict:
    """One closed-loop load run of `endpoint` by the load generator (a process of its own)."""
    argv = harness.python_argv(
        "-m",
        "config.bench.loadgen",
        "--port",
        str(port),
        "--path",
        endpoint.path,
        "--method",
        endpoint.method,
        "--duration",
        str(seconds),
        "--concurrency",
        str(concurrency),
        "--latencies",
    )
    if endpoint.path != "/healthz":
        argv += ["--key-file", str(key_file)]
    if endpoint.body is not None:
        argv += ["--body", json.dumps(endpoint.body)]
    finished = subprocess.run(  # noqa: S603 - our own interpreter and module, loopback only
        argv, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    if finished.returncode != 0:
        raise harness.BenchError(f"load generator failed: {finished.stderr[-2000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def as_dicts(rows) -> list[dict]:
    return [asdict(row) for row in rows]
