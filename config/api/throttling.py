from django.conf import settings
from rest_framework.throttling import BaseThrottle

from config import ratelimit


class ApiKeyRateThrottle(BaseThrottle):
    """Per-key request budget (LAYERS_API_RATE, default 1200/min); over it → 429 RATE_LIMITED with
    Retry-After (the seconds until the next window).

    It counts with config/ratelimit.hit, the fixed-window counter the per-IP limits use, in the default
    cache (Redis when LAYERS_CACHE_URL is set, so the budget holds across processes; per process otherwise).
    DRF's SimpleRateThrottle was used before: it reads the key's list of request times, appends and writes
    the list back, so requests arriving together each read the same list and all but one of their writes are
    lost — a key with a budget of 10 got 26 requests through in 8 concurrent threads. The counter is
    incremented atomically and costs the same whatever the key's traffic (the list held up to one timestamp
    per request of the last minute, read and written whole on every request)."""

    scope = "api_key"

    def allow_request(self, request, view):
        key = getattr(request, "auth", None)
        ident = key.pk if key is not None else self.get_ident(request)
        self.retry_after = ratelimit.hit(self.scope, ident, settings.LAYERS_API_RATE)
        return self.retry_after is None

    def wait(self):
        return self.retry_after
