from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle


class ApiKeyRateThrottle(SimpleRateThrottle):
    """Per-key request budget (LAYERS_API_RATE, default 1200/min); over it → 429 RATE_LIMITED with
    Retry-After. Counters live in the default cache (Redis when LAYERS_CACHE_URL is set, so the budget
    holds across processes; per process otherwise)."""

    scope = "api_key"

    def get_rate(self):
        # Read at request time (DRF reads its rates once at import), so deployments and tests can change it.
        return settings.LAYERS_API_RATE

    def get_cache_key(self, request, view):
        key = getattr(request, "auth", None)
        ident = key.pk if key is not None else self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}
