"""What every platform client speaks, whatever the platform: typed results and typed errors.

The errors are the contract between the clients and the services that use them:
- TokenInvalid        the token is dead (revoked, expired, password changed): the account needs a reauth;
  PermissionMissing   (a TokenInvalid) the token works, but was granted without the permission this call
                      needs: every such call fails until the creator grants it, so it too needs a reauth;
- RateLimited         the platform throttled us: retry later (retry_after seconds when known);
- PlatformUnavailable 5xx, timeouts, connection errors: transient, retry with backoff;
- RequestRejected     the platform refused this request for good (bad params, content refused, bad code):
                      retrying the same request will not help. `code` is the platform's own code.

`outcome_unknown` says whether the request may have been carried out although it raised: it went out and
no clear answer came back (none in time, the connection dropped, an unreadable body, a gateway's error page
instead of the platform's own error). A request that creates a post must then not be sent again: the post
may exist. It is False for the platform's own typed errors (it refused) and for requests that never left
(the connection could not be made). Left unset, it is True exactly when no HTTP status was read.
"""

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

# The longest wait a platform's Retry-After (or Meta's usage header) is taken at: a day. Beyond that, or a
# value that is no number of seconds at all (nan, inf, negative), it is ignored and the caller's own backoff
# applies: a header must not be able to crash a worker (timedelta overflows) or park a post for years.
MAX_RETRY_AFTER = 86_400.0


class PlatformError(Exception):
    def __init__(
        self,
        message: str = "",
        *,
        code: str = "",
        status: int | None = None,
        retry_after: float | None = None,
        outcome_unknown: bool | None = None,
    ):
        super().__init__(message or code)
        self.code = code
        self.status = status
        self.retry_after = (
            retry_after
            if retry_after is not None and math.isfinite(retry_after) and 0 <= retry_after <= MAX_RETRY_AFTER
            else None
        )
        self.outcome_unknown = status is None if outcome_unknown is None else outcome_unknown
        # A call about many items (fetch_metrics) that this error stopped partway raises it with what it had
        # read before (those readings cost calls: the caller keeps them) and the items it did not ask about
        # (the caller asks about them first next time): see stopped_partway.
        self.readings: dict = {}
        self.unasked: list[str] = []

    @property
    def log_code(self) -> str:
        """What a log line names the refusal by: the platform's own code (what its documentation goes by), else
        the HTTP status it came with."""
        return self.code or (f"http_{self.status}" if self.status else "no code")


class TokenInvalid(PlatformError):
    pass


class PermissionMissing(TokenInvalid):
    """A TokenInvalid whose token is alive but lacks the permission (scope) the call needs (TikTok's
    scope_not_authorized, Instagram's codes 10 and 200-299 on a publishing call). The remedy is the same
    (a reauth granting it), so callers that only care about that treat it as any TokenInvalid; the publisher
    tells the partner which of the two it was, and fails only the post when the grant still posts in another
    mode (TikTok's video.publish and video.upload: scheduling.services._mode_scope_refused)."""


class RateLimited(PlatformError):
    pass


class PlatformUnavailable(PlatformError):
    pass


class RequestRejected(PlatformError):
    pass


def stopped_partway(exc: PlatformError, *, readings: dict, asking: list[str], rest: list[str]) -> None:
    """Record on `exc`, which stopped a call about many items while it was asking about `asking`, before
    `rest`, what the call had read and what it did not ask. A throttle or a dead token refused `asking` for the
    account's sake: not asked. Any other error leaves them asked: items the platform keeps failing on must
    not take the head of the line every time, and hold the items behind them there."""
    exc.readings = readings
    exc.unasked = [*asking, *rest] if refused_for_the_account(exc) else list(rest)


def refused_for_the_account(exc: PlatformError) -> bool:
    """Whether `exc` refused a call for the account's sake (throttled, a dead token), not for what it asked."""
    return isinstance(exc, RateLimited | TokenInvalid)


class NoticeRejected(Exception):
    """A notice a platform sends Layers (TikTok's webhook, Meta's signed request) that is not a valid one of
    this app's. `code` and `message` go into the error envelope, with `status`."""

    def __init__(self, code: str, message: str, *, status: int = 400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


@dataclass(frozen=True)
class TokenSet:
    """Tokens as the platform issued them. TikTok rotates refresh tokens: always persist the newest
    one together with its access token. Instagram has no refresh token (refresh uses the access token)."""

    access_token: str
    expires_at: datetime
    platform_user_id: str
    refresh_token: str | None = None
    refresh_expires_at: datetime | None = None
    scopes: tuple[str, ...] = ()
    # How long the access token was issued for (the answer's expires_in); None when not known. Stored with
    # the tokens: the refresh margin is a share of it (accounts/token_margin.py).
    lifetime: timedelta | None = None
    # Instagram: the `user_id` the code exchange answered, kept as one of the ids Meta's signed requests may
    # name the person by (PlatformIdentity.token_user_id). None elsewhere, and on a refresh.
    token_user_id: str | None = None


@dataclass(frozen=True)
class Profile:
    platform_user_id: str
    username: str
    display_name: str
    avatar_url: str | None  # a signed, expiring CDN URL: copy the bytes, never store the URL
    # Instagram: /me's `id`, the app-scoped id, which Meta's signed requests may name the person by
    # (PlatformIdentity.app_scoped_id). None elsewhere.
    app_scoped_id: str | None = None


@dataclass(frozen=True)
class PublishResult:
    """What the platform answered to a publish (or draft) request. `publish_id` is stored at once so a
    post stuck in `publishing` can be resolved by asking for its status instead of posting again."""

    publish_id: str


@dataclass(frozen=True)
class PublishStatus:
    """Where a post the platform accepted stands. "failed": it will not be published (`fail_code` is the
    platform's own code, `fail_reason` a human sentence). "throttled": the call that makes it public was
    throttled (Instagram's media_publish against the 24 h publishing quota); asking again later may
    publish it, `retry_after` seconds from now when the platform said. "try_again": that call failed on the
    platform's side for now and it says to ask again soon (Instagram's 2207008, Graph codes 1 and 2,
    `is_transient`, a 5xx with Graph's error object), or the call never left. "unpublished": a status read that
    was not to publish (publish_status(publish=False)) found an Instagram container that is no post yet and
    becomes one only by the media_publish that read did not make."""

    state: str  # "processing" | "published" | "sent_to_inbox" | "failed" | "throttled" | "try_again" | "unpublished"
    external_id: str | None = None
    external_url: str | None = None
    fail_code: str | None = None
    fail_reason: str | None = None
    retry_after: float | None = None


@dataclass(frozen=True)
class MediaItem:
    url: str
    kind: str  # "video" | "image"


@dataclass(frozen=True)
class Metrics:
    """A post's figures as the platform gave them now. None is a figure it did not give (not yet computed,
    currently unavailable, not readable with this token): unknown, which is not 0."""

    views: int | None = None
    likes: int | None = None
    comments: int | None = None
    shares: int | None = None
    extra: dict = field(default_factory=dict)


def as_int(value) -> int | None:
    """A number from a platform's answer, or None where it gave none (missing, null, not a number, not finite:
    JSON's 1e400 and Python's reading of Infinity are infinite floats, which int() refuses with OverflowError)."""
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return None
