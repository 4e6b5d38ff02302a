"""The sandbox pages and endpoints both platforms share: the consent page (a stand-in for the platform's
own site, so no CSRF token and no Layers API key), the signed avatar images, and the control endpoints
that tests and demos use to break things on purpose."""

import re
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.platforms.decoding import json_loads
from accounts.platforms.scopes import SCOPES

from . import avatars, faults, oauth, selectors, webhooks
from .identities import instagram_scoped_id, instagram_user_id, normalize_username, tiktok_open_id
from .models import Platform


@dataclass(frozen=True)
class ConsentSpec:
    name: str
    client_param: str
    client_setting: str
    redirect_query_allowed: bool


CONSENT = {
    Platform.TIKTOK: ConsentSpec("TikTok", "client_key", "LAYERS_TIKTOK_CLIENT_KEY", False),
    Platform.INSTAGRAM: ConsentSpec("Instagram", "client_id", "LAYERS_INSTAGRAM_CLIENT_ID", True),
}


def _split(uri: str):
    """`uri`'s parts, or None for one no parser reads (urlsplit raises ValueError for an unclosed IPv6 host,
    `http://[abc/cb`): a redirect_uri that is not valid, the page's 400, not a server error."""
    try:
        return urlsplit(uri)
    except ValueError:
        return None


def _redirect_ok(uri: str, *, query_allowed: bool) -> bool:
    # TikTok wants the registered URI exactly, without query or fragment. The sandbox has no app registry,
    # so any absolute http(s) URI is "registered"; the code is then bound to it.
    parts = _split(uri)
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
        return False
    return query_allowed or not parts.query


def _redirect(uri: str, params: dict, *, fragment: str = "") -> HttpResponseRedirect:
    separator = "&" if urlsplit(uri).query else "?"
    return HttpResponseRedirect(f"{uri}{separator}{urlencode(params)}{'#' + fragment if fragment else ''}")


@csrf_exempt
@require_http_methods(["GET", "POST"])
def consent(request: HttpRequest, platform: str) -> HttpResponse:
    """GET shows the consent form; POST (same URL, query string kept) answers with a 302 to redirect_uri."""
    spec = CONSENT[platform]
    query = request.GET
    client_id = query.get(spec.client_param, "")
    redirect_uri = query.get("redirect_uri", "")
    scopes = [s for s in re.split(r"[,\s]+", query.get("scope", "")) if s]
    redirect_parts = _split(redirect_uri)
    context = {
        "platform": platform,
        "platform_name": spec.name,
        "app_name": client_id,
        "scopes": [(s, SCOPES[platform].get(s, s)) for s in scopes],
        "usage_note": query.get("layers_usage_note", "")[:500],
        "redirect_host": redirect_parts.netloc if redirect_parts else "",
        "username": request.POST.get("username", "") if request.method == "POST" else "",
    }
    problem = None
    if client_id != getattr(settings, spec.client_setting):
        problem = f"This app ({spec.client_param}) is not known to {spec.name}."
    elif query.get("response_type") != "code":
        problem = "response_type must be code."
    elif not _redirect_ok(redirect_uri, query_allowed=spec.redirect_query_allowed):
        problem = "redirect_uri is missing or not valid."
    # The list reauth-url checks a partner's scopes against: a link Layers hands out never ends here.
    elif not scopes or any(s not in SCOPES[platform] for s in scopes):  # another platform's too
        problem = "The requested scope is not valid."
    if problem:
        return render(request, "sandbox/consent.html", {**context, "error": problem}, status=400)
    if request.method == "GET":
        return render(request, "sandbox/consent.html", context)

    state = query.get("state")
    decision = request.POST.get("decision")
    if decision == "deny":
        if platform == Platform.INSTAGRAM:
            params = {"error": "access_denied", "error_reason": "user_denied"}
            params["error_description"] = "The user denied your request."
        else:
            params = {"error": "access_denied", "error_description": "The user did not authorize the app."}
        return _redirect(redirect_uri, {**params, **({"state": state} if state is not None else {})})
    username = normalize_username(request.POST.get("username"))
    if decision != "approve" or username is None:
        form_error = (
            "Enter a handle: 2 to 30 letters, digits, dots or underscores."
            if decision == "approve"
            else "Choose Approve or Deny."
        )
        return render(request, "sandbox/consent.html", {**context, "form_error": form_error}, status=400)
    code = oauth.issue_code(
        platform=platform, username=username, client_id=client_id, redirect_uri=redirect_uri, scopes=",".join(scopes)
    )
    params = {"code": code}
    if platform == Platform.TIKTOK:
        params["scopes"] = ",".join(scopes)
    if state is not None:
        params["state"] = state
    # Instagram appends "#_" to the redirect; clients must not take it for part of the code.
    return _redirect(redirect_uri, params, fragment="_" if platform == Platform.INSTAGRAM else "")


@require_GET
def avatar(request: HttpRequest, platform: str, username: str) -> HttpResponse:
    if not avatars.check(platform=platform, username=username, query=request.GET):
        return HttpResponseForbidden(b"URL signature expired", content_type="text/plain")
    return HttpResponse(
        avatars.png(username), content_type="image/png", headers={"Cache-Control": "private, max-age=300"}
    )


# --- Control endpoints ---------------------------------------------------------------------------------


def _invalid(fields: dict[str, str]) -> JsonResponse:
    return JsonResponse({"error": "invalid request", "fields": fields}, status=422)


def _json_object(request: HttpRequest) -> dict | None:
    try:
        body = json_loads(request.body or b"{}")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _user_request(request: HttpRequest) -> tuple[dict | None, str | None, dict[str, str]]:
    """A control call about one platform user: its JSON body, the normalized `username`, the problems so far
    (body None: not a JSON object)."""
    body = _json_object(request)
    if body is None:
        return None, None, {"body": "a JSON object is required"}
    raw = body.get("username")
    username = normalize_username(raw if isinstance(raw, str) else None)
    return body, username, {} if username else {"username": "a platform handle is required"}


@csrf_exempt
@require_POST
def control_invalidate_tokens(request: HttpRequest, platform: str) -> JsonResponse:
    """Every token of that user stops working: TikTok 401 access_token_invalid (refresh: invalid_grant),
    Instagram code 190 / subcode 463."""
    _, username, problems = _user_request(request)
    if problems:
        return _invalid(problems)
    count = oauth.revoke_user_tokens(platform=platform, username=username, reason="invalidated")
    return JsonResponse({"username": username, "invalidated": count})


# TikTok's documented reasons: 0 unknown, 1 the user disconnected the app in TikTok, 2 account deleted,
# 3 age changed, 4 account banned, 5 the developer revoked the authorization.
DEAUTHORIZE_REASONS = range(6)


@csrf_exempt
@require_POST
def control_deauthorize(request: HttpRequest, platform: str) -> JsonResponse:
    """The user removes the app (every token of theirs stops working) and the platform tells the app. TikTok
    posts the signed `authorization.removed` webhook: {"username", "reason": 1}. Instagram posts Meta's signed
    request to the Deauthorize callback, and with {"deleteData": true} then to the Data deletion request
    callback as well (the person also asked for their data to be deleted): {"username", "deleteData": false,
    "idKind": "user_id"}. The answer says what the receiver answered."""
    body, username, problems = _user_request(request)
    if body is None:
        return _invalid(problems)
    if platform == Platform.INSTAGRAM:
        return _instagram_deauthorize(body, username, problems)
    reason = body.get("reason", 1)
    if not isinstance(reason, int) or isinstance(reason, bool) or reason not in DEAUTHORIZE_REASONS:
        problems["reason"] = "an integer from 0 to 5"
    if problems:
        return _invalid(problems)
    count = oauth.revoke_user_tokens(platform=platform, username=username, reason="deauthorized")
    webhook = webhooks.send_authorization_removed(open_id=tiktok_open_id(username), reason=reason)
    return JsonResponse({"username": username, "invalidated": count, "webhook": webhook})


# Which of the user's ids the signed requests name them by: Meta does not say which it sends for Instagram
# Login, so the sandbox sends either, and tests drive both: /me's `user_id` (the professional account id) or
# /me's app-scoped `id`.
INSTAGRAM_ID_KINDS = {"user_id": instagram_user_id, "app_scoped": instagram_scoped_id}


def _instagram_deauthorize(body: dict, username: str | None, problems: dict[str, str]) -> JsonResponse:
    delete_data = body.get("deleteData", False)
    if not isinstance(delete_data, bool):
        problems["deleteData"] = "true or false"
    id_kind = body.get("idKind", "user_id")
    if not isinstance(id_kind, str) or id_kind not in INSTAGRAM_ID_KINDS:
        problems["idKind"] = " or ".join(f'"{kind}"' for kind in INSTAGRAM_ID_KINDS)
    unknown = set(body) - {"username", "deleteData", "idKind"}
    if unknown:
        problems.update({field: "not an Instagram field (TikTok's reason has no counterpart)" for field in unknown})
    if problems:
        return _invalid(problems)
    count = oauth.revoke_user_tokens(platform=Platform.INSTAGRAM, username=username, reason="deauthorized")
    user_id = INSTAGRAM_ID_KINDS[id_kind](username)
    answer = {
        "username": username,
        "invalidated": count,
        "webhook": webhooks.send_instagram_deauthorize(user_id=user_id),
    }
    if delete_data:
        answer["dataDeletion"] = webhooks.send_instagram_data_deletion(user_id=user_id)
    return JsonResponse(answer)


@csrf_exempt
@require_POST
def control_faults(request: HttpRequest, platform: str) -> JsonResponse:
    """The next `count` calls attributed to that user fail as `kind` says (see faults.py)."""
    body, username, problems = _user_request(request)
    if body is None:
        return _invalid(problems)
    kind = body.get("kind")
    if kind not in faults.KINDS:
        problems["kind"] = f"one of {', '.join(faults.KINDS)}"
    elif kind in faults.INSTAGRAM_ONLY_KINDS and platform != "instagram":
        problems["kind"] = f"{kind} is Instagram's only (TikTok has no containers)"
    count = body.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 1000:
        problems["count"] = "an integer from 1 to 1000"
    if problems:
        return _invalid(problems)
    faults.add_fault(platform=platform, username=username, kind=kind, count=count)
    return JsonResponse({"username": username, "kind": kind, "count": count}, status=201)


@csrf_exempt
@require_POST
def control_stall(request: HttpRequest, platform: str) -> JsonResponse:
    """The next `count` calls whose path contains `path` are answered `seconds` late (after the sandbox
    has done the work): {"path": "/v2/post/publish/video/init/", "seconds": 30, "count": 1}."""
    body = _json_object(request)
    if body is None:
        return _invalid({"body": "a JSON object is required"})
    problems = {}
    path_contains = body.get("path")
    if not isinstance(path_contains, str) or not 1 <= len(path_contains) <= 200:
        problems["path"] = "a part of the API path, 1 to 200 characters"
    seconds = body.get("seconds")
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not 0 < seconds <= 600:
        problems["seconds"] = "a number of seconds from 0 to 600"
    count = body.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 1000:
        problems["count"] = "an integer from 1 to 1000"
    if problems:
        return _invalid(problems)
    faults.add_stall(platform=platform, path_contains=path_contains, seconds=float(seconds), count=count)
    return JsonResponse({"path": path_contains, "seconds": seconds, "count": count}, status=201)


@require_GET
def control_posts(request: HttpRequest, platform: str) -> JsonResponse:
    """What the sandbox received (posts, drafts, deliveries), oldest first; `?username=` narrows it."""
    rows = selectors.posts(platform=platform, username=request.GET.get("username"))
    return JsonResponse({"data": [selectors.post_as_dict(p) for p in rows]})
