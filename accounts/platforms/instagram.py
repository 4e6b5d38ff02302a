"""Instagram API with Instagram Login (graph.instagram.com; not the retired Basic Display API), speaking
the wire format of PLATFORMS.md. Base URLs and the Graph version come from settings.

Errors are `{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}`, often with HTTP 400
whatever they mean, so they are classified by code, not by status; the one exception is the token
endpoint of api.instagram.com, which answers `{"error_type", "code", "error_message"}`.

Graph calls carry the token as the documented `access_token` parameter: in the query string for GET and
DELETE, in the form body for POST (so it stays out of URLs where the API allows it).
"""

import json
import logging
import re
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from datetime import datetime, timedelta
from urllib.parse import urlencode

import httpx
from django.conf import settings
from django.utils import timezone

from .base import (
    MediaItem,
    Metrics,
    PermissionMissing,
    PlatformError,
    PlatformUnavailable,
    Profile,
    PublishResult,
    PublishStatus,
    RateLimited,
    RequestRejected,
    TokenInvalid,
    TokenSet,
    as_int,
    stopped_partway,
)
from .decoding import json_loads
from .fields import count, https_url, platform_id, unreadable_answer
from .http import http_session, json_body, platform_request, platform_text, redact
from .lifetimes import token_lifetime

log = logging.getLogger(__name__)

# Every authorize URL asks for it, whatever scopes the partner chose: the token exchange and the profile
# (/me, who consented) need it, so a reauth asking for the publishing scope alone could never complete.
BASIC_SCOPE = "instagram_business_basic"
DEFAULT_SCOPES = (
    BASIC_SCOPE,
    "instagram_business_content_publish",
    "instagram_business_manage_insights",
)
# `id` is the app-scoped id, which Meta's deauthorize and data deletion requests may carry instead of `user_id`.
PROFILE_FIELDS = "id,user_id,username,name,account_type,profile_picture_url"
INSIGHT_METRICS = "views,likes,comments,shares,saved,reach"
# 190 "Access token has expired"; 102 "API Session": "the login status or access token has expired, been revoked,
# or is otherwise invalid. Get a new access token" (Graph API > Handling Errors), with or without one of the same
# auth subcodes. It was refused content, one post at a time, and the account never went reauth_required.
TOKEN_INVALID_CODES = frozenset({190, 102})
# 4, 17, 32, 613: Graph API throttling, and 341 "Application limit reached: temporary issue due to downtime or
# throttling. Wait and retry" (it failed the post at once as refused content); 80002: the Business Use Case limit
# of an Instagram account, the limits Meta applies to Instagram Platform calls.
# 368: "Temporarily blocked for policies violations. Wait and retry the operation" (Graph API > Handling Errors):
# the account may not post for a while, and nothing is wrong with the post. As refused content it failed
# PLATFORM_REJECTED at once, and the partner would change a post that needed only to wait. A throttle: asked
# again with backoff for the post's retry window, then RATE_LIMITED ("try later"), in Meta's words.
POLICY_BLOCK_CODE = 368
THROTTLING_CODES = frozenset({4, 17, 32, 341, 613, 80002, POLICY_BLOCK_CODE})
TRANSIENT_CODES = frozenset({1, 2})
# Failures on Instagram's side that Meta says to retry (with a new container): 2207001 server error, 2207003 a
# timeout downloading the media ("Try again"), 2207032 creating the media failed, 2207053 unknown upload error.
# Transient whatever the code beside them. And 2207008,
# "Temporary error publishing a container. Try again 1-2 times in the next 30 seconds to 2 minutes" (Instagram
# Platform > Error Codes), which failed the post as refused content. On media_publish, where it comes, it is a
# "try_again" status (publish_status), asked again with backoff for the post's retry window as a throttled
# media_publish is; so is every other "not now" of Meta's there (codes 1 and 2, "a temporary issue due to
# downtime. Wait and retry", `is_transient: true`, a 5xx carrying the Graph error object: Graph API > Handling
# Errors). Not at every status check: that called media_publish every 2 minutes for a day.
PUBLISH_AGAIN_SUBCODE = 2207008
TRANSIENT_SUBCODES = frozenset({2207001, 2207003, PUBLISH_AGAIN_SUBCODE, 2207032, 2207053})
# 2207051 comes with code 4, the code of Meta's app throttling, but is no throttle: "The publishing action is
# suspected to be spam. We restrict certain activity to protect our community." Read as a throttle, the post
# was sent again for its whole retry window, each try one more publishing action held against the account,
# then failed RATE_LIMITED ("try later"). It is a refusal, decided before the throttling codes.
SPAM_SUBCODE = 2207051
PERMISSION_CODES = frozenset({10, *range(200, 300)})
# fetch_metrics skips a media whose insights call fails for now; this many in a row is Instagram down, not one
# media: the call stops there instead of spending a timeout on each of the account's media.
METRICS_DOWN_AFTER = 3
QUOTA_SUBCODE = 2207042
# Meta's rate-limit usage header on throttled answers (JSON: per business, the minutes until access comes back).
USAGE_HEADER = "X-Business-Use-Case-Usage"
NOT_READY = "9007/2207027"
# A draft on Instagram is a delivery (see _deliver_draft); its publish id says so.
DELIVERY_PREFIX = "delivery:"
CAROUSEL_ITEMS = (2, 10)
# Instagram takes a caption of at most 2200 characters (a longer one is refused: 36004 / 2207010), counted
# here as Unicode characters, as the content API counted every caption before TikTok's longer photo
# descriptions raised its own limit (PLATFORMS.md does not say how Instagram counts).
CAPTION_MAX = 2200
# Instagram refuses a container whose caption has more than 30 hashtags or 20 @mentions. Counted as
# Instagram reads them: a hashtag is "#" and word characters, not
# only digits ("#1" is no hashtag), a mention "@" and a handle (letters, digits, "_", "."); neither when it
# follows a word character, so "C#" and an e-mail address count for nothing. Every occurrence counts.
CAPTION_HASHTAGS_MAX = 30
CAPTION_MENTIONS_MAX = 20
_HASHTAG = re.compile(r"(?<!\w)#(?=\w*[^\W\d])\w+")
_MENTION = re.compile(r"(?<![\w@])@[A-Za-z0-9_][A-Za-z0-9_.]*")


def _id_text(value) -> str | None:
    """An id Instagram answered (a number, or a string: digits in every answer seen) as stored, or None when it
    is none that PostgreSQL can keep in PlatformIdentity's 128 characters: it is only matched against, so a
    strange value is dropped rather than failing the connect."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and 0 < len(value) <= 128 and value.isascii() and value.isprintable():
        return value
    return None


def caption_hashtags(caption: str) -> int:
    return len(_HASHTAG.findall(caption))


def caption_mentions(caption: str) -> int:
    return len(_MENTION.findall(caption))


# How many of the account's latest media to look through when recovering a published container's media.
RECOVERY_PAGE = 50
# Instagram's clock and ours may disagree a little; its timestamps are whole seconds.
RECOVERY_CLOCK_SKEW = timedelta(minutes=1)


class InstagramClient:
    platform = "instagram"

    def __init__(self, *, http: httpx.Client | None = None):
        self._http = http

    # --- OAuth ---------------------------------------------------------------------------------------

    def authorize_url(
        self, *, state: str, redirect_uri: str, scopes: list[str] | None = None, usage_note: str | None = None
    ) -> str:
        params = {
            "client_id": settings.LAYERS_INSTAGRAM_CLIENT_ID,
            "redirect_uri": redirect_uri,
            "response_type": "code",
            "scope": ",".join(dict.fromkeys((BASIC_SCOPE, *(scopes or DEFAULT_SCOPES)))),
            "state": state,
        }
        # Not an Instagram parameter: only the sandbox's consent page shows it.
        if usage_note and settings.LAYERS_PLATFORMS == "sandbox":
            params["layers_usage_note"] = usage_note
        base = settings.LAYERS_INSTAGRAM_AUTHORIZE_URL
        return f"{base}{'&' if '?' in base else '?'}{urlencode(params)}"

    def exchange_code(self, *, code: str, redirect_uri: str) -> TokenSet:
        """Code → short-lived token (1 h) → long-lived token (60 days); only the long-lived one is kept."""
        secret = settings.LAYERS_INSTAGRAM_CLIENT_SECRET
        form = {
            "client_id": settings.LAYERS_INSTAGRAM_CLIENT_ID,
            "client_secret": secret,
            "grant_type": "authorization_code",
            "redirect_uri": redirect_uri,
            "code": code,
        }
        with http_session(self._http) as http:
            response = platform_request(http, self.platform, "POST", f"{self._oauth_api}/oauth/access_token", data=form)
            body = json_body(response)
            _raise_for_oauth(response, body, secrets=(code, secret))
            # Documented as {"data": [{...}]}, observed flat {...}: accept both.
            entry = body.get("data", [body]) if isinstance(body, dict) else [None]
            entry = entry[0] if isinstance(entry, list) and entry else None
            if not isinstance(entry, dict) or not _is_token(entry.get("access_token")):
                raise PlatformUnavailable("instagram: no access_token in the token answer", code="bad_response")
            short_lived = entry["access_token"]
            long_lived = self._graph(
                http,
                "GET",
                "/access_token",
                access_token=short_lived,
                params={"grant_type": "ig_exchange_token", "client_secret": secret},
                versioned=False,
            )
            if not _is_token(long_lived.get("access_token")):
                raise PlatformUnavailable("instagram: no long-lived token in the answer", code="bad_response")
            # Publishing paths take the professional account id that /me answers as `user_id`; sources
            # disagree on whether the token endpoint's user_id is always that same id, so ask /me.
            me = self._graph(http, "GET", "/me", access_token=long_lived["access_token"], params={"fields": "user_id"})
        user_id = me.get("user_id") or entry.get("user_id")
        if not isinstance(user_id, str | int) or isinstance(user_id, bool) or not str(user_id):
            raise PlatformUnavailable("instagram: no user id for the token", code="bad_response")
        lifetime = _token_lifetime(long_lived.get("expires_in"))
        return TokenSet(
            access_token=long_lived["access_token"],
            expires_at=timezone.now() + lifetime,
            platform_user_id=str(user_id),
            scopes=_permissions(entry.get("permissions")),
            lifetime=lifetime,
            token_user_id=_id_text(entry.get("user_id")),
        )

    def refresh(self, *, tokens: TokenSet) -> TokenSet:
        """A long-lived token at least 24 h old and not yet expired → a new one (60 days). There is no
        refresh token: a token that expired is dead (TokenInvalid, the account needs a reauth)."""
        with http_session(self._http) as http:
            body = self._graph(
                http,
                "GET",
                "/refresh_access_token",
                access_token=tokens.access_token,
                params={"grant_type": "ig_refresh_token"},
                versioned=False,
            )
        if not _is_token(body.get("access_token")):
            raise PlatformUnavailable("instagram: no access_token in the refresh answer", code="bad_response")
        lifetime = _token_lifetime(body.get("expires_in"))
        return TokenSet(
            access_token=body["access_token"],
            expires_at=timezone.now() + lifetime,
            platform_user_id=tokens.platform_user_id,
            scopes=_permissions(body.get("permissions")) or tokens.scopes,
            lifetime=lifetime,
        )

    def revoke(self, *, access_token: str) -> bool:
        """Best effort: Instagram documents no revoke endpoint; DELETE /me/permissions is what the Graph
        API offers. A refusal is logged and ignored (wiping our copy is what matters), False; transient
        errors are raised so the caller can retry. A dead or expired token (190) revokes nothing, and there
        is no refresh token to renew it with (an expired Instagram token cannot be refreshed): False."""
        try:
            with http_session(self._http) as http:
                answer = self._graph(http, "DELETE", "/me/permissions", access_token=access_token)
        except TokenInvalid:
            return False
        except RequestRejected as exc:
            log.warning("instagram: permission revoke refused (code %s); our copy is wiped anyway", exc.code)
            return False
        # Meta answers {"success": true} when the permissions went. {"success": false} (or no word of it) read as
        # revoked: the customer's grant stayed alive and nothing said so. Raised, the caller logs it and notes it
        # on the account's history.
        if answer.get("success") is not True:
            raise PlatformUnavailable(
                "instagram: the permission revoke did not succeed", code="not_revoked", status=200
            )
        return True

    # --- Reads ---------------------------------------------------------------------------------------

    def get_profile(self, *, access_token: str, scopes: Iterable[str] = ()) -> Profile:
        # `scopes` is not needed: instagram_business_basic, which every token has, gives every field below.
        with http_session(self._http) as http:
            me = self._graph(http, "GET", "/me", access_token=access_token, params={"fields": PROFILE_FIELDS})
        if not me.get("user_id"):
            raise PlatformUnavailable("instagram: no user_id in the profile", code="bad_response")
        username = platform_text(me.get("username"))
        return Profile(
            platform_user_id=str(me["user_id"]),
            username=username,
            display_name=platform_text(me.get("name")) or username,
            avatar_url=me.get("profile_picture_url") or None,
            app_scoped_id=_id_text(me.get("id")),
        )

    def fetch_metrics(self, *, access_token: str, platform_user_id: str, external_ids: list[str]) -> dict[str, Metrics]:
        """One insights call per media: graph.instagram.com documents no multi-media insights call, so the
        caller bounds the list. A figure Instagram does not give is None, not 0: Meta answers insights that
        "do not exist or are currently unavailable" (a media's first hours: they can be 48 h late) with an
        empty data set. Likes and comments missing there, or all insights for a token without the insights
        permission, are read from the like / comment counts any token can read; views and shares then stay
        unknown. Media that no longer exist are absent from the answer.

        A media whose insights call fails for now (a 5xx, Meta's transient code 2, a timeout) is absent too,
        and the others are still read: one media Meta keeps failing on stopped every other post of the account
        from getting metrics, run after run. A throttle or a dead token is the account's, not one media's: it
        stops the call, raised with the readings made before it and the media it did not ask about
        (base.stopped_partway). So does Instagram failing METRICS_DOWN_AFTER media in a row: it is down, and
        every further call may cost a timeout."""
        ids = list(dict.fromkeys(str(i) for i in external_ids))
        result: dict[str, Metrics] = {}
        failing = 0
        with http_session(self._http) as http:
            for n, media_id in enumerate(ids):
                try:
                    metrics = self._media_metrics(http, access_token, media_id)
                except PlatformError as exc:
                    failing += 1
                    if isinstance(exc, PlatformUnavailable) and failing < METRICS_DOWN_AFTER:
                        log.info("instagram: metrics of media %s skipped: %s", media_id, exc.code)
                        continue
                    stopped_partway(exc, readings=result, asking=[media_id], rest=ids[n + 1 :])
                    raise
                failing = 0
                if metrics is not None:
                    result[media_id] = metrics
        return result

    def _media_metrics(self, http: httpx.Client, access_token: str, media_id: str) -> Metrics | None:
        """One media's figures for fetch_metrics; None when nothing is known about it now (the caller keeps
        what it had) or it no longer exists."""
        values: dict[str, int | None] = {}
        try:
            body = self._graph(
                http, "GET", f"/{media_id}/insights", access_token=access_token, params={"metric": INSIGHT_METRICS}
            )
        except RequestRejected as exc:
            if _code_of(exc) not in PERMISSION_CODES:
                return None  # deleted or unknown media
        else:
            items = body.get("data")
            # Items that are no object, or not named by a string, are about no figure we can tell: passed over
            # (they raised, and the account's metrics stopped at every run).
            values = {
                item["name"]: _insight_value(item)
                for item in (items if isinstance(items, list) else [])
                if isinstance(item, dict) and isinstance(item.get("name"), str)
            }
        if values.get("likes") is None or values.get("comments") is None:
            try:
                counts = self._graph(
                    http, "GET", f"/{media_id}", access_token=access_token,
                    params={"fields": "like_count,comments_count"},
                )  # fmt: skip
            except (RequestRejected, PlatformUnavailable):
                counts = {}  # the insights read (if any) are kept: the counts are a fallback
            for name, field in (("likes", "like_count"), ("comments", "comments_count")):
                if values.get(name) is None:
                    values[name] = count(counts.get(field))
        figures = {name: values.get(name) for name in ("views", "likes", "comments", "shares")}
        if all(value is None for value in figures.values()):
            return None
        return Metrics(**figures, extra={k: v for k, v in values.items() if k in ("saved", "reach") and v is not None})

    # --- Publishing ----------------------------------------------------------------------------------

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
        """Mode "publish" creates the container(s) and returns the (parent) container id; publish_status
        then publishes it once it is FINISHED. Mode "draft" delivers the asset to the creator."""
        _check_media(mode=mode, media_type=media_type, media=media)
        if mode == "draft":
            if before_create is not None:
                before_create()  # the delivery is the creator's copy itself: there is no way to deduplicate it
            return self._deliver_draft(
                access_token=access_token, user_id=platform_user_id, media_type=media_type, media=media, caption=caption
            )
        with http_session(self._http) as http, _missing_permission_needs_reauth():
            # Checking the rolling 24 h quota first avoids containers that could never be published.
            limit = self._graph(
                http, "GET", f"/{platform_user_id}/content_publishing_limit", access_token=access_token,
                params={"fields": "quota_usage,config"},
            )  # fmt: skip
            if _quota_used_up(limit):
                raise RateLimited(
                    "instagram: the 24 h publishing quota is used up", code=f"9/{QUOTA_SUBCODE}", outcome_unknown=False
                )

            def container(params: dict) -> str:
                answer = self._graph(http, "POST", f"/{platform_user_id}/media", access_token=access_token, data=params)
                if not answer.get("id"):
                    raise PlatformUnavailable("instagram: no container id in the answer", code="bad_response")
                # A container is no post yet: an id that cannot be kept (over the column's 128 characters: a
                # DataError, counted as a dead worker's run) or asked about (it goes in request paths) is an
                # unreadable answer, retried with a new container.
                container_id = platform_id(answer["id"])
                if container_id is None:
                    raise PlatformUnavailable(
                        "instagram: a container id in the answer that Layers cannot use", code="bad_response"
                    )
                return container_id

            if media_type == "image":
                publish_id = container({"image_url": media[0].url, "caption": caption})
            elif media_type == "video":
                publish_id = container({"media_type": "REELS", "video_url": media[0].url, "caption": caption})
            else:
                children = [container({**_media_params(item), "is_carousel_item": "true"}) for item in media]
                publish_id = container({"media_type": "CAROUSEL", "children": ",".join(children), "caption": caption})
        return PublishResult(publish_id=publish_id)

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
        """Poll the container; publish it (media_publish) when FINISHED. Never publishes twice: a container
        already PUBLISHED is only looked up, and Instagram refuses a second media_publish of a container.
        With `publish` False, a container not published yet (IN_PROGRESS or FINISHED) is "unpublished"; a
        callable `publish` is asked right before media_publish (the caller's last look at the account), and
        its False leaves a FINISHED container "unpublished" too."""
        if publish_id.startswith(DELIVERY_PREFIX):
            return PublishStatus(state="sent_to_inbox")  # delivered synchronously by publish()
        # An answer read wrongly after media_publish went through is asked again: the container then says
        # PUBLISHED, and the media is looked for (_recover_published).
        with http_session(self._http) as http, unreadable_answer("instagram: publish status"):
            status = self._container_status(http, access_token, publish_id)
            if not publish and status.get("status_code") in ("IN_PROGRESS", "FINISHED"):
                return PublishStatus(state="unpublished")
            if status.get("status_code") == "FINISHED":
                if callable(publish) and not publish():
                    return PublishStatus(state="unpublished")
                try:
                    published = self._graph(
                        http, "POST", f"/{platform_user_id}/media_publish", access_token=access_token,
                        data={"creation_id": publish_id},
                    )  # fmt: skip
                except RequestRejected as exc:
                    if exc.code == NOT_READY:
                        return PublishStatus(state="processing")
                    if _code_of(exc) in PERMISSION_CODES:
                        raise _needs_reauth(exc) from None
                    # Another worker may have published it between our read and our call, or it expired or
                    # failed meanwhile (9007/2207020): the container says so, and is read as such below.
                    # Anything else is a refusal for good (a restricted account, 25/2207050): asking again
                    # would get the same answer, so the post has failed.
                    status = self._container_status(http, access_token, publish_id)
                    if status.get("status_code") not in ("PUBLISHED", "EXPIRED", "ERROR"):
                        return PublishStatus(state="failed", fail_code=exc.code, fail_reason=str(exc))
                except RateLimited as exc:
                    # The publishing quota (9/2207042) or throttling: the container keeps (24 h), so
                    # media_publish can be asked again later; the caller decides how often.
                    return PublishStatus(
                        state="throttled", fail_code=exc.code, fail_reason=str(exc), retry_after=exc.retry_after
                    )
                except PlatformUnavailable as exc:
                    if exc.outcome_unknown:
                        # No answer of Meta's (a timeout, a gateway's page, a body cut short): it may have
                        # published it. Asked again at every status check, which reads the container first.
                        raise
                    # Meta's own "not now" (2207008, codes 1 and 2, is_transient, a 5xx with its error object)
                    # or a call that never left: the container keeps, and it is asked again as a throttled one
                    # is, within the post's retry window. None of them says that nothing was done (code 1 is
                    # "unknown"), so the container is read first, as after a refusal: one it says PUBLISHED is
                    # the post, live (the window's last try failed it while live). A read that fails changes
                    # nothing.
                    try:
                        after = self._container_status(http, access_token, publish_id)
                    except PlatformError:
                        after = {}
                    if after.get("status_code") == "PUBLISHED":
                        return self._recover_published(http, access_token, platform_user_id, caption, not_before)
                    return PublishStatus(state="try_again", fail_code=exc.code, fail_reason=str(exc))
                else:
                    media_id = platform_id(published.get("id"))
                    if media_id is None:
                        # Published, with no id we can use: asked again, the container answers PUBLISHED, and the
                        # post's media is looked for in the account's media (_recover_published).
                        raise PlatformUnavailable("instagram: no usable media id in the answer", code="bad_response")
                    return self._published(http, access_token, media_id)
            code = status.get("status_code")
            if code == "IN_PROGRESS":
                return PublishStatus(state="processing")
            if code in ("ERROR", "EXPIRED"):
                detail = platform_text(status.get("status")) or code
                fail_code = _container_error_code(detail)
                if fail_code and detail.strip() == fail_code:
                    # The bare subcode is no reason a partner can read on its own.
                    detail = f"Instagram failed the media container with error code {fail_code}."
                return PublishStatus(state="failed", fail_code=fail_code or code, fail_reason=detail)
            if code == "PUBLISHED":
                return self._recover_published(http, access_token, platform_user_id, caption, not_before)
        raise PlatformUnavailable(f"instagram: unknown container status {code!r}", code="bad_response")

    # --- Plumbing ------------------------------------------------------------------------------------

    @property
    def _oauth_api(self) -> str:
        return settings.LAYERS_INSTAGRAM_API_BASE.rstrip("/")

    @property
    def _graph_base(self) -> str:
        return settings.LAYERS_INSTAGRAM_GRAPH_BASE.rstrip("/")

    def _graph(
        self,
        http: httpx.Client,
        method: str,
        path: str,
        *,
        access_token: str,
        params: dict | None = None,
        data: dict | None = None,
        versioned: bool = True,
        base: str | None = None,
    ) -> dict:
        root = (base or self._graph_base).rstrip("/")
        url = f"{root}/{settings.LAYERS_INSTAGRAM_API_VERSION}{path}" if versioned else f"{root}{path}"
        params = dict(params or {})
        if method == "POST":
            data = {**(data or {}), "access_token": access_token}
        else:
            params["access_token"] = access_token
        response = platform_request(http, self.platform, method, url, params=params, data=data)
        body = json_body(response)
        _raise_for_graph(response, body, secrets=(access_token, settings.LAYERS_INSTAGRAM_CLIENT_SECRET))
        return body

    def _container_status(self, http: httpx.Client, access_token: str, container_id: str) -> dict:
        return self._graph(
            http, "GET", f"/{container_id}", access_token=access_token, params={"fields": "id,status_code,status"}
        )

    def _published(self, http: httpx.Client, access_token: str, media_id: str) -> PublishStatus:
        # The post is live whatever happens next: a failed permalink lookup must not lose the media id.
        try:
            media = self._graph(
                http, "GET", f"/{media_id}", access_token=access_token, params={"fields": "id,permalink"}
            )
        except PlatformError:
            return PublishStatus(state="published", external_id=media_id)
        return PublishStatus(state="published", external_id=media_id, external_url=_permalink(media, media_id))

    def _recover_published(
        self, http: httpx.Client, access_token: str, user_id: str, caption: str | None, not_before: datetime | None
    ) -> PublishStatus:
        """The container was published but its media id was never recorded (the worker died right after
        media_publish). The Graph API has no container → media link (a container only answers id /
        status_code / status), so the account's latest media are searched for the caption. Captions repeat
        (an empty one most of all), so only media published since `not_before` (when the post was scheduled:
        its media cannot be older) count, and two candidates are no answer: a wrong id would give the post
        another post's URL and metrics. Without a caption, or without exactly one match, the post is reported
        published with no id, and it keeps none: nothing asks again (the metrics sync's follow-up of missing
        ids is TikTok's moderation only), so it gets no URL and no metrics."""
        if caption is None:
            return PublishStatus(state="published")
        listing = self._graph(
            http, "GET", f"/{user_id}/media", access_token=access_token,
            params={"fields": "id,permalink,caption,timestamp", "limit": RECOVERY_PAGE},
        )  # fmt: skip
        earliest = not_before - RECOVERY_CLOCK_SKEW if not_before else None
        items = listing.get("data")
        # Items that are no object, or whose caption is no string (an AttributeError at every status check: the
        # post stayed `publishing`), are no match. An id that cannot be used makes no match either, so that
        # two candidates, one of them unreadable, are still two.
        matches = [
            media
            for media in (items if isinstance(items, list) else [])
            if isinstance(media, dict)
            and media.get("id")
            and isinstance(media.get("caption") or "", str)
            and (media.get("caption") or "").strip() == caption.strip()
            and (earliest is None or _published_since(media.get("timestamp"), earliest))
        ]
        media_id = platform_id(matches[0]["id"]) if len(matches) == 1 else None
        if media_id is None:
            return PublishStatus(state="published")
        return PublishStatus(state="published", external_id=media_id, external_url=_permalink(matches[0], media_id))

    def _deliver_draft(
        self, *, access_token: str, user_id: str, media_type: str, media: list[MediaItem], caption: str
    ) -> PublishResult:
        """Instagram has no draft / inbox API. A "draft" is delivered to the creator for manual posting
        through a Layers extension endpoint, `POST {LAYERS_INSTAGRAM_DRAFT_DELIVERY_URL}/{ver}/{ig_user_id}/
        layers_draft_deliveries` (form: media_type, media = JSON list of {url, kind}, caption, access_token),
        answering `{"id"}` and Graph-style errors. The sandbox implements and records it; in live mode
        it is refused unless a delivery service is configured. That service receives the creator's token
        to prove the delivery is on their behalf, so it must be one Layers operates."""
        base = settings.LAYERS_INSTAGRAM_DRAFT_DELIVERY_URL
        if not base:
            raise RequestRejected(
                "instagram: no draft delivery service is configured (Instagram has no draft API)",
                code="draft_delivery_unavailable",
            )
        with http_session(self._http) as http:
            answer = self._graph(
                http, "POST", f"/{user_id}/layers_draft_deliveries", access_token=access_token, base=base,
                data={
                    "media_type": media_type,
                    "media": json.dumps([{"url": item.url, "kind": item.kind} for item in media]),
                    "caption": caption,
                },
            )  # fmt: skip
        if not answer.get("id"):
            raise PlatformUnavailable(
                "instagram: no delivery id in the answer", code="bad_response", outcome_unknown=True
            )
        return PublishResult(publish_id=f"{DELIVERY_PREFIX}{answer['id']}")


def _published_since(timestamp, earliest: datetime) -> bool:
    """Whether a media's `timestamp` ("2026-04-18T12:30:00+0000") is at or after `earliest`; a missing or
    unreadable one is not: better no id than another post's."""
    try:
        return datetime.strptime(str(timestamp), "%Y-%m-%dT%H:%M:%S%z") >= earliest
    except ValueError:
        return False


def _container_error_code(status: str) -> str | None:
    """Instagram's reason for a failed container (2207026 unsupported video, 2207052 media not fetchable, ...).
    Meta's IG Container reference documents `status` as the error subcode itself ("2207052"); what is seen
    in practice is a sentence, "Error: Media upload has failed with error code 2207052". Both are read: a
    subcode missed here would fail a post Meta says to retry, or call refused media something else."""
    status = status.strip()
    if status.isdigit():
        return status
    match = re.search(r"error code (\d+)", status)
    return match.group(1) if match else None


def _permissions(value) -> tuple[str, ...]:
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    if isinstance(value, str):
        return tuple(p for p in value.replace(" ", ",").split(",") if p)
    return ()


# Instagram's long-lived token lives 60 days (PLATFORMS.md; expires_in 5183944 in its example): an expires_in
# that cannot be read is taken at that, and none is taken at longer.
LONG_LIVED_LIFETIME = timedelta(days=60)


def _token_lifetime(expires_in) -> timedelta:
    return token_lifetime(
        expires_in, platform="instagram", field="expires_in", fallback=LONG_LIVED_LIFETIME, longest=LONG_LIVED_LIFETIME
    )


def _is_token(value) -> bool:
    """Whether a token answer's access_token is one: a string (a number or a list sent on would be refused as a
    parameter, or stored as its repr), not empty."""
    return isinstance(value, str) and bool(value)


def _media_params(item: MediaItem) -> dict:
    if item.kind == "video":
        return {"media_type": "VIDEO", "video_url": item.url}
    return {"image_url": item.url}


def _check_media(*, mode: str, media_type: str, media: list[MediaItem]) -> None:
    if mode not in ("publish", "draft"):
        raise RequestRejected(f"instagram: unknown mode {mode!r}", code="invalid_mode")
    kinds = [item.kind for item in media]
    if media_type in ("video", "image") and kinds == [media_type]:
        return
    low, high = CAROUSEL_ITEMS
    if media_type == "carousel" and low <= len(kinds) <= high and set(kinds) <= {"image", "video"}:
        return
    raise RequestRejected(f"instagram: {media_type} does not fit {kinds}", code="invalid_media")


def _insight_value(item: dict) -> int | None:
    # Older answers carry values[0].value, newer ones total_value.value; no value is no figure (None), not 0,
    # and neither is one in another shape (`values` as an object raised a KeyError at every run).
    if isinstance(item.get("total_value"), dict):
        return count(item["total_value"].get("value"))
    values = item.get("values")
    if isinstance(values, list) and values and isinstance(values[0], dict):
        return count(values[0].get("value"))
    return None


def _quota_used_up(limit: dict) -> bool:
    """Whether content_publishing_limit's answer says the 24 h quota is used up. The check is advisory (it
    spares containers that could not be published; media_publish is refused past the quota anyway, and that
    refusal is retried), so an answer it cannot read says no, with a warning. Read with int() it raised
    (ValueError, AttributeError, OverflowError), and the worker's run was counted as dead: after 5 the post
    failed "the worker died or raised", for every post while Meta sent that shape."""
    data = limit.get("data")
    entry = data[0] if isinstance(data, list) and data else {}
    config = entry.get("config") if isinstance(entry, dict) else None
    total = count(config.get("quota_total")) if isinstance(config, dict) else None
    usage = count(entry.get("quota_usage") or 0) if isinstance(entry, dict) else None
    if total is None or usage is None:
        if data or (isinstance(entry, dict) and entry.get("config") is not None):
            log.warning("instagram: content_publishing_limit answer not read (not the documented shape)")
        return False
    return total > 0 and usage >= total


def _permalink(media: dict, media_id: str) -> str | None:
    """A media's permalink as it may be handed to partners (fields.https_url), or None with a warning."""
    permalink = https_url(media.get("permalink"))
    if permalink is None and media.get("permalink") is not None:
        log.warning("instagram: permalink of media %s not kept: no https URL of a permalink's shape", media_id)
    return permalink


def _code_of(exc: PlatformError) -> int | None:
    return as_int(exc.code.split("/")[0])


def _needs_reauth(exc: RequestRejected) -> PermissionMissing:
    return PermissionMissing(str(exc), code=exc.code, status=exc.status, outcome_unknown=False)


@contextmanager
def _missing_permission_needs_reauth():
    """A publishing call refused for a missing permission (codes 10 and 200-299: the token was granted
    without instagram_business_content_publish) will be refused for every post of the account until the
    creator grants it: that is a reauth, as TikTok's scope_not_authorized is, not refused content. Reads
    keep their own handling (insights fall back to the counts any token can read)."""
    try:
        yield
    except RequestRejected as exc:
        if _code_of(exc) in PERMISSION_CODES:
            raise _needs_reauth(exc) from None
        raise


def _usage_retry_after(response: httpx.Response) -> float | None:
    """Meta's throttling headers say, in minutes, when access comes back. A header that does not say it
    (not JSON, nested too deep for Python's decoder, another shape) is ignored with a warning: the throttle
    stands, without a wait of its own, and the caller's backoff applies."""
    raw = response.headers.get(USAGE_HEADER)
    try:
        usage = json_loads(raw) if raw else {}
        minutes = max(
            (int(entry.get("estimated_time_to_regain_access") or 0) for entries in usage.values() for entry in entries),
            default=0,
        )
    except (ValueError, TypeError, AttributeError):
        # Not the header itself: it is Meta's to shape, and could be long.
        log.warning("instagram: %s header ignored: not the usage JSON Meta documents", USAGE_HEADER)
        return None
    return minutes * 60.0 if minutes else None


def _raise_for_graph(response: httpx.Response, body, *, secrets: tuple[str | None, ...]) -> None:
    """Raise the typed error a Graph answer means. Codes decide, not statuses: a dead token is code 190
    with HTTP 400 (or 102); the codes 4, 17, 32, 341, 613, 80002, a temporary policy block (368) and the
    publishing-quota subcode are throttling, except a post suspected as spam (subcode 2207051, with code 4)."""
    status = response.status_code
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = as_int(error.get("code"))
        subcode = as_int(error.get("error_subcode"))
        label = f"{code}/{subcode}" if subcode else str(code)
        message = redact(f"instagram {label}: {error.get('message') or ''}", *secrets)
        if code in TOKEN_INVALID_CODES:
            raise TokenInvalid(message, code=label, status=status)
        if subcode == SPAM_SUBCODE:
            raise RequestRejected(message, code=label, status=status)
        # A 429 is a rate limit whatever its code says (a Graph error without one of the throttling codes was
        # refused content: the post failed at once, "instagram None: Too Many Requests").
        if code in THROTTLING_CODES or subcode == QUOTA_SUBCODE or status == 429:
            raise RateLimited(message, code=label, status=status, retry_after=_usage_retry_after(response))
        if status >= 500 or code in TRANSIENT_CODES or subcode in TRANSIENT_SUBCODES or error.get("is_transient"):
            raise PlatformUnavailable(message, code=label, status=status)
        raise RequestRejected(message, code=label, status=status)
    if status == 429:
        raise RateLimited("instagram: rate limited", code="http_429", status=status)
    # From here on the answer is not a Graph error. A 5xx is a gateway's or a crashed server's page, a 2xx
    # that is not JSON was cut short or replaced by a proxy: either way the request may have been carried out.
    if status >= 500:
        raise PlatformUnavailable(
            f"instagram: HTTP {status}", code=f"http_{status}", status=status, outcome_unknown=True
        )
    if status >= 400:
        # Graph answers its errors with its error object (Graph API > Handling Errors), so a 4xx without one is
        # an edge's page in front of it (a CDN's or a proxy's 403 or 404). Read as Meta's refusal, it failed the
        # post as refused content (PLATFORM_REJECTED), for a post no one had refused. An edge answering 4xx
        # turned the request away (it did not carry it out): an outage, retried, and a publish may be sent again.
        raise PlatformUnavailable(
            f"instagram: HTTP {status} without Graph's error object", code=f"http_{status}", status=status
        )
    if not isinstance(body, dict):
        raise PlatformUnavailable(
            "instagram: the answer is not JSON", code="bad_response", status=status, outcome_unknown=True
        )


def _raise_for_oauth(response: httpx.Response, body, *, secrets: tuple[str | None, ...]) -> None:
    """api.instagram.com's token endpoint: `{"error_type", "code", "error_message"}` (or a Graph error)."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        _raise_for_graph(response, body, secrets=secrets)
    status = response.status_code
    if isinstance(body, dict) and body.get("error_type"):
        error_type = platform_text(body["error_type"])
        message = redact(f"instagram {error_type}: {body.get('error_message') or ''}", *secrets)
        if status == 429 or as_int(body.get("code")) == 429:
            raise RateLimited(message, code=error_type, status=status)
        if status >= 500:
            raise PlatformUnavailable(message, code=error_type, status=status)
        raise RequestRejected(message, code=error_type, status=status)
    _raise_for_graph(response, body, secrets=secrets)
