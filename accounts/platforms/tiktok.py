"""TikTok: Login Kit for Web (OAuth 2) and the Content Posting API, speaking the wire format of
PLATFORMS.md. Base URLs come from settings (the live API or this server's sandbox).

Two error shapes exist: the OAuth endpoints answer a flat `{"error": "invalid_grant", ...}` (sometimes with
HTTP 200, so the body is parsed whatever the status), every other v2 endpoint answers the envelope
`{"data": {...}, "error": {"code": "ok" | ..., "message", "log_id"}}` (spam-risk refusals also with HTTP 200).
"""

import re
from collections.abc import Callable, Iterable
from dataclasses import replace
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
    stopped_partway,
)
from .fields import count, flag, int64_id, platform_id, tiktok_handle, unreadable_answer
from .http import http_session, json_body, platform_request, platform_text, redact
from .lifetimes import token_lifetime

# video.list is not needed to connect or post, but /v2/video/query/ (metrics) refuses tokens without it.
DEFAULT_SCOPES = ("user.info.basic", "user.info.profile", "video.publish", "video.upload", "video.list")
# Every authorize URL asks for it, whatever scopes the partner chose: without it /v2/user/info/ answers
# nothing, so the consenting user could not be told apart and no token could ever be verified.
BASIC_SCOPE = "user.info.basic"
# `username` needs user.info.profile, which a partner may leave out (a reauth with the publishing scopes only):
# such a token is asked for the basic fields alone, and the caller keeps the handle it already knows.
PROFILE_SCOPE = "user.info.profile"
BASIC_FIELDS = "open_id,union_id,avatar_url,display_name"
PROFILE_FIELDS = f"{BASIC_FIELDS},username"
METRIC_FIELDS = "id,view_count,like_count,comment_count,share_count"
JSON_CONTENT_TYPE = "application/json; charset=UTF-8"
# /v2/video/query/ takes at most 20 ids per call.
METRICS_BATCH = 20
# Most public first: creator_info lists what this creator (and an unaudited app: SELF_ONLY only) allows.
PRIVACY_PREFERENCE = ("PUBLIC_TO_EVERYONE", "MUTUAL_FOLLOW_FRIENDS", "FOLLOWER_OF_CREATOR", "SELF_ONLY")
# The token was not granted the scope the call needs (PermissionMissing); it still works for the others.
SCOPE_NOT_AUTHORIZED = "scope_not_authorized"
# TikTok's v2 error codes also have scope_permission_missed, HTTP 400: "some fields need additional scopes", the
# answer to a `fields` list naming one the token's scopes do not cover (user/info's `username` without
# user.info.profile). Read by _profile as the refusal of `username` it is; elsewhere a refusal (RequestRejected).
SCOPE_PERMISSION_MISSED = "scope_permission_missed"
FIELD_SCOPE_REFUSALS = frozenset({SCOPE_NOT_AUTHORIZED, SCOPE_PERMISSION_MISSED})
TOKEN_INVALID_CODES = frozenset({"access_token_invalid", SCOPE_NOT_AUTHORIZED})
MAX_PHOTOS = 35
# TikTok counts a caption in UTF-16 code units ("max 2200 UTF-16 runes"): an emoji outside the Basic
# Multilingual Plane counts two. A video's caption is its post_info.title, a photo post's its description.
VIDEO_TITLE_MAX = 2200
PHOTO_DESCRIPTION_MAX = 4000


def utf16_length(text: str) -> int:
    """The length TikTok counts: UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def caption_limit(*, mode: str, media_type: str) -> int | None:
    """How many UTF-16 code units of caption TikTok takes for a post in `mode` (publish | draft) of
    `media_type`; None where the caption is not sent (a video uploaded to the inbox has none)."""
    if media_type != "video":
        return PHOTO_DESCRIPTION_MAX  # direct post and inbox upload alike send it as the description
    return VIDEO_TITLE_MAX if mode == "publish" else None


FAIL_REASONS = {
    "file_format_check_failed": "The media format is not supported.",
    "duration_check_failed": "The video duration is outside the allowed range.",
    "frame_rate_check_failed": "The video frame rate is not supported.",
    "picture_size_check_failed": "The picture size is not supported.",
    "video_pull_failed": "TikTok could not download the video from its URL.",
    "photo_pull_failed": "TikTok could not download a photo from its URL.",
    "publish_cancelled": "The post was cancelled.",
    "auth_removed": "The creator removed the app's authorization.",
    "spam_risk_too_many_posts": "The creator reached the daily post limit.",
    "spam_risk_user_banned_from_posting": "The creator is banned from posting.",
    "spam_risk_text": "TikTok refused the caption.",
    "spam_risk": "TikTok refused the post.",
    "internal": "TikTok failed internally; retrying may succeed.",
}


class TikTokClient:
    platform = "tiktok"

    def __init__(self, *, http: httpx.Client | None = None):
        self._http = http

    # --- OAuth ---------------------------------------------------------------------------------------

    def authorize_url(
        self, *, state: str, redirect_uri: str, scopes: list[str] | None = None, usage_note: str | None = None
    ) -> str:
        params = {
            "client_key": settings.LAYERS_TIKTOK_CLIENT_KEY,
            "scope": ",".join(dict.fromkeys((BASIC_SCOPE, *(scopes or DEFAULT_SCOPES)))),
            "response_type": "code",
            "redirect_uri": redirect_uri,
            "state": state,
        }
        # Not a TikTok parameter: only the sandbox's consent page shows it.
        if usage_note and settings.LAYERS_PLATFORMS == "sandbox":
            params["layers_usage_note"] = usage_note
        base = settings.LAYERS_TIKTOK_AUTHORIZE_URL
        return f"{base}{'&' if '?' in base else '?'}{urlencode(params)}"

    def exchange_code(self, *, code: str, redirect_uri: str) -> TokenSet:
        body = self._token_request(
            {"code": code, "grant_type": "authorization_code", "redirect_uri": redirect_uri},
            grant="authorization_code",
            secrets=(code,),
        )
        return _token_set(body, platform_user_id=None)

    def refresh(self, *, tokens: TokenSet) -> TokenSet:
        if not tokens.refresh_token:
            raise TokenInvalid("tiktok: no refresh token to refresh with", code="no_refresh_token")
        body = self._token_request(
            {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token},
            grant="refresh_token",
            secrets=(tokens.refresh_token, tokens.access_token),
        )
        fresh = _token_set(body, platform_user_id=tokens.platform_user_id)
        if fresh.refresh_token:
            return fresh
        # TikTok documents a (rotated) refresh_token in every refresh answer. One without it (missing or
        # empty) has not rotated it: the one sent still works, and every caller stores the whole set (social
        # accounts, pool accounts), so returning None here would blank it and the next refresh would have
        # nothing to send (reauth_required, or a retired pool account, for a grant that is fine).
        return replace(fresh, refresh_token=tokens.refresh_token, refresh_expires_at=tokens.refresh_expires_at)

    def revoke(self, *, access_token: str) -> bool:
        form = {
            "client_key": settings.LAYERS_TIKTOK_CLIENT_KEY,
            "client_secret": settings.LAYERS_TIKTOK_CLIENT_SECRET,
            "token": access_token,
        }
        with http_session(self._http) as http:
            response = platform_request(http, self.platform, "POST", f"{self._api}/v2/oauth/revoke/", data=form)
        body = json_body(response)
        try:
            _raise_for_answer(response, body, grant="revoke", secrets=self._secrets(access_token))
        except TokenInvalid:
            # invalid_grant: the token is dead, revoked or merely expired. Nothing was withdrawn with it, and
            # whether the grant is gone TikTok does not say: after an expired access token its refresh token
            # still works (the caller renews it and revokes again: accounts.services._revoke_at_platform).
            return False
        # Done only when TikTok says so: a 2xx with its JSON (or, as RFC 7009 allows, nothing). A proxy's page
        # with 200, or a redirect, was read as revoked: the customer's grant stayed alive at TikTok and nothing
        # said so (the caller logs this error and notes it on the account's history).
        if not 200 <= response.status_code < 300 or (response.content.strip() and not isinstance(body, dict)):
            raise PlatformUnavailable(
                "tiktok: the revoke answer is not TikTok's", code="bad_response", status=response.status_code,
            )  # fmt: skip
        return True

    # --- Reads ---------------------------------------------------------------------------------------

    def get_profile(self, *, access_token: str, scopes: Iterable[str] = ()) -> Profile:
        """The user behind the token. `scopes`: what the token was granted (TokenSet.scopes), when known.
        Without user.info.profile the profile has no `username` (empty): asking for it would be refused with
        scope_not_authorized, which otherwise means a dead token."""
        with http_session(self._http) as http:
            return self._profile(http, access_token, scopes)

    def fetch_metrics(self, *, access_token: str, platform_user_id: str, external_ids: list[str]) -> dict[str, Metrics]:
        """Metrics of the given posts; none for a token without `video.list` (a partner may reauthorize with
        the publishing scopes only): such a token still posts, so its 401 scope_not_authorized here is "no
        metrics for this account", not the dead token it means on a publishing call."""
        ids = list(dict.fromkeys(str(i) for i in external_ids))
        result: dict[str, Metrics] = {}
        with http_session(self._http) as http:
            for start in range(0, len(ids), METRICS_BATCH):
                try:
                    data = self._call(
                        http,
                        "POST",
                        "/v2/video/query/",
                        access_token=access_token,
                        params={"fields": METRIC_FIELDS},
                        json={"filters": {"video_ids": ids[start : start + METRICS_BATCH]}},
                    )
                except PlatformError as exc:
                    if isinstance(exc, TokenInvalid) and exc.code == "scope_not_authorized":
                        return result
                    stopped_partway(
                        exc,
                        readings=result,
                        asking=ids[start : start + METRICS_BATCH],
                        rest=ids[start + METRICS_BATCH :],
                    )
                    raise
                videos = data.get("videos")
                for video in videos if isinstance(videos, list) else []:
                    # An entry that is no object, or whose id is not one, is about no post we can tell: passed
                    # over (it raised, and the account's metrics stopped at every run). A field TikTok left out
                    # of a video's answer, or gave in no readable shape, is unknown (None), not 0. The range is
                    # the sync's to check: it knows the post, and what its columns hold.
                    video_id = int64_id(video.get("id")) if isinstance(video, dict) else None
                    if video_id is None:
                        continue
                    result[video_id] = Metrics(
                        views=count(video.get("view_count")),
                        likes=count(video.get("like_count")),
                        comments=count(video.get("comment_count")),
                        shares=count(video.get("share_count")),
                    )
        return result

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
        _check_media(mode=mode, media_type=media_type, media=media)
        with http_session(self._http) as http:
            if mode == "draft":
                path, payload = _draft_request(media_type=media_type, media=media, caption=caption)
            else:
                # privacy_level must be one of this creator's options, and creator_info is also where a
                # creator at the daily cap or banned from posting is refused (HTTP 200, error.code spam_risk_*).
                creator = self._call(http, "POST", "/v2/post/publish/creator_info/query/", access_token=access_token)
                with unreadable_answer("tiktok: creator_info", outcome_unknown=False):  # nothing is created yet
                    path, payload = _direct_post_request(
                        creator=creator, media_type=media_type, media=media, caption=caption
                    )
            if before_create is not None:
                before_create()  # the init call below is the post itself: no idempotency key exists
            data = self._call(http, "POST", path, access_token=access_token, json=payload)
        publish_id = data.get("publish_id")
        if not publish_id:
            # TikTok said "ok" without saying to what: the post may exist.
            raise PlatformUnavailable("tiktok: no publish_id in the answer", code="bad_response", outcome_unknown=True)
        kept = platform_id(publish_id, in_paths=False)
        if kept is None:
            # TikTok took the post, with an id Layers cannot keep (PLATFORMS.md: at most 64 characters; one over
            # the column's 128, or with a NUL, failed the write): without it the post's status cannot be asked,
            # so this is an answer that does not say what happened, as one cut short. The post may be live:
            # failed, never sent again (storing it raised, and the post failed "the worker stopped").
            shape = f"{len(publish_id)} characters" if isinstance(publish_id, str) else type(publish_id).__name__
            raise PlatformUnavailable(
                f"tiktok: a publish_id Layers cannot keep ({shape})", code="bad_response", outcome_unknown=True
            )
        return PublishResult(publish_id=kept)

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
        # `publish` changes nothing: TikTok goes on with a post on its own, and this call only reads.
        with http_session(self._http) as http, unreadable_answer("tiktok: publish status"):
            data = self._call(
                http,
                "POST",
                "/v2/post/publish/status/fetch/",
                access_token=access_token,
                json={"publish_id": publish_id},
            )
            status = data.get("status")
            if status in ("PROCESSING_UPLOAD", "PROCESSING_DOWNLOAD"):
                return PublishStatus(state="processing")
            if status == "SEND_TO_USER_INBOX":
                return PublishStatus(state="sent_to_inbox")
            if status == "FAILED":
                reason = platform_text(data.get("fail_reason")) or "unknown"
                return PublishStatus(state="failed", fail_code=reason, fail_reason=FAIL_REASONS.get(reason, reason))
            if status == "PUBLISH_COMPLETE":
                # The field is spelled "publicaly" in the API. It stays empty until moderation is done, and
                # forever for posts that are not public (SELF_ONLY): the post is live, its public id unknown.
                post_id = _public_post_id(
                    data.get("publicaly_available_post_id") or data.get("publicly_available_post_id")
                )
                if post_id is None:
                    return PublishStatus(state="published")
                # A token without user.info.profile gives no username: the post is live all the same, its
                # public URL unknown (null) rather than the post failing on a token that just worked. So is a
                # username no URL can be built with (a "/" in it would make it another page's).
                # Nor does a token TikTok refuses even the basic fields for (no user.info.basic: a reauth, which
                # the health check asks for): the post is live, and failing it here told the partner to
                # reauthorize and schedule it again, posting it twice.
                try:
                    username = tiktok_handle(self._profile(http, access_token, ()).username)
                except PermissionMissing:
                    username = None
                url = f"https://www.tiktok.com/@{username}/video/{post_id}" if username else None
                return PublishStatus(state="published", external_id=post_id, external_url=url)
        raise PlatformUnavailable(f"tiktok: unknown publish status {status!r}", code="bad_response")

    # --- Plumbing ------------------------------------------------------------------------------------

    @property
    def _api(self) -> str:
        return settings.LAYERS_TIKTOK_API_BASE.rstrip("/")

    def _secrets(self, *values: str | None) -> tuple[str | None, ...]:
        return (*values, settings.LAYERS_TIKTOK_CLIENT_SECRET)

    def _profile(self, http: httpx.Client, access_token: str, scopes: Iterable[str]) -> Profile:
        granted = set(scopes)
        fields = PROFILE_FIELDS if not granted or PROFILE_SCOPE in granted else BASIC_FIELDS
        try:
            data = self._user_info(http, access_token, fields)
        except (TokenInvalid, RequestRejected) as exc:
            # Scopes not known (or the user took user.info.profile back since): the refusal is about
            # `username` alone, so ask again without it. A refusal of the basic fields is a dead token.
            # TikTok answers it as scope_not_authorized (401) or scope_permission_missed (400, "some fields
            # need additional scopes"): the 400 was taken for a refusal of the call, so a live post whose URL
            # needed the handle stayed `publishing` for a day, then failed.
            if exc.code not in FIELD_SCOPE_REFUSALS or fields == BASIC_FIELDS:
                raise
            fields = BASIC_FIELDS
            data = self._user_info(http, access_token, fields)
        user = data.get("user")
        # Not an object: no user (an AttributeError here left a live post `publishing` at every status check).
        user = user if isinstance(user, dict) else {}
        if not user.get("open_id"):
            raise PlatformUnavailable("tiktok: no open_id in the user info", code="bad_response")
        username = platform_text(user.get("username"))
        return Profile(
            platform_user_id=str(user["open_id"]),
            username=username,
            display_name=platform_text(user.get("display_name")) or username,
            avatar_url=user.get("avatar_url") or None,
        )

    def _user_info(self, http: httpx.Client, access_token: str, fields: str) -> dict:
        try:
            return self._call(http, "GET", "/v2/user/info/", access_token=access_token, params={"fields": fields})
        except RequestRejected as exc:
            if exc.code != SCOPE_PERMISSION_MISSED or fields != BASIC_FIELDS:
                raise
            # The basic fields themselves refused for a scope: the token lacks user.info.basic, which every
            # authorize URL asks for. A reauth, as scope_not_authorized is (PermissionMissing), not a refusal.
            raise PermissionMissing(str(exc), code=exc.code, status=exc.status) from None

    def _token_request(self, form: dict, *, grant: str, secrets: tuple[str | None, ...]) -> dict:
        form = {
            "client_key": settings.LAYERS_TIKTOK_CLIENT_KEY,
            "client_secret": settings.LAYERS_TIKTOK_CLIENT_SECRET,
            **form,
        }
        with http_session(self._http) as http:
            response = platform_request(
                http, self.platform, "POST", f"{self._api}/v2/oauth/token/", data=form,
                headers={"Cache-Control": "no-cache"},
            )  # fmt: skip
        body = json_body(response)
        _raise_for_answer(response, body, grant=grant, secrets=self._secrets(*secrets))
        if not isinstance(body, dict) or not isinstance(body.get("access_token"), str) or not body["access_token"]:
            raise PlatformUnavailable("tiktok: no access_token in the token answer", code="bad_response")
        return body

    def _call(
        self,
        http: httpx.Client,
        method: str,
        path: str,
        *,
        access_token: str,
        params: dict | None = None,
        json: dict | None = None,
    ) -> dict:
        headers = {"Authorization": f"Bearer {access_token}"}
        if method == "POST":
            # Every v2 POST this client makes is a JSON endpoint, and TikTok documents each with this header,
            # creator_info/query too, which has no body (none is sent, as in TikTok's example).
            headers["Content-Type"] = JSON_CONTENT_TYPE
        response = platform_request(
            http, self.platform, method, f"{self._api}{path}", params=params, json=json, headers=headers
        )
        body = json_body(response)
        _raise_for_answer(response, body, grant=None, secrets=self._secrets(access_token))
        if not isinstance(body, dict):
            # A 2xx that is not TikTok's envelope (cut short, a proxy's page): whatever was asked may be done.
            raise PlatformUnavailable(
                "tiktok: the answer is not JSON", code="bad_response", status=response.status_code,
                outcome_unknown=True,
            )  # fmt: skip
        data = body.get("data")
        return data if isinstance(data, dict) else {}


# TikTok's token lifetimes (PLATFORMS.md: 24 h / 365 d, or 2 h / 180 d, depending on the doc version): an
# access token whose expires_in cannot be read is taken to live the shorter 2 h, none longer than the 24 h
# documented; a refresh token whose refresh_expires_in cannot be read has an unknown expiry (nothing is
# scheduled on it: it is shown to staff), none longer than a year.
ACCESS_LIFETIME, ACCESS_LIFETIME_LONGEST = timedelta(hours=2), timedelta(hours=24)
REFRESH_LIFETIME_LONGEST = timedelta(days=365)


def _token_set(body: dict, *, platform_user_id: str | None) -> TokenSet:
    """The tokens of a token answer (_token_request checked its access_token). An open_id or refresh_token that
    is no string is a typed error (PlatformUnavailable, which every caller handles): TikTok may have rotated
    the refresh token by then, but the repr of a list stored as a token would only fail later, further from
    the cause. A lifetime never is: the tokens are kept whatever it says (lifetimes.token_lifetime)."""
    now = timezone.now()
    open_id = body.get("open_id") or platform_user_id
    if not isinstance(open_id, str | int) or isinstance(open_id, bool) or not str(open_id):
        raise PlatformUnavailable("tiktok: no open_id in the token answer", code="bad_response")
    refresh_token = body.get("refresh_token") or None
    if refresh_token is not None and not isinstance(refresh_token, str):
        raise PlatformUnavailable("tiktok: the token answer's refresh_token is not a string", code="bad_response")
    lifetime = token_lifetime(
        body.get("expires_in"), platform="tiktok", field="expires_in",
        fallback=ACCESS_LIFETIME, longest=ACCESS_LIFETIME_LONGEST,
    )  # fmt: skip
    # Read only beside a refresh token: an answer that did not rotate it says nothing of its lifetime (refresh).
    refresh_lifetime = refresh_token and token_lifetime(
        body.get("refresh_expires_in"), platform="tiktok", field="refresh_expires_in",
        fallback=None, longest=REFRESH_LIFETIME_LONGEST,
    )  # fmt: skip
    return TokenSet(
        access_token=body["access_token"],
        expires_at=now + lifetime,
        platform_user_id=str(open_id),
        refresh_token=refresh_token,
        refresh_expires_at=now + refresh_lifetime if refresh_lifetime else None,
        scopes=_granted_scopes(body.get("scope")),
        lifetime=lifetime,
    )


def _granted_scopes(value) -> tuple[str, ...]:
    """The token answer's `scope`: documented as a comma-separated string; a list of them is read too."""
    parts = value if isinstance(value, list) else re.split(r"[,\s]+", value if isinstance(value, str) else "")
    return tuple(part for part in parts if isinstance(part, str) and part)


def _check_media(*, mode: str, media_type: str, media: list[MediaItem]) -> None:
    """Refuse what TikTok cannot take before spending a rate-limited call on it."""
    if mode not in ("publish", "draft"):
        raise RequestRejected(f"tiktok: unknown mode {mode!r}", code="invalid_mode")
    kinds = [item.kind for item in media]
    if media_type == "video" and kinds == ["video"]:
        return
    if media_type == "image" and kinds == ["image"]:
        return
    if media_type == "carousel" and 2 <= len(kinds) <= MAX_PHOTOS and set(kinds) == {"image"}:
        return  # TikTok photo posts: images only
    raise RequestRejected(f"tiktok: {media_type} does not fit {kinds}", code="invalid_media")


def _source_info(media_type: str, media: list[MediaItem]) -> dict:
    if media_type == "video":
        return {"source": "PULL_FROM_URL", "video_url": media[0].url}
    return {"source": "PULL_FROM_URL", "photo_images": [item.url for item in media], "photo_cover_index": 0}


def _draft_request(*, media_type: str, media: list[MediaItem], caption: str) -> tuple[str, dict]:
    """Upload to the creator's inbox: they finish and post it in the TikTok app."""
    if media_type == "video":
        return "/v2/post/publish/inbox/video/init/", {"source_info": _source_info(media_type, media)}
    return "/v2/post/publish/content/init/", {
        "media_type": "PHOTO",
        "post_mode": "MEDIA_UPLOAD",
        "post_info": {"description": caption},
        "source_info": _source_info(media_type, media),
    }


def _public_post_id(post_ids) -> str | None:
    """The public post id in `publicaly_available_post_id`, "a list of int64", or None when there is none
    readable: it is then asked again by the follow-up of late ids (scheduling.services._posts_attach_late_ids),
    as before moderation. A bare number or string is taken as the one id it is. str(post_ids[0]) made a
    string's first character the id ("7", its URL …/video/7), and a nested list its Python repr; a bare number
    raised a TypeError at every status check, and the live post stayed `publishing` for ever."""
    if isinstance(post_ids, list):
        return int64_id(post_ids[0]) if post_ids else None
    return int64_id(post_ids)


def _direct_post_request(*, creator: dict, media_type: str, media: list[MediaItem], caption: str) -> tuple[str, dict]:
    options = creator.get("privacy_level_options")
    if options is None:
        # No options at all: `data` was no object (_call reads it as {}) or left them out. That is an answer
        # Layers cannot read, asked again; only a creator listing none ([]) is refused the post below.
        raise PlatformUnavailable(
            "tiktok: creator_info gave no privacy_level_options", code="bad_response", outcome_unknown=False
        )
    if not isinstance(options, list):
        # A number raised a TypeError, a string was searched for substrings. No refusal of the post (that would
        # fail it for good) and no crash (counted as a dead worker's run): an answer to ask again for, and
        # nothing was created yet.
        raise PlatformUnavailable(
            "tiktok: creator_info's privacy_level_options is not a list", code="bad_response", outcome_unknown=False
        )
    privacy = next((level for level in PRIVACY_PREFERENCE if level in options), None)
    if privacy is None:
        raise RequestRejected("tiktok: the creator offers no privacy level", code="privacy_level_option_mismatch")
    # A creator who turned comments (duets, stitches) off must not have them turned on by us: what is no yes or
    # no reads as off (bool() read the string "false" as true; that one is read as the no it says).
    disable_comment = flag(creator.get("comment_disabled"), unreadable=True)
    if media_type == "video":
        return "/v2/post/publish/video/init/", {
            "post_info": {
                "title": caption,
                "privacy_level": privacy,
                "disable_comment": disable_comment,
                "disable_duet": flag(creator.get("duet_disabled"), unreadable=True),
                "disable_stitch": flag(creator.get("stitch_disabled"), unreadable=True),
            },
            "source_info": _source_info(media_type, media),
        }
    # Photo posts: the caption goes to `description` (4000 UTF-16 units); `title` is limited to 90.
    return "/v2/post/publish/content/init/", {
        "media_type": "PHOTO",
        "post_mode": "DIRECT_POST",
        "post_info": {
            "description": caption,
            "privacy_level": privacy,
            "disable_comment": disable_comment,
            "auto_add_music": True,
        },
        "source_info": _source_info(media_type, media),
    }


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None


def _raise_for_answer(response: httpx.Response, body, *, grant: str | None, secrets: tuple[str | None, ...]) -> None:
    """Raise the typed error an answer means, whichever of TikTok's two error shapes it uses.

    `grant` is the OAuth grant being attempted (None for API calls): invalid_grant means a bad code on
    "authorization_code" (the request is wrong, RequestRejected) but a dead authorization on
    "refresh_token" (the account needs a reauth, TokenInvalid)."""
    status = response.status_code
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = platform_text(error.get("code"))
        if code and code != "ok":
            message = redact(f"tiktok {code}: {error.get('message') or ''}", *secrets)
            if code == SCOPE_NOT_AUTHORIZED:
                raise PermissionMissing(message, code=code, status=status)
            if code in TOKEN_INVALID_CODES:
                raise TokenInvalid(message, code=code, status=status)
            if code == "rate_limit_exceeded" or status == 429:
                raise RateLimited(message, code=code, status=status, retry_after=_retry_after(response))
            if code == "internal_error" or status >= 500:
                raise PlatformUnavailable(message, code=code, status=status)
            raise RequestRejected(message, code=code, status=status)
    elif isinstance(error, str) and error:
        error = platform_text(error)
        message = redact(f"tiktok {error}: {body.get('error_description') or ''}", *secrets)
        if error in ("invalid_grant", "access_denied"):
            if grant in ("refresh_token", "revoke"):
                raise TokenInvalid(message, code=error, status=status)
            raise RequestRejected(message, code=error, status=status)
        if error == "rate_limit_exceeded" or status == 429:
            raise RateLimited(message, code=error, status=status, retry_after=_retry_after(response))
        if error in ("server_error", "temporarily_unavailable") or status >= 500:
            raise PlatformUnavailable(message, code=error, status=status)
        raise RequestRejected(message, code=error, status=status)
    if status == 429:
        raise RateLimited(
            "tiktok: rate limited", code="rate_limit_exceeded", status=status, retry_after=_retry_after(response)
        )
    if status >= 500:
        # Not TikTok's own error (that is the envelope above) but a gateway's or a crashed server's page:
        # the request may have been carried out before it.
        raise PlatformUnavailable(f"tiktok: HTTP {status}", code=f"http_{status}", status=status, outcome_unknown=True)
    if status >= 400:
        # TikTok tells a dead token in its envelope (401 access_token_invalid, handled above), and every refusal of
        # its own as well (its envelope, or the OAuth `error`: PLATFORMS.md). A 4xx without either is a gateway's
        # or a proxy's page (a CDN's 403 or 404): reading a 401 as a dead token flipped every account behind that
        # edge to reauth_required, and any other as TikTok's refusal failed the post as refused content
        # (PLATFORM_REJECTED). The edge refused the request before TikTok saw it, so it is safe to send again.
        raise PlatformUnavailable(
            f"tiktok: HTTP {status} without TikTok's error envelope", code=f"http_{status}", status=status
        )
