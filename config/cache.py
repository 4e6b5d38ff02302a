"""The default cache: Redis when LAYERS_CACHE_URL is set, and while Redis cannot be reached, this process's
memory. What keeps state there (allauth's sign-in and MFA attempt limits, used TOTP codes; the per-IP
budgets of config/ratelimit.py) is a guard, not the service: with a plain RedisCache, Redis down meant a 500
on every staff sign-in, so ops could not reach the admin during a Redis incident.

One memory and one "Redis is down" clock per process, shared by every thread (Django gives each thread its
own cache object) and by config/ratelimit.py: per thread, a TOTP code used in one thread could be used again
in another, and each thread would wait out its own timeout before falling back."""

import logging
import time

from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# After a failed Redis call, this process uses its memory for this long before trying Redis again, so an
# unreachable server costs one request per process every few seconds a timeout, not every request.
REDIS_RETRY_SECONDS = 5.0
# LocMemCache keeps its data per name, module-wide: every instance of this name is the same memory.
FALLBACK = LocMemCache("layers-cache-fallback", {"OPTIONS": {"MAX_ENTRIES": 100_000}})
_redis_unavailable_until = 0.0  # time.monotonic(); a plain float: a race only means one extra try


def redis_usable() -> bool:
    return time.monotonic() >= _redis_unavailable_until


def redis_failed(exc: Exception, what: str) -> None:
    global _redis_unavailable_until
    _redis_unavailable_until = time.monotonic() + REDIS_RETRY_SECONDS
    log.warning("%s: Redis unavailable (%s); using this process's memory for %.0f s", what, exc, REDIS_RETRY_SECONDS)


# The cache operations callers use; the others are built on these.
_OPERATIONS = ("add", "get", "set", "touch", "delete", "get_many", "set_many", "delete_many", "has_key", "incr")


class TolerantRedisCache(RedisCache):
    pass


def _tolerant(name: str):
    redis_operation = getattr(RedisCache, name)

    def operation(self, *args, **kwargs):
        if redis_usable():
            try:
                return redis_operation(self, *args, **kwargs)
            except RedisError as exc:
                redis_failed(exc, "cache")
        return getattr(FALLBACK, name)(*args, **kwargs)

    operation.__name__ = name
    return operation


for _name in _OPERATIONS:
    setattr(TolerantRedisCache, _name, _tolerant(_name))
