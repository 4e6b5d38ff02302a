"""When a stored access token is due for its refresh: one rule for the accounts' health check, the health
tick's due list and the pool's token refresh (leasing).

A token is refreshed a margin before it expires: the configured one (LAYERS_TOKEN_REFRESH_MARGIN, the pool's
POOL_REFRESH_MARGIN) or a third of the token's lifetime, whichever is shorter. TikTok's access tokens live
24 h or 2 h depending on the doc version (PLATFORMS.md: read expires_in); a 6 h margin on a 2 h token made
every token due at every tick, refreshed (rotated) every 10 minutes, and, the due list being bounded and
ordered by soonest expiry, the daily checks of other accounts never came. A third leaves a 2 h token 40
minutes, more than the ticks' intervals (10 minutes for the health check, 30 for the pool), and changes
nothing for the documented 24 h and 60 d tokens (a third is longer than their 6 h and 7 d margins).

The lifetime is what the platform said when it issued the token (TokenSet.lifetime, from expires_in), stored
beside the expiry (token_lifetime). A token stored before that column existed has none: the configured
margin applies to it, and its next refresh stores the lifetime."""

from datetime import datetime, timedelta

from django.db.models import DurationField, ExpressionWrapper, F, Q, Value
from django.db.models.fields import DateTimeField

# The margin is at most 1 / LIFETIME_SHARE of the token's lifetime.
LIFETIME_SHARE = 3


def refresh_margin(*, configured: timedelta, lifetime: timedelta | None) -> timedelta:
    """How long before its expiry a token of this lifetime (None: unknown) is refreshed."""
    if lifetime is None:
        return configured
    return min(configured, lifetime / LIFETIME_SHARE)


def refresh_due(
    *, expires_at: datetime | None, lifetime: timedelta | None, configured: timedelta, now: datetime
) -> bool:
    """Whether a token expiring at `expires_at` (None: unknown, refresh it) is due for its refresh at `now`."""
    if expires_at is None:
        return True
    return expires_at <= now + refresh_margin(configured=configured, lifetime=lifetime)


def refresh_due_q(*, configured: timedelta, now: datetime) -> Q:
    """refresh_due as a filter on rows with `token_expires_at` and `token_lifetime`, for rows whose expiry is
    known (the caller decides about the others). Within the configured margin and, when the lifetime is
    known, within a LIFETIME_SHARE-th of it: expires - now <= lifetime / share, written without dividing an
    interval (share × (expires - now) <= lifetime), which SQLite's durations (integers) and PostgreSQL's
    intervals both compute."""
    left = ExpressionWrapper(
        (F("token_expires_at") - Value(now, output_field=DateTimeField())) * LIFETIME_SHARE,
        output_field=DurationField(),
    )
    return Q(token_expires_at__lte=now + configured) & (Q(token_lifetime__isnull=True) | Q(token_lifetime__gte=left))
