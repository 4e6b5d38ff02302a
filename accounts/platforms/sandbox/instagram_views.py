"""Instagram (API with Instagram Login) as the sandbox serves it under /sandbox/instagram/: the token endpoint
of api.instagram.com at /sandbox/instagram/api/..., graph.instagram.com at /sandbox/instagram/graph/...
(any `vNN.N` version prefix, or none).

Errors are Graph errors `{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}` with HTTP
400 whatever they mean (a dead token is code 190, throttling code 17), except the token endpoint's own
`{"error_type", "code", "error_message"}`. Parameters are read from the query string and the form body
alike, and the token also from an `Authorization: Bearer` header, as the Graph API accepts them.
"""

import json
import secrets

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from accounts.platforms.decoding import json_loads

from . import avatars, faults, oauth, publishing
from .answers import Answer
from .identities import display_name, instagram_scoped_id, instagram_user_id
from .models import Container, Fault, Platform, Post, Token

PLATFORM = Platform.INSTAGRAM
BASIC = "instagram_business_basic"
PUBLISH = "instagram_business_content_publish"
INSIGHTS = "instagram_business_manage_insights"
USER_FIELDS = {
    "id",
    "user_id",
    "username",
    "name",
    "account_type",
    "profile_picture_url",
    "followers_count",
    "follows_count",
    "media_count",
    "biography",
}
CONTAINER_FIELDS = {"id", "status_code", "status"}
MEDIA_FIELDS = {
    "id",
    "caption",
    "media_type",
    "media_product_type",
    "permalink",
    "timestamp",
    "like_count",
    "comments_count",
    "media_url",
    "username",
    "shortcode",
}
METRICS = {"views", "likes", "comments", "shares", "saved", "reach", "total_interactions"}
CAPTION_MAX = 2200
CAROUSEL_ITEMS = (2, 10)
QUOTA_DURATION = 86400


def graph_error(
    message: str, *, code: int, subcode: int | None = None, status: int = 400, headers: dict | None = None, **extra
) -> JsonResponse:
    error = {"message": message, "type": "OAuthException", "code": code, **extra}
    if subcode:
        error["error_subcode"] = subcode
    error["fbtrace_id"] = "A" + secrets.token_urlsafe(16)
    return JsonResponse({"error": error}, status=status, headers=headers)


def oauth_error(message: str, *, status: int = 400, error_type: str = "OAuthException") -> JsonResponse:
    return JsonResponse({"error_type": error_type, "code": status, "error_message": message}, status=status)


def _no_object(node: str, method: str = "get") -> JsonResponse:
    return graph_error(
        f"Unsupported {method} request. Object with ID '{node}' does not exist, cannot be loaded due to missing "
        "permissions, or does not support this operation.",
        code=100,
        subcode=33,
    )


def _no_permission() -> JsonResponse:
    return graph_error("(#10) Application does not have permission for this action", code=10, status=403)


def _fault_answer(kind: str | None, *, oauth_shape: bool = False) -> JsonResponse | None:
    if kind == Fault.Kind.TIMEOUT:
        faults.simulate_timeout()
        kind = Fault.Kind.SERVER_ERROR  # only reached over real sockets, after the client gave up
    if kind == Fault.Kind.RATE_LIMITED:
        if oauth_shape:
            return oauth_error("Too many requests", status=429, error_type="OAuthRateLimitException")
        # Meta throttles with HTTP 400 and says in a header, in minutes, when access comes back.
        usage = {"0": [{"type": "instagram", "call_count": 100, "estimated_time_to_regain_access": 1}]}
        return graph_error(
            "(#17) User request limit reached",
            code=17,
            headers={"X-Business-Use-Case-Usage": json.dumps(usage)},
            is_transient=True,
        )
    if kind == Fault.Kind.SERVER_ERROR:
        if oauth_shape:
            return oauth_error("An unknown error has occurred.", status=500)
        return graph_error(
            "An unexpected error has occurred. Please retry your request later.", code=2, status=500, is_transient=True
        )
    return None


def _params(request: HttpRequest) -> dict:
    params = {**request.GET.dict(), **request.POST.dict()}
    if request.content_type == "application/json" and request.body:
        try:
            body = json_loads(request.body)
        except ValueError:
            body = None
        if isinstance(body, dict):
            params.update({k: v for k, v in body.items() if isinstance(v, str | int | bool)})
    return params


def _authenticate(
    request: HttpRequest, params: dict, *, content: bool | tuple[str, ...] = False, kinds: tuple[str, ...] | None = None
) -> tuple[Token, bool]:
    """The token's row and the content fault that applies ("reject", "container_error" or None); raises
    Answer with Graph's error otherwise."""
    raw = params.get("access_token")
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if not raw and scheme.lower() in ("bearer", "oauth"):
        raw = value.strip()
    if not raw:
        raise Answer(
            graph_error("An active access token must be used to query information about the current user.", code=2500)
        )
    kinds = kinds or (Token.Kind.SHORT_LIVED, Token.Kind.LONG_LIVED)
    token = oauth.find_token(platform=PLATFORM, raw=raw, kinds=kinds)
    fault = faults.take_fault(platform=PLATFORM, username=token.username, content=content) if token else None
    if (answer := _fault_answer(fault)) is not None:
        raise Answer(answer)
    if token is None:
        raise Answer(graph_error("Invalid OAuth access token - Cannot parse access token", code=190))
    problem = oauth.token_problem(token)
    if problem == "expired":
        when = token.expires_at.strftime("%A, %d-%b-%y %H:%M:%S %Z")
        raise Answer(
            graph_error(f"Error validating access token: Session has expired on {when}.", code=190, subcode=463)
        )
    if problem == "revoked":
        raise Answer(
            graph_error(
                "Error validating access token: The user has not authorized application.", code=190, subcode=458
            )
        )
    if problem:
        raise Answer(
            graph_error("Error validating access token: The session has been invalidated.", code=190, subcode=463)
        )
    return token, fault


def _fields(params: dict, allowed: set[str], *, node_type: str, default: tuple[str, ...] = ("id",)) -> list[str]:
    fields = [f.strip() for f in str(params.get("fields") or "").split(",") if f.strip()] or list(default)
    for field in fields:
        if field not in allowed:
            raise Answer(
                graph_error(f"(#100) Tried accessing nonexisting field ({field}) on node type ({node_type})", code=100)
            )
    return fields


def _scopes(token: Token) -> set[str]:
    return set(token.scopes.split(","))


# --- OAuth --------------------------------------------------------------------------------------------


@csrf_exempt
@require_http_methods(["POST"])
def oauth_token(request: HttpRequest) -> JsonResponse:
    """api.instagram.com/oauth/access_token: code → short-lived token (1 h). Answers the flat shape that is
    observed in practice; clients also accept the documented {"data": [...]}."""
    p = request.POST
    if (
        p.get("client_id") != settings.LAYERS_INSTAGRAM_CLIENT_ID
        or p.get("client_secret") != settings.LAYERS_INSTAGRAM_CLIENT_SECRET
    ):
        return oauth_error("Invalid platform app")
    if p.get("grant_type") != "authorization_code":
        return oauth_error("Invalid grant_type")
    code = oauth.find_code(platform=PLATFORM, code=p.get("code", ""))
    fault = faults.take_fault(platform=PLATFORM, username=code.username, content=False) if code else None
    if (answer := _fault_answer(fault, oauth_shape=True)) is not None:
        return answer
    if code is None:
        return oauth_error("Matching code was not found or was already used.")
    problem = oauth.redeem_code(code, client_id=p["client_id"], redirect_uri=p.get("redirect_uri", ""))
    if problem == "redirect_uri":
        return oauth_error(
            "Error validating verification code. Please make sure your redirect_uri is identical to the one you "
            "used in the OAuth dialog request"
        )
    if problem == "expired":
        return oauth_error("This authorization code has expired.")
    if problem:
        return oauth_error("This authorization code has been used.")
    issued = oauth.issue_token(
        platform=PLATFORM,
        kind=Token.Kind.SHORT_LIVED,
        username=code.username,
        scopes=code.scopes,
        ttl=oauth.INSTAGRAM_SHORT_TTL,
    )
    return JsonResponse(
        {
            "access_token": issued.raw,
            "user_id": int(instagram_user_id(code.username)),
            "permissions": code.scopes.split(","),
        }
    )


@csrf_exempt
@require_http_methods(["GET"])
def exchange_token(request: HttpRequest) -> JsonResponse:
    """graph.instagram.com/access_token: short-lived → long-lived (60 days)."""
    params = _params(request)
    try:
        if params.get("grant_type") != "ig_exchange_token":
            return graph_error("Unsupported grant_type", code=100)
        if params.get("client_secret") != settings.LAYERS_INSTAGRAM_CLIENT_SECRET:
            return graph_error("Error validating client secret.", code=101)
        token, _ = _authenticate(request, params, kinds=(Token.Kind.SHORT_LIVED,))
    except Answer as answer:
        return answer.response
    return _long_lived_answer(token)


def _long_lived_answer(token: Token, **extra) -> JsonResponse:
    """A new 60-day token for the user of `token`, in the shape of graph.instagram.com's token answers."""
    issued = oauth.issue_token(
        platform=PLATFORM,
        kind=Token.Kind.LONG_LIVED,
        username=token.username,
        scopes=token.scopes,
        ttl=oauth.INSTAGRAM_LONG_TTL,
    )
    return JsonResponse(
        {
            "access_token": issued.raw,
            "token_type": "bearer",
            "expires_in": int(oauth.INSTAGRAM_LONG_TTL.total_seconds()),
            **extra,
        }
    )


@csrf_exempt
@require_http_methods(["GET"])
def refresh_token(request: HttpRequest) -> JsonResponse:
    """graph.instagram.com/refresh_access_token: a long-lived token at least 24 h old and unexpired → a new
    one. The old one keeps working until it expires."""
    params = _params(request)
    try:
        if params.get("grant_type") != "ig_refresh_token":
            return graph_error("Unsupported grant_type", code=100)
        token, _ = _authenticate(request, params)
    except Answer as answer:
        return answer.response
    if token.kind != Token.Kind.LONG_LIVED:
        return graph_error("Short-lived access tokens cannot be refreshed; exchange them first.", code=100)
    if timezone.now() - token.issued_at < oauth.INSTAGRAM_REFRESH_MIN_AGE:
        return graph_error("The access token can only be refreshed 24 hours after it was issued.", code=100)
    return _long_lived_answer(token, permissions=token.scopes)


# --- Graph nodes --------------------------------------------------------------------------------------


# The content faults each POST edge takes (faults.take_fault). "reject" is answered where Meta refuses a post it
# suspects as spam, the media_publish call (code 4 / subcode 2207051, Instagram Platform > Error Codes): it failed
# the container instead (status ERROR, "2207051"), a shape no client meets live. "container_error" is a container
# that fails on Instagram's side. A draft delivery (Layers' own endpoint) takes both, as it always did.
CONTENT_FAULTS = {
    "media": (Fault.Kind.CONTAINER_ERROR,),
    "media_publish": (Fault.Kind.REJECT,),
    "layers_draft_deliveries": (Fault.Kind.REJECT, Fault.Kind.CONTAINER_ERROR),
}
SPAM_SUSPECTED = (
    "The publishing action is suspected to be spam. We restrict certain activity to protect our community. "
    "Tell us if you think we made a mistake."
)


@csrf_exempt
@require_http_methods(["GET", "POST", "DELETE"])
def graph(request: HttpRequest, node: str, edge: str | None = None, version: str | None = None) -> JsonResponse:
    params = _params(request)
    content = CONTENT_FAULTS.get(edge or "", ()) if request.method == "POST" else ()
    try:
        token, fault = _authenticate(request, params, content=content)
        if BASIC not in _scopes(token):
            return _no_permission()
        user_id = instagram_user_id(token.username)
        if node in ("me", user_id):
            return _user_edge(request, params, token=token, edge=edge, fault=fault)
        if request.method != "GET":
            return _no_object(node, request.method.lower())
        container = Container.objects.filter(ig_id=node, username=token.username).first()
        if container is not None and edge is None:
            return _container(container, params)
        media = Post.objects.filter(
            platform=PLATFORM, kind=Post.Kind.POST, external_id=node, username=token.username
        ).first()
        if media is not None and edge is None:
            return _media([media], params, one=True)
        if media is not None and edge == "insights":
            return _insights(media, params, token=token)
        return _no_object(node)
    except Answer as answer:
        return answer.response


def _user_edge(
    request: HttpRequest, params: dict, *, token: Token, edge: str | None, fault: str | None
) -> JsonResponse:
    username = token.username
    rejected = fault == Fault.Kind.REJECT
    method = request.method
    if edge is None and method == "GET":
        return _user(request, params, username=username)
    if edge == "permissions" and method == "DELETE":
        oauth.revoke_user_tokens(platform=PLATFORM, username=username, reason="revoked")
        return JsonResponse({"success": True})
    if edge == "media" and method == "GET":
        media = Post.objects.filter(platform=PLATFORM, kind=Post.Kind.POST, username=username).order_by(
            "-created_at", "-id"
        )
        try:
            limit = max(1, min(int(params.get("limit") or 25), 100))
        except ValueError:
            return graph_error("(#100) limit must be an integer", code=100)
        return _media(list(media[:limit]), params, one=False)
    if edge in ("media", "media_publish", "content_publishing_limit") and PUBLISH not in _scopes(token):
        return _no_permission()
    if edge == "media" and method == "POST":
        return _create_container(params, username=username, server_error=fault == Fault.Kind.CONTAINER_ERROR)
    if edge == "media_publish" and method == "POST":
        if rejected:
            return graph_error(SPAM_SUSPECTED, code=4, subcode=2207051)
        return _media_publish(params, username=username)
    if edge == "content_publishing_limit" and method == "GET":
        return JsonResponse(
            {
                "data": [
                    {
                        "config": {
                            "quota_total": int(settings.LAYERS_SANDBOX_INSTAGRAM_QUOTA_TOTAL),
                            "quota_duration": QUOTA_DURATION,
                        },
                        "quota_usage": publishing.instagram_quota_usage(username=username),
                    }
                ]
            }
        )
    if edge == "layers_draft_deliveries" and method == "POST":
        return _deliver(params, username=username, rejected=rejected)
    return _no_object(f"{instagram_user_id(username)}/{edge}" if edge else "me", method.lower())


def _user(request: HttpRequest, params: dict, *, username: str) -> JsonResponse:
    fields = _fields(params, USER_FIELDS, node_type="User", default=("id", "username"))
    values = {
        "id": instagram_scoped_id(username),
        "user_id": instagram_user_id(username),
        "username": username,
        "name": display_name(username),
        "account_type": "MEDIA_CREATOR",
        "profile_picture_url": avatars.signed_url(request, platform=PLATFORM, username=username),
        "followers_count": 0,
        "follows_count": 0,
        "media_count": Post.objects.filter(platform=PLATFORM, kind=Post.Kind.POST, username=username).count(),
        "biography": "",
    }
    answer = {f: values[f] for f in fields}
    answer.setdefault("id", values["id"])  # Graph always answers the node's id
    return JsonResponse(answer)


def _container(container: Container, params: dict) -> JsonResponse:
    fields = _fields(params, CONTAINER_FIELDS, node_type="ShadowIGMediaBuilder")
    code, status = publishing.container_status(container)
    values = {"id": container.ig_id, "status_code": code, "status": status}
    return JsonResponse({f: values[f] for f in fields} | {"id": container.ig_id})


def _media_values(post: Post) -> dict:
    figures = publishing.engagement(external_id=post.external_id, published_at=post.published_at)
    reel = post.media_type == "video"
    return {
        "id": post.external_id,
        "caption": post.caption,
        "media_type": {"video": "VIDEO", "image": "IMAGE", "carousel": "CAROUSEL_ALBUM"}[post.media_type],
        "media_product_type": "REELS" if reel else "FEED",
        "permalink": post.permalink,
        "timestamp": post.published_at.strftime("%Y-%m-%dT%H:%M:%S+0000"),
        "like_count": figures["likes"],
        "comments_count": figures["comments"],
        "media_url": post.media[0]["url"] if post.media else "",
        "username": post.username,
        "shortcode": post.permalink.rstrip("/").rsplit("/", 1)[-1],
    }


def _media(posts: list[Post], params: dict, *, one: bool) -> JsonResponse:
    fields = _fields(params, MEDIA_FIELDS, node_type="IGMedia")
    items = [{f: values[f] for f in fields} | {"id": values["id"]} for values in map(_media_values, posts)]
    return JsonResponse(items[0] if one else {"data": items})


def _insights(post: Post, params: dict, *, token: Token) -> JsonResponse:
    if INSIGHTS not in _scopes(token):
        return _no_permission()
    metrics = [m.strip() for m in str(params.get("metric") or "").split(",") if m.strip()]
    if not metrics or any(m not in METRICS for m in metrics):
        return graph_error(
            f"(#100) metric[0] must be one of the following values: {', '.join(sorted(METRICS))}", code=100
        )
    if not publishing.insights_ready(post):
        # Meta: insights that "do not exist or are currently unavailable" are an empty data set, not 0.
        return JsonResponse({"data": []})
    figures = publishing.engagement(external_id=post.external_id, published_at=post.published_at)
    figures["total_interactions"] = figures["likes"] + figures["comments"] + figures["shares"] + figures["saved"]
    data = [
        {
            "name": m,
            "period": "lifetime",
            "values": [{"value": figures[m]}],
            "title": m.replace("_", " ").capitalize(),
            "description": f"The number of {m.replace('_', ' ')} of the media.",
            "id": f"{post.external_id}/insights/{m}/lifetime",
        }
        for m in metrics
    ]
    return JsonResponse({"data": data})


def _create_container(params: dict, *, username: str, server_error: bool = False) -> JsonResponse:
    caption = str(params.get("caption") or "")
    if len(caption) > CAPTION_MAX:
        return graph_error("(#100) The caption is too long.", code=100)
    media_type = str(params.get("media_type") or "IMAGE").upper()
    is_item = str(params.get("is_carousel_item") or "").lower() == "true"
    if media_type == "CAROUSEL":
        child_ids = [c.strip() for c in str(params.get("children") or "").split(",") if c.strip()]
        low, high = CAROUSEL_ITEMS
        children = {c.ig_id: c for c in Container.objects.filter(ig_id__in=child_ids, username=username)}
        usable = all(
            cid in children
            and children[cid].is_carousel_item
            and publishing.container_status(children[cid])[0] != "EXPIRED"
            for cid in child_ids
        )
        if not low <= len(child_ids) <= high or not usable:
            return graph_error(f"(#100) children must list {low} to {high} carousel item containers.", code=100)
        container = publishing.create_container(
            username=username,
            media_type="CAROUSEL",
            caption=caption,
            children=child_ids,
            server_error=server_error,
        )
        return JsonResponse({"id": container.ig_id})
    if media_type == "IMAGE":
        url = str(params.get("image_url") or "")
    elif (media_type == "REELS" and not is_item) or (media_type == "VIDEO" and is_item):
        url = str(params.get("video_url") or "")
    elif media_type == "VIDEO":
        return graph_error("(#100) The VIDEO media type is no longer supported for feed posts; use REELS.", code=100)
    else:
        return graph_error(f"(#100) Unsupported media_type {media_type} in the sandbox.", code=100)
    if not url:
        return graph_error("(#100) The parameter image_url or video_url is required.", code=100)
    if not publishing.is_fetchable(url):
        return graph_error("The media could not be fetched from this URI.", code=9004, subcode=2207052)
    container = publishing.create_container(
        username=username,
        media_type=media_type,
        url=url,
        caption="" if is_item else caption,
        is_carousel_item=is_item,
        server_error=server_error,
    )
    return JsonResponse({"id": container.ig_id})


_PUBLISH_REFUSALS = {
    "unknown": ("(#100) creation_id does not refer to a media container of this account.", 100, 33),
    "carousel_item": ("(#100) A carousel item cannot be published on its own.", 100, None),
    # Sandbox's choice of code: Instagram's exact answer to this is undocumented; what matters is that it
    # is a refusal and that no second media is made.
    "published": ("This media container has already been published.", 9007, None),
    "not_ready": ("Media ID is not available: the media is not ready for publishing, please wait.", 9007, 2207027),
    "error": ("The media container failed processing; create a new one.", 9007, 2207032),
    "expired": ("The media container has expired; create a new one.", 9007, 2207020),
    "quota": ("Application request limit reached: the 24 h publishing limit is used up.", 9, 2207042),
}


def _media_publish(params: dict, *, username: str) -> JsonResponse:
    try:
        post = publishing.media_publish(username=username, creation_id=str(params.get("creation_id") or ""))
    except publishing.PublishRefused as refused:
        message, code, subcode = _PUBLISH_REFUSALS[refused.reason]
        return graph_error(message, code=code, subcode=subcode)
    return JsonResponse({"id": post.external_id})


def _deliver(params: dict, *, username: str, rejected: bool) -> JsonResponse:
    """Layers extension (not an Instagram API): deliver a draft to the creator for manual posting."""
    try:
        media = json_loads(str(params.get("media") or ""))
    except ValueError:
        media = None
    valid = (
        isinstance(media, list)
        and 1 <= len(media) <= CAROUSEL_ITEMS[1]
        and all(
            isinstance(m, dict)
            and publishing.is_fetchable(str(m.get("url") or ""))
            and m.get("kind") in ("image", "video")
            for m in media
        )
    )
    media_type = params.get("media_type")
    if not valid or media_type not in ("video", "image", "carousel"):
        return graph_error(
            "(#100) media must be a JSON list of {url, kind} and media_type video|image|carousel.", code=100
        )
    if rejected:
        return graph_error("The media was refused for this account.", code=100, subcode=2207051)
    post = publishing.deliver_draft(
        username=username,
        media_type=media_type,
        media=[{"url": m["url"], "kind": m["kind"]} for m in media],
        caption=str(params.get("caption") or ""),
    )
    return JsonResponse({"id": post.publish_id})
