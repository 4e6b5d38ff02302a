"""TikTok's open API (open.tiktokapis.com) as the sandbox serves it under /sandbox/tiktok/.

OAuth endpoints answer TikTok's flat error shape (`{"error": "invalid_grant", ...}`, invalid_grant with
HTTP 200 as TikTok does, so clients must read the body whatever the status); every other endpoint answers
the v2 envelope `{"data": {...}, "error": {"code", "message", "log_id"}}`.
"""

import functools
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from accounts.platforms.decoding import json_loads

from . import avatars, faults, oauth, publishing
from .answers import Answer
from .identities import display_name, new_log_id, tiktok_open_id, tiktok_union_id
from .models import Fault, Platform, Post, Token

PLATFORM = Platform.TIKTOK
PRIVACY_LEVELS = ["PUBLIC_TO_EVERYONE", "MUTUAL_FOLLOW_FRIENDS", "FOLLOWER_OF_CREATOR", "SELF_ONLY"]
# user/info fields by the scope they need
USER_FIELDS = {
    "open_id": "user.info.basic",
    "union_id": "user.info.basic",
    "avatar_url": "user.info.basic",
    "avatar_url_100": "user.info.basic",
    "avatar_large_url": "user.info.basic",
    "display_name": "user.info.basic",
    "username": "user.info.profile",
    "bio_description": "user.info.profile",
    "profile_deep_link": "user.info.profile",
    "is_verified": "user.info.profile",
    "follower_count": "user.info.stats",
    "following_count": "user.info.stats",
    "likes_count": "user.info.stats",
    "video_count": "user.info.stats",
}
VIDEO_FIELDS = {
    "id",
    "create_time",
    "share_url",
    "video_description",
    "duration",
    "title",
    "embed_link",
    "like_count",
    "comment_count",
    "share_count",
    "view_count",
}
TITLE_MAX = 2200
DESCRIPTION_MAX = 4000
MAX_PHOTOS = 35
MAX_VIDEO_IDS = 20


def envelope(data: dict | None = None, *, code: str = "ok", message: str = "", status: int = 200) -> JsonResponse:
    return JsonResponse(
        {"data": data or {}, "error": {"code": code, "message": message, "log_id": new_log_id()}}, status=status
    )


def oauth_error(error: str, description: str, *, status: int = 200) -> JsonResponse:
    return JsonResponse({"error": error, "error_description": description, "log_id": new_log_id()}, status=status)


def _fault_answer(kind: str | None, *, oauth_shape: bool) -> JsonResponse | None:
    if kind == Fault.Kind.TIMEOUT:
        faults.simulate_timeout()
        kind = Fault.Kind.SERVER_ERROR  # only reached over real sockets, after the client gave up
    if kind == Fault.Kind.RATE_LIMITED:
        if oauth_shape:
            return oauth_error("rate_limit_exceeded", "Too many requests.", status=429)
        return envelope(code="rate_limit_exceeded", message="API rate limit exceeded.", status=429)
    if kind == Fault.Kind.SERVER_ERROR:
        if oauth_shape:
            return oauth_error("server_error", "Internal server error.", status=500)
        return envelope(code="internal_error", message="Internal error, please retry.", status=500)
    return None


def _bearer(request: HttpRequest) -> str | None:
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else None


def _json(request: HttpRequest) -> dict:
    if not request.body:
        return {}
    try:
        body = json_loads(request.body)
    except ValueError:
        raise Answer(envelope(code="invalid_params", message="The request body is not valid JSON.", status=400))
    if not isinstance(body, dict):
        raise Answer(envelope(code="invalid_params", message="The request body must be an object.", status=400))
    return body


def _is_json(request: HttpRequest) -> bool:
    """TikTok documents its JSON endpoints with `Content-Type: application/json; charset=UTF-8`."""
    charset = request.content_params.get("charset") if request.content_params else None
    return request.content_type.lower() == "application/json" and (charset or "utf-8").lower() in ("utf-8", "utf8")


def api(*, method: str, group: str, scopes: tuple[str, ...] = (), content: bool = False) -> Callable:
    """Bearer auth, injected faults, scope and per-minute limit, then the view(request, token, rejected).
    `content`: the call submits content, so it also takes a pending "reject" fault. A POST endpoint is a
    JSON one (every Content Posting and video query call): a request that does not say it sends JSON is
    refused first, whether or not it has a body (creator_info/query has none), as TikTok documents it."""

    def decorate(view):
        @csrf_exempt
        @require_http_methods([method])
        @functools.wraps(view)
        def wrapper(request, **kwargs):
            if method == "POST" and not _is_json(request):
                return envelope(
                    code="invalid_params",
                    message="The request must be sent with Content-Type: application/json; charset=UTF-8.",
                    status=400,
                )
            token = oauth.find_token(platform=PLATFORM, raw=_bearer(request), kinds=(Token.Kind.ACCESS,))
            fault = faults.take_fault(platform=PLATFORM, username=token.username, content=content) if token else None
            if (answer := _fault_answer(fault, oauth_shape=False)) is not None:
                return answer
            if token is None or oauth.token_problem(token):
                return envelope(
                    code="access_token_invalid",
                    message="The access token is invalid or not found in the request.",
                    status=401,
                )
            granted = set(token.scopes.split(","))
            if scopes and not granted.intersection(scopes):
                return envelope(
                    code="scope_not_authorized",
                    message="The user did not authorize the scope required for completing this request.",
                    status=401,
                )
            limit = int(settings.LAYERS_SANDBOX_TIKTOK_RATE_LIMITS.get(group, 600))
            if not faults.within_limit(platform=PLATFORM, key=f"{token.digest[:40]}:{group}", per_minute=limit):
                return envelope(code="rate_limit_exceeded", message="API rate limit exceeded.", status=429)
            try:
                return view(request, token=token, rejected=fault == Fault.Kind.REJECT, **kwargs)
            except Answer as answer:
                return answer.response

        return wrapper

    return decorate


# --- OAuth --------------------------------------------------------------------------------------------


def _client_ok(request: HttpRequest) -> bool:
    return (
        request.POST.get("client_key") == settings.LAYERS_TIKTOK_CLIENT_KEY
        and request.POST.get("client_secret") == settings.LAYERS_TIKTOK_CLIENT_SECRET
    )


def _lifetime(issued: oauth.Issued) -> int:
    return int((issued.token.expires_at - issued.token.issued_at).total_seconds())


def _token_answer(access: oauth.Issued, refresh: oauth.Issued) -> JsonResponse:
    return JsonResponse(
        {
            "access_token": access.raw,
            "expires_in": _lifetime(access),
            "open_id": tiktok_open_id(access.token.username),
            "refresh_token": refresh.raw,
            "refresh_expires_in": _lifetime(refresh),
            "scope": access.token.scopes,
            "token_type": "Bearer",
        }
    )


def _user_fault(username: str) -> JsonResponse | None:
    """A pending fault of the user an OAuth call is about, answered in the OAuth error shape."""
    return _fault_answer(faults.take_fault(platform=PLATFORM, username=username, content=False), oauth_shape=True)


@csrf_exempt
@require_http_methods(["POST"])
def token(request: HttpRequest) -> JsonResponse:
    if not _client_ok(request):
        return oauth_error("invalid_client", "Client key or secret is incorrect.", status=401)
    grant = request.POST.get("grant_type")
    if grant == "authorization_code":
        code = oauth.find_code(platform=PLATFORM, code=request.POST.get("code", ""))
        if code and (answer := _user_fault(code.username)):
            return answer
        if code is None:
            return oauth_error("invalid_grant", "Authorization code is invalid.")
        problem = oauth.redeem_code(
            code, client_id=request.POST["client_key"], redirect_uri=request.POST.get("redirect_uri", "")
        )
        if problem == "redirect_uri":
            return oauth_error("invalid_grant", "Redirect URI does not match the one used for authorization.")
        if problem:
            return oauth_error("invalid_grant", f"Authorization code is {problem}.")
        return _token_answer(*oauth.issue_tiktok_pair(username=code.username, scopes=code.scopes))
    if grant == "refresh_token":
        old = oauth.find_token(platform=PLATFORM, raw=request.POST.get("refresh_token"), kinds=(Token.Kind.REFRESH,))
        if old and (answer := _user_fault(old.username)):
            return answer
        pair = oauth.rotate_refresh_token(old) if old and not oauth.token_problem(old) else None
        if pair is None:
            return oauth_error("invalid_grant", "Refresh token is invalid or expired.")
        return _token_answer(*pair)
    return oauth_error("invalid_request", "Unsupported grant_type.", status=400)


@csrf_exempt
@require_http_methods(["POST"])
def revoke(request: HttpRequest) -> JsonResponse:
    if not _client_ok(request):
        return oauth_error("invalid_client", "Client key or secret is incorrect.", status=401)
    old = oauth.find_token(platform=PLATFORM, raw=request.POST.get("token"), kinds=(Token.Kind.ACCESS,))
    problem = oauth.token_problem(old) if old is not None else "unknown"
    if problem == "expired":
        # An expired access token withdraws nothing: the grant, and its refresh token, live on. TikTok documents
        # no answer for it (RFC 7009 would answer 200 and still revoke nothing); the sandbox refuses it, as
        # every TikTok endpoint refuses an expired token, so that callers must renew it to revoke the grant.
        return oauth_error("invalid_grant", "The access token has expired.")
    if problem:
        return oauth_error("invalid_grant", "The token is invalid or already revoked.")
    oauth.revoke_user_tokens(platform=PLATFORM, username=old.username, reason="revoked")
    return JsonResponse({})


# --- Users --------------------------------------------------------------------------------------------


@api(method="GET", group="user_info")
def user_info(request: HttpRequest, *, token: Token, rejected: bool) -> JsonResponse:
    fields = [f for f in request.GET.get("fields", "").split(",") if f]
    unknown = [f for f in fields if f not in USER_FIELDS]
    if not fields or unknown:
        return envelope(code="invalid_params", message=f"Invalid fields: {unknown or 'none given'}.", status=400)
    granted = set(token.scopes.split(","))
    if any(USER_FIELDS[f] not in granted for f in fields):
        # TikTok's v2 error codes: scope_permission_missed (HTTP 400) is a field the token's scopes do not cover,
        # scope_not_authorized (401) an endpoint the token has no scope for (the api decorator's).
        return envelope(
            code="scope_permission_missed",
            message="Access token is invalid, some fields need additional scopes.",
            status=400,
        )
    username = token.username
    avatar = avatars.signed_url(request, platform=PLATFORM, username=username)
    values = {
        "open_id": tiktok_open_id(username),
        "union_id": tiktok_union_id(username),
        "avatar_url": avatar,
        "avatar_url_100": avatar,
        "avatar_large_url": avatar,
        "display_name": display_name(username),
        "username": username,
        "bio_description": "",
        "profile_deep_link": f"https://vm.tiktok.com/@{username}",
        "is_verified": False,
        "follower_count": 0,
        "following_count": 0,
        "likes_count": 0,
        "video_count": Post.objects.filter(platform=PLATFORM, username=username, status=publishing.COMPLETE).count(),
    }
    return envelope({"user": {f: values[f] for f in fields}})


# --- Content Posting API ------------------------------------------------------------------------------


def _daily_cap_reached(username: str) -> bool:
    posted = publishing.tiktok_posts_today(username=username, kind=Post.Kind.POST)
    return posted >= int(settings.LAYERS_SANDBOX_TIKTOK_DAILY_POST_CAP)


def _check_direct_post(token: Token, post_info: dict, *, text_field: str, text_max: int) -> str:
    """Privacy level and caption of a direct post; the privacy level it will have."""
    if _daily_cap_reached(token.username):
        raise Answer(
            envelope(code="spam_risk_too_many_posts", message="The user has posted too much today.", status=403)
        )
    privacy = post_info.get("privacy_level")
    if privacy not in PRIVACY_LEVELS:
        raise Answer(
            envelope(
                code="privacy_level_option_mismatch",
                message="privacy_level is not one of the creator's privacy_level_options.",
                status=403,
            )
        )
    _check_text(post_info, field=text_field, limit=text_max)
    return privacy


def utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _check_text(post_info: dict, *, field: str, limit: int) -> None:
    """TikTok counts text in UTF-16 code units ("max 2200 UTF-16 runes"): an emoji counts two."""
    if utf16_length(str(post_info.get(field) or "")) > limit:
        raise Answer(envelope(code="invalid_params", message=f"{field} is too long.", status=400))


def _pending_drafts_full(username: str) -> bool:
    pending = publishing.tiktok_posts_today(username=username, kind=Post.Kind.DRAFT)
    return pending >= int(settings.LAYERS_SANDBOX_TIKTOK_PENDING_DRAFT_CAP)


def _source_urls(source_info, *, photos: bool) -> list[str]:
    if not isinstance(source_info, dict):
        raise Answer(envelope(code="invalid_params", message="source_info is required.", status=400))
    if source_info.get("source") != "PULL_FROM_URL":
        # FILE_UPLOAD (chunked PUTs to an upload_url) is not simulated: Layers always pulls from its storage.
        raise Answer(envelope(code="invalid_params", message="The sandbox supports PULL_FROM_URL only.", status=400))
    urls = source_info.get("photo_images") if photos else [source_info.get("video_url")]
    if (
        not isinstance(urls, list)
        or not urls
        or not all(isinstance(u, str) and publishing.is_fetchable(u) for u in urls)
    ):
        raise Answer(envelope(code="invalid_params", message="The media URLs are missing or invalid.", status=400))
    if photos and len(urls) > MAX_PHOTOS:
        raise Answer(envelope(code="invalid_params", message=f"At most {MAX_PHOTOS} photos.", status=400))
    return urls


def _pending_draft_refusal() -> JsonResponse:
    return envelope(
        code="spam_risk_too_many_pending_share",
        message="The user has too many pending shares in their inbox.",
        status=403,
    )


@api(method="POST", group="creator_info", scopes=("video.publish",))
def creator_info(request: HttpRequest, *, token: Token, rejected: bool) -> JsonResponse:
    username = token.username
    if _daily_cap_reached(username):
        # TikTok answers this refusal with HTTP 200 and the code in error.code.
        return envelope(code="spam_risk_too_many_posts", message="The user has posted too much today.")
    return envelope(
        {
            "creator_avatar_url": avatars.signed_url(request, platform=PLATFORM, username=username),
            "creator_username": username,
            "creator_nickname": display_name(username),
            "privacy_level_options": PRIVACY_LEVELS,
            "comment_disabled": False,
            "duet_disabled": False,
            "stitch_disabled": False,
            "max_video_post_duration_sec": 600,
        }
    )


@api(method="POST", group="init", scopes=("video.publish",), content=True)
def video_init(request: HttpRequest, *, token: Token, rejected: bool) -> JsonResponse:
    body = _json(request)
    post_info = body.get("post_info") if isinstance(body.get("post_info"), dict) else {}
    privacy = _check_direct_post(token, post_info, text_field="title", text_max=TITLE_MAX)
    urls = _source_urls(body.get("source_info"), photos=False)
    post = publishing.tiktok_receive(
        username=token.username,
        kind=Post.Kind.POST,
        media_type="video",
        urls=urls,
        caption=str(post_info.get("title") or ""),
        privacy_level=privacy,
        rejected=rejected,
    )
    return envelope({"publish_id": post.publish_id})


@api(method="POST", group="init", scopes=("video.upload",), content=True)
def inbox_video_init(request: HttpRequest, *, token: Token, rejected: bool) -> JsonResponse:
    body = _json(request)
    if _pending_drafts_full(token.username):
        return _pending_draft_refusal()
    urls = _source_urls(body.get("source_info"), photos=False)
    post = publishing.tiktok_receive(
        username=token.username,
        kind=Post.Kind.DRAFT,
        media_type="video",
        urls=urls,
        caption="",
        privacy_level="",
        rejected=rejected,
    )
    return envelope({"publish_id": post.publish_id})


@api(method="POST", group="init", scopes=("video.publish", "video.upload"), content=True)
def content_init(request: HttpRequest, *, token: Token, rejected: bool) -> JsonResponse:
    body = _json(request)
    if body.get("media_type") != "PHOTO":
        return envelope(code="invalid_params", message="media_type must be PHOTO.", status=400)
    post_info = body.get("post_info") if isinstance(body.get("post_info"), dict) else {}
    mode = body.get("post_mode")
    granted = set(token.scopes.split(","))
    if mode == "DIRECT_POST":
        if "video.publish" not in granted:
            return envelope(code="scope_not_authorized", message="video.publish is required.", status=401)
        privacy = _check_direct_post(token, post_info, text_field="description", text_max=DESCRIPTION_MAX)
        kind = Post.Kind.POST
    elif mode == "MEDIA_UPLOAD":
        if "video.upload" not in granted:
            return envelope(code="scope_not_authorized", message="video.upload is required.", status=401)
        if _pending_drafts_full(token.username):
            return _pending_draft_refusal()
        _check_text(post_info, field="description", limit=DESCRIPTION_MAX)
        privacy, kind = "", Post.Kind.DRAFT
    else:
        return envelope(code="invalid_params", message="post_mode must be DIRECT_POST or MEDIA_UPLOAD.", status=400)
    if utf16_length(str(post_info.get("title") or "")) > 90:
        return envelope(code="invalid_params", message="title is too long (90 max).", status=400)
    source_info = body.get("source_info")
    urls = _source_urls(source_info, photos=True)
    cover = source_info.get("photo_cover_index", 0)
    if not isinstance(cover, int) or not 0 <= cover < len(urls):
        return envelope(code="invalid_params", message="photo_cover_index is out of range.", status=400)
    post = publishing.tiktok_receive(
        username=token.username,
        kind=kind,
        media_type="image" if len(urls) == 1 else "carousel",
        urls=urls,
        caption=str(post_info.get("description") or post_info.get("title") or ""),
        privacy_level=privacy,
        rejected=rejected,
    )
    return envelope({"publish_id": post.publish_id})


@api(method="POST", group="status", scopes=("video.publish", "video.upload"))
def status_fetch(request: HttpRequest, *, token: Token, rejected: bool) -> JsonResponse:
    publish_id = _json(request).get("publish_id")
    post = Post.objects.filter(platform=PLATFORM, username=token.username, publish_id=publish_id).first()
    if post is None:
        return envelope(code="invalid_params", message="publish_id does not exist.", status=400)
    post = publishing.tiktok_advance(post)
    data: dict = {
        "status": post.status,
        "uploaded_bytes": 0,
        "downloaded_bytes": 0 if post.status == publishing.PROCESSING else 1048576,
    }
    if post.status == publishing.FAILED:
        data["fail_reason"] = post.fail_reason
    if post.status == publishing.COMPLETE:
        # Filled after moderation, and only for posts the public can see (spelling as in the API).
        post_id = publishing.tiktok_public_post_id(post)
        data["publicaly_available_post_id"] = [int(post_id)] if post_id else []
    return envelope(data)


@api(method="POST", group="video_query", scopes=("video.list",))
def video_query(request: HttpRequest, *, token: Token, rejected: bool) -> JsonResponse:
    fields = [f for f in request.GET.get("fields", "").split(",") if f]
    if not fields or any(f not in VIDEO_FIELDS for f in fields):
        return envelope(code="invalid_params", message="Invalid fields.", status=400)
    filters = _json(request).get("filters")
    ids = filters.get("video_ids") if isinstance(filters, dict) else None
    if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_VIDEO_IDS:
        return envelope(code="invalid_params", message=f"filters.video_ids takes 1 to {MAX_VIDEO_IDS} ids.", status=400)
    posts = Post.objects.filter(
        platform=PLATFORM, username=token.username, status=publishing.COMPLETE, external_id__in=[str(i) for i in ids]
    )
    videos = []
    for post in posts:
        figures = publishing.engagement(external_id=post.external_id, published_at=post.published_at)
        values = {
            "id": post.external_id,
            "create_time": int(post.published_at.timestamp()),
            "share_url": f"https://www.tiktok.com/@{post.username}/video/{post.external_id}",
            "video_description": post.caption,
            "title": post.caption[:150],
            "duration": 15,
            "embed_link": f"https://www.tiktok.com/player/v1/{post.external_id}",
            "like_count": figures["likes"],
            "comment_count": figures["comments"],
            "share_count": figures["shares"],
            "view_count": figures["views"],
        }
        videos.append({f: values[f] for f in fields})
    return envelope({"videos": videos, "cursor": 0, "has_more": False})
