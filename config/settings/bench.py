"""Benchmarks (`manage.py bench_publish`, `manage.py bench_api`, see BENCHMARKS.md).

The commands re-execute themselves, and start every server and worker they measure, with these settings
and a throw-away PostgreSQL database of their own. Compared with dev: no debug (debug keeps every query in
memory), quiet logs, a Redis broker whose keys carry a per-run prefix (runs never share a queue), and the
sandbox's simulated quotas lifted, because the bench measures the publishing pipeline, not the sandbox's
per-minute and per-day limits. The sandbox's latency comes from LAYERS_SANDBOX_LATENCY_MS."""

from .base import *  # noqa: F403
from .base import (
    CACHE_URL,
    CACHES,
    LAYERS_SANDBOX_TIKTOK_RATE_LIMITS,
    SANDBOX_COUNT_MOST,
    SANDBOX_DELAY_MOST,
    broker_timeouts,
    database,
    env,
    seconds,
)

DEBUG = False
# Required: the bench never runs on SQLite (the claim needs FOR UPDATE SKIP LOCKED, workers need a server).
DATABASES = {"default": database(env.str("DATABASE_URL"))}

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="redis://127.0.0.1:6379/0")
CELERY_BROKER_TRANSPORT_OPTIONS = {
    **broker_timeouts(CELERY_BROKER_URL),
    "global_keyprefix": env.str("LAYERS_BENCH_REDIS_PREFIX", default="layers-bench:"),
}
CELERY_TASK_DEFAULT_QUEUE = env.str("LAYERS_BENCH_QUEUE", default="layers-bench")
# Every task on the bench's own queue, which its workers consume (the webhook queue would have none).
CELERY_TASK_ROUTES = {}
# bench_api serves the API as it is deployed: its per-key budget (and the per-IP limits) counting in Redis
# (LAYERS_CACHE_URL, which bench_api sets), so its figures include those round trips. bench_publish keeps the
# per-process cache: only the sandbox's per-IP limit would count there, and the sandbox stands in for a platform.
if CACHE_URL:
    CACHES = {
        "default": {**CACHES["default"], "KEY_PREFIX": CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"] + "cache"}
    }

UNLIMITED = SANDBOX_COUNT_MOST
LAYERS_SANDBOX_TIKTOK_RATE_LIMITS = dict.fromkeys(LAYERS_SANDBOX_TIKTOK_RATE_LIMITS, UNLIMITED)
LAYERS_SANDBOX_TIKTOK_DAILY_POST_CAP = UNLIMITED
LAYERS_SANDBOX_TIKTOK_PENDING_DRAFT_CAP = UNLIMITED
LAYERS_SANDBOX_INSTAGRAM_QUOTA_TOTAL = UNLIMITED
LAYERS_SANDBOX_PUBLISH_DELAY_SECONDS = seconds(
    "LAYERS_SANDBOX_PUBLISH_DELAY_SECONDS", default=0.0, zero=True, most=SANDBOX_DELAY_MOST
)
LAYERS_SANDBOX_TIKTOK_MODERATION_SECONDS = seconds(
    "LAYERS_SANDBOX_TIKTOK_MODERATION_SECONDS", default=0.0, zero=True, most=SANDBOX_DELAY_MOST
)
# The sandbox's per-client-IP budget (config/ratelimit.py): every bench call comes from 127.0.0.1.
LAYERS_SANDBOX_RATE = f"{UNLIMITED}/min"
# Never reached: bench_api's load run sends hundreds of requests a second with one key. The throttle still
# counts every request (config/api/throttling.py), as in production.
LAYERS_API_RATE = f"{UNLIMITED}/min"
# bench_api serves the app plus a trivial DRF view (its floor) from scheduling/bench/urls.py.
ROOT_URLCONF = env.str("LAYERS_BENCH_URLCONF", default="config.urls")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
