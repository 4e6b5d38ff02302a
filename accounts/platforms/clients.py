"""The interface every platform client implements, and the factory that picks one.

Every method raises only the typed errors of accounts/platforms/base.py (TokenInvalid, RateLimited,
PlatformUnavailable, RequestRejected); none of them ever carries a token in its message.
"""

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Protocol

import httpx

from .base import MediaItem, Metrics, Profile, PublishResult, PublishStatus, TokenSet

PLATFORMS = ("tiktok", "instagram")


class PlatformClient(Protocol):
    platform: str

    def authorize_url(
        self, *, state: str, redirect_uri: str, scopes: list[str] | None = None, usage_note: str | None = None
    ) -> str:
        """The URL to send the end-customer's browser to. `usage_note` is shown by the sandbox's consent
        page only; it is never added to a live platform's URL."""
        ...

    def exchange_code(self, *, code: str, redirect_uri: str) -> TokenSet:
        """The authorization code → tokens. A bad, used or expired code is RequestRejected."""
        ...

    def refresh(self, *, tokens: TokenSet) -> TokenSet:
        """Fresh tokens; persist all of the result at once (TikTok rotates the refresh token; an answer
        that carries none keeps the one sent, with its expiry, in the result). A dead refresh grant is
        TokenInvalid."""
        ...

    def revoke(self, *, access_token: str) -> bool:
        """Give the authorization back. Returns whether the platform took it; False when it refused the token
        (dead, revoked, or merely expired: then the grant may live on, and a TikTok refresh token renews it)
        or the request. Transient errors are raised."""
        ...

    def get_profile(self, *, access_token: str, scopes: Iterable[str] = ()) -> Profile:
        """The user behind the token. `scopes` are the token's granted scopes when known (TokenSet.scopes,
        SocialAccount.scopes): a field the token may not read is then not asked for, and comes back empty
        (TikTok's `username` without user.info.profile); the caller keeps what it knew."""
        ...

    def publish(
        self,
        *,
        access_token: str,
        platform_user_id: str,
        mode: str,
        media_type: str,
        media: list[MediaItem],
        caption: str,
        before_create: Callable[[], None] | None = None,
    ) -> PublishResult:
        """Start a post (mode "publish") or a draft (mode "draft") of media_type "video" | "image" |
        "carousel". Returns at once with the id to poll with publish_status; store it before anything else.
        `before_create` is called right before the request that makes the post exist on the platform
        (TikTok's init, Instagram's draft delivery; an Instagram container is not a post yet), so the caller
        can record that point of no return; an exception from it aborts the publish."""
        ...

    def publish_status(
        self,
        *,
        access_token: str,
        platform_user_id: str,
        publish_id: str,
        caption: str | None = None,
        not_before: datetime | None = None,
        publish: bool | Callable[[], bool] = True,
    ) -> PublishStatus:
        """Where a publish stands. Safe to call any number of times: it never publishes twice.
        `caption` and `not_before` (when the post was scheduled) help Instagram recover the media id of a
        container published by a dead worker. With `publish` False it only reads: an Instagram container
        not yet published is left so ("unpublished") instead of being published (media_publish). A callable
        `publish` is asked right before media_publish, when the container is ready: False leaves it so too."""
        ...

    def fetch_metrics(self, *, access_token: str, platform_user_id: str, external_ids: list[str]) -> dict[str, Metrics]:
        """Metrics per external id; ids the platform no longer knows are absent from the answer. An error that
        stops the call partway (a throttle, a dead token, an outage) is raised with the readings made before
        it and the ids it did not ask about (base.stopped_partway)."""
        ...


def get_client(platform: str, *, http: httpx.Client | None = None) -> PlatformClient:
    """The client for "tiktok" or "instagram". `http` replaces the default transport (tests stub it with
    httpx.MockTransport); by default calls go through the thread's keep-alive client (http.thread_http_client)."""
    from .instagram import InstagramClient
    from .tiktok import TikTokClient

    if platform == "tiktok":
        return TikTokClient(http=http)
    if platform == "instagram":
        return InstagramClient(http=http)
    raise ValueError(f"unknown platform {platform!r}; expected one of {PLATFORMS}")
