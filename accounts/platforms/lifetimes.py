"""How long a token the platform has just issued lives: the one reader of the lifetimes in token answers
(TikTok's expires_in and refresh_expires_in, Instagram's expires_in), for both clients."""

import logging
import math
from datetime import timedelta

log = logging.getLogger(__name__)


def token_lifetime(
    value, *, platform: str, field: str, fallback: timedelta | None, longest: timedelta
) -> timedelta | None:
    """The lifetime a token answer's `field` (seconds) gives, bounded.

    The answer that carries it also carries the tokens the platform has just issued (TikTok has rotated the
    refresh token away by then): a lifetime that cannot be read must not lose them, as int() did on
    "86400.0", a list or 1e20, raising after the rotation. Nor may it store a token that expires now (0,
    negative, null: refreshed, and rotated, before every call), or one that is never refreshed. So:
    - not a positive number of seconds (missing, null, 0, negative, a bool, a list, "86400s", NaN): the
      `fallback`, the platform's documented lifetime (its shortest where its docs disagree: a token thought
      to live longer than it does dies unrefreshed, and its refusal then reads as a dead grant);
    - longer than the `longest` the platform documents: that (refreshed early rather than never).
    A short positive lifetime is kept as it is: a token taken to live longer than it does dies unrefreshed,
    and the refresh margin is at most a third of the lifetime (accounts/token_margin.py), so a short-lived
    token is not refreshed before every call.
    Numbers may come as JSON strings ("86400", "86400.0"). Each of these cases is a WARNING naming the
    platform and the field, with the value only when it is a number (the tokens are in the same answer)."""
    seconds = _seconds(value)
    if seconds is None or seconds <= 0:
        shown = "missing or null" if value is None else f"{seconds:g}" if seconds is not None else type(value).__name__
        log.warning(
            "%s token answer: %s is not a lifetime (%s); %s used",
            platform, field, shown, fallback if fallback is not None else "unknown",
        )  # fmt: skip
        return fallback
    if seconds > longest.total_seconds():
        log.warning(
            "%s token answer: %s of %g s is past the documented %s; %s used",
            platform, field, seconds, longest, longest,
        )  # fmt: skip
        return longest
    return timedelta(seconds=round(seconds))


def _seconds(value) -> float | None:
    """A number of seconds from JSON: a number or a numeric string (inf beyond a float); None for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        seconds = float(value)
    except OverflowError:  # an int beyond a float
        return math.inf
    except ValueError:
        return None
    return None if math.isnan(seconds) else seconds
