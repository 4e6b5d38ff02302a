import logging

from django.conf import settings
from rest_framework.throttling import BaseThrottle

from config import ratelimit
from config.logfilters import logged_path

log = logging.getLogger(__name__)


class ApiKeyRateThrottle(BaseThrottle):
    """Per-key request budget (LAYERS_API_RATE, default 1200/min); over it → 429 RATE_LIMITED with
    Retry-After (the seconds until the next window). Every answer after the count, 429 or not, carries
    RateLimit-Limit, RateLimit-Remaining and RateLimit-Reset, so a partner's dashboard can pace its calls
    instead of discovering the budget by being refused.

    It counts with config/ratelimit.hit, the fixed-window counter the per-IP limits use, in the default
    cache (Redis when LAYERS_CACHE_URL is set, so the budget holds across processes; per process otherwise).
    DRF's SimpleRateThrottle was used before: it reads the key's list of request times, appends and writes
    the list back, so requests arriving together each read the same list and all but one of their writes are
    lost — a key with a budget of 10 got 26 requests through in 8 concurrent threads. The counter is
    incremented atomically and costs the same whatever the key's traffic (the list held up to one timestamp
    per request of the last minute, read and written whole on every request).

    Each throttled call is logged, naming the key (its id and prefix, never the key) and its organization:
    Django's own line ("Too Many Requests: /v1/projects") does not, and support must tell which partner and
    which of its keys is over its budget."""

    scope = "api_key"

    def allow_request(self, request, view):
        key = getattr(request, "auth", None)
        ident = key.pk if key is not None else self.get_ident(request)
        budget = ratelimit.take(self.scope, ident, settings.LAYERS_API_RATE)
        # ApiView.finalize_response tells the partner where it stands (RateLimit-* headers on every answer).
        view.rate_budget = budget
        self.retry_after = budget.reset if budget.exceeded else None
        if self.retry_after is not None:
            from accounts.services import api_key_log_label

            log.warning(
                "API call throttled (429, over LAYERS_API_RATE %s; retry in %s s): %s %s from %s with %s",
                settings.LAYERS_API_RATE,
                self.retry_after,
                request.method,
                logged_path(request),
                ratelimit.client_ip(request),
                api_key_log_label(key) if key is not None else "no API key",
            )
        return self.retry_after is None

    def wait(self):
        return self.retry_after


def rate_limit_headers(budget: ratelimit.Budget) -> dict[str, str]:
    """The key's standing in its window, in the RateLimit header fields of the IETF httpapi draft as most
    clients read them: the budget, what is left of it (never below 0), and the seconds until it resets."""
    return {
        "RateLimit-Limit": str(budget.limit),
        "RateLimit-Remaining": str(max(budget.remaining, 0)),
        "RateLimit-Reset": str(budget.reset),
    }
