"""Per-client-IP request budgets for the unauthenticated surfaces: the OAuth callback (a browser page the
platforms redirect to; each attempt costs a token exchange with the platform) and the platform sandbox
(dev and demo only). The partner API has its own per-key budget (config/api/throttling.py).

A fixed window in the default cache (Redis when LAYERS_CACHE_URL is set, so the budget holds across
processes; per process otherwise): simple, and a client past the budget waits for the next window.

When Redis cannot be reached (down, restarting, timing out), every API request used to fail with a 500: the
budgets are a guard, not the service, so each process then counts in its own memory, as `make run` does
without Redis, and tries Redis again config.cache.REDIS_RETRY_SECONDS later (the memory and the clock are
config.cache's, shared with the default cache). During an outage a client can get up to the
budget once per process, and the window that sees Redis return starts its count afresh there."""

import logging
import math
import secrets
import time
from contextlib import contextmanager
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.http import JsonResponse
from django.shortcuts import render
from redis.exceptions import RedisError

from config.cache import FALLBACK, redis_failed, redis_usable
from config.rates import parse_rate

log = logging.getLogger(__name__)


def client_ip(request) -> str:
    """The client's address. Behind LAYERS_NUM_PROXIES trusted proxies it is the address the outermost
    trusted proxy saw (taken from the right of X-Forwarded-For: entries further left are client-supplied)."""
    proxies = settings.LAYERS_NUM_PROXIES
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if proxies and forwarded:
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if hops:
            return hops[-min(proxies, len(hops))]
    return request.META.get("REMOTE_ADDR", "") or "unknown"


@dataclass(frozen=True)
class Budget:
    """Where one client stands in its window after a request was counted: the window's `limit`, the requests
    it has `remaining`, and the whole seconds until the window `reset`s (at least 1)."""

    limit: int
    remaining: int
    reset: int

    @property
    def exceeded(self) -> bool:
        return self.remaining < 0


def take(scope: str, ident: str, rate: str, *, now: float | None = None) -> Budget:
    """Count one request of `ident` against `rate` in the current window."""
    limit, period = parse_rate(rate)
    now = time.time() if now is None else now
    window = int(now // period)
    count = _count(f"ratelimit:{scope}:{ident}:{window}", ttl=period + 1)
    return Budget(limit=limit, remaining=limit - count, reset=max(1, math.ceil((window + 1) * period - now)))


def hit(scope: str, ident: str, rate: str, *, now: float | None = None) -> int | None:
    """Count one request of `ident` against `rate` in the current window; the seconds until the next
    window when it is over budget, else None."""
    budget = take(scope, ident, rate, now=now)
    return budget.reset if budget.exceeded else None


@contextmanager
def one_at_a_time(scope: str, ident: str, *, ttl: int):
    """Yields whether this caller is the only one of `ident` inside the block (in the default cache: across
    processes with Redis, per process without). The mark lasts `ttl` seconds at most, so a process that
    dies inside the block holds no one out for longer."""
    key, token = f"exclusive:{scope}:{ident}", secrets.token_hex(8)
    backend = caches["default"]
    alone = bool(backend.add(key, token, timeout=ttl))
    try:
        yield alone
    finally:
        if alone and backend.get(key) == token:  # not another caller's, taken after ours expired
            backend.delete(key)


def _count(key: str, *, ttl: int) -> int:
    """Add one to the counter `key` (created with `ttl` seconds to live) and return its new value, atomically."""
    backend = caches["default"]
    if isinstance(backend, RedisCache):
        if redis_usable():
            try:
                return _count_in_redis(backend, key, ttl=ttl)
            except RedisError as exc:
                redis_failed(exc, "rate-limit counters")
        backend = FALLBACK
    backend.add(key, 0, timeout=ttl)
    try:
        return backend.incr(key)
    except ValueError:  # evicted between add and incr
        backend.set(key, 1, timeout=ttl)
        return 1


def _count_in_redis(backend: RedisCache, key: str, *, ttl: int) -> int:
    # Every partner API request passes here: one round trip (a MULTI/EXEC of SET NX and INCR) instead of
    # the three that cache.add and cache.incr take (incr checks EXISTS first).
    key = backend.make_and_validate_key(key)
    with _writer(backend).pipeline(transaction=True) as pipe:
        pipe.set(key, 0, ex=ttl, nx=True)
        pipe.incr(key)
        return pipe.execute()[1]


def _writer(backend: RedisCache):
    """The Redis client of the cache's write pool, built once per cache instance (Django's `get_client`
    builds a new `redis.Redis` on every call: about 6 % of a trivial API request's time). Writes always go to
    the first server, so one client serves every key."""
    cache_client = backend._cache
    client = getattr(cache_client, "layers_writer", None)
    if client is None:
        client = cache_client.layers_writer = cache_client.get_client(write=True)
    return client


def _callback_page(request, retry_after: int):
    response = render(
        request,
        "oauth/error.html",
        {"reason": "Too many sign-in attempts from your network. Wait a minute, then start again from the app."},
        status=429,
    )
    response["Retry-After"] = str(retry_after)
    return response


def _sandbox_json(request, retry_after: int):
    body = {
        "error": {
            "code": "rate_limit_exceeded",
            "message": f"Too many requests to the sandbox from this address; retry in {retry_after} s.",
        }
    }
    return JsonResponse(body, status=429, headers={"Retry-After": str(retry_after)})


# path prefix → (scope, setting holding the rate, response)
RULES = (
    ("/oauth/", "oauth-callback", "LAYERS_CALLBACK_RATE", _callback_page),
    ("/sandbox/", "sandbox", "LAYERS_SANDBOX_RATE", _sandbox_json),
)


class ClientRateLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        for prefix, scope, setting, respond in RULES:
            if request.path.startswith(prefix):
                retry_after = hit(scope, client_ip(request), getattr(settings, setting))
                if retry_after is not None:
                    return respond(request, retry_after)
                break
        return self.get_response(request)
