"""The default cache: Redis when LAYERS_CACHE_URL is set, and while Redis cannot be reached, this process's
memory. What keeps state there (allauth's sign-in and MFA attempt limits; config/ratelimit.py has its own
faster path with the same fallback) is a guard, not the service: with a plain RedisCache, Redis down meant a
500 on every staff sign-in, so ops could not reach the admin during a Redis incident."""

import logging
import time

from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache
from redis.exceptions import RedisError

from config.ratelimit import REDIS_RETRY_SECONDS

log = logging.getLogger(__name__)

# The cache operations callers use; the others are built on these.
_OPERATIONS = ("add", "get", "set", "touch", "delete", "get_many", "set_many", "delete_many", "has_key", "incr")


class TolerantRedisCache(RedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._fallback = LocMemCache(f"layers-cache-fallback-{id(self)}", {"OPTIONS": {"MAX_ENTRIES": 100_000}})
        self._redis_unavailable_until = 0.0  # time.monotonic(); a race only means one extra try


def _tolerant(name: str):
    redis_operation = getattr(RedisCache, name)

    def operation(self, *args, **kwargs):
        if time.monotonic() >= self._redis_unavailable_until:
            try:
                return redis_operation(self, *args, **kwargs)
            except RedisError as exc:
                self._redis_unavailable_until = time.monotonic() + REDIS_RETRY_SECONDS
                log.warning(
                    "cache: Redis unavailable (%s); using this process's memory for %.0f s", exc, REDIS_RETRY_SECONDS
                )
        return getattr(self._fallback, name)(*args, **kwargs)

    operation.__name__ = name
    return operation


for _name in _OPERATIONS:
    setattr(TolerantRedisCache, _name, _tolerant(_name))
