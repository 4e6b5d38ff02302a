"""Driving the platform sandbox from tests: the consent page as a browser would use it, the control
endpoints, and what the sandbox recorded. The platform clients themselves reach the sandbox in-process
(LAYERS_PLATFORM_TRANSPORT = "wsgi" in the test settings)."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from unittest import mock
from urllib.parse import parse_qs, urlsplit

import httpx
from django.conf import settings
from django.test import Client

from accounts.platforms import get_client
from accounts.platforms import http as platform_http
from accounts.platforms.base import TokenSet
from accounts.platforms.sandbox import selectors


def callback_uri(platform: str) -> str:
    return f"{settings.LAYERS_OAUTH_CALLBACK_BASE}/{platform}/callback"


def _path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def consent(platform: str, authorize_url: str, username: str, decision: str = "approve") -> str:
    """Open the sandbox consent page at `authorize_url`, submit it as `username` with `decision`
    ("approve" | "deny"), and return the redirect Location the platform answered."""
    browser = Client()
    page = browser.get(_path(authorize_url))
    assert page.status_code == 200, (page.status_code, page.content[:300])
    html = page.content.decode()
    assert 'name="username"' in html and 'name="decision"' in html, f"{platform} consent page has no form"
    answer = browser.post(_path(authorize_url), {"username": username, "decision": decision})
    assert answer.status_code == 302, (answer.status_code, answer.content[:300])
    return answer["Location"]


def redirect_params(location: str) -> dict[str, str]:
    """The query parameters of a redirect (Instagram's `#_` fragment is not part of them)."""
    return {key: values[0] for key, values in parse_qs(urlsplit(location).query).items()}


def connect(platform: str, username: str, *, state: str = "test-state", scopes: list[str] | None = None) -> TokenSet:
    """A full authorization through the real client: authorize URL → consent → code exchange."""
    client = get_client(platform)
    redirect_uri = callback_uri(platform)
    authorize_url = client.authorize_url(state=state, redirect_uri=redirect_uri, scopes=scopes)
    location = consent(platform, authorize_url, username)
    params = redirect_params(location)
    assert params.get("state") == state, params
    return client.exchange_code(code=params["code"], redirect_uri=redirect_uri)


def sandbox_control(platform: str, action: str, body: dict):
    """POST a control endpoint (`invalidate-tokens`, `faults`); returns the test response."""
    return Client().post(f"/sandbox/{platform}/_control/{action}", body, content_type="application/json")


def inject_fault(platform: str, username: str, kind: str, count: int = 1) -> None:
    response = sandbox_control(platform, "faults", {"username": username, "kind": kind, "count": count})
    assert response.status_code == 201, response.content


def invalidate_tokens(platform: str, username: str) -> None:
    response = sandbox_control(platform, "invalidate-tokens", {"username": username})
    assert response.status_code == 200, response.content


def sandbox_posts(platform: str, username: str | None = None, *, kind: str | None = None) -> list:
    """What the sandbox received (accounts.platforms.sandbox.models.Post rows), oldest first."""
    rows = selectors.posts(platform=platform, username=username)
    return [row for row in rows if kind is None or row.kind == kind]


# An override answers a platform request in place of the sandbox: (request, sandbox transport) → response. It
# may pass the request on to the sandbox first (`sandbox.handle_request(request)`) and change its answer.
Override = Callable[[httpx.Request, httpx.WSGITransport], httpx.Response]


@contextmanager
def intercepted(overrides: dict[str, Override], *, calls: list[str] | None = None) -> Iterator[None]:
    """Route every platform call made meanwhile (the clients' thread client) through `overrides`: a request
    whose path contains one of its keys goes to that override, any other to the sandbox in-process. For
    what the network or a proxy can do to an answer: garble it, lose it, refuse the connection. `calls` gets
    each call as it leaves (`"GET /sandbox/tiktok/v2/user/info/"`), whoever answers it."""
    sandbox = httpx.WSGITransport(app=platform_http._in_process_app())

    def handler(request: httpx.Request) -> httpx.Response:
        if calls is not None:
            calls.append(f"{request.method} {request.url.path}")
        for fragment, answer in overrides.items():
            if fragment in request.url.path:
                return answer(request, sandbox)
        return sandbox.handle_request(request)

    client = httpx.Client(transport=httpx.MockTransport(handler))
    with client, mock.patch.object(platform_http, "thread_http_client", return_value=client):
        yield


@contextmanager
def held_tasks() -> Iterator[list[tuple]]:
    """Celery tasks queued meanwhile are kept, not run (the test settings run them inline, inside the request
    that queued them): the list gets each as (task, args), for the test to run as a worker would, later."""
    from celery.app.task import Task

    held: list[tuple] = []

    def keep(task, args=None, kwargs=None, **options):
        held.append((task, tuple(args or ())))

    with mock.patch.object(Task, "apply_async", keep):
        yield held


def in_turn(*answers: Override | None) -> Override:
    """An override that answers its first call with `answers[0]`, its next with `answers[1]`, and so on; a
    None, and every call after the last, is answered by the sandbox."""
    left = list(answers)

    def answer(request: httpx.Request, sandbox: httpx.WSGITransport) -> httpx.Response:
        chosen = left.pop(0) if left else None
        return chosen(request, sandbox) if chosen is not None else sandbox.handle_request(request)

    return answer


def refused(status: int, body: dict) -> Override:
    """An override answering `status` with the JSON `body`, the sandbox never asked."""
    return lambda request, sandbox: httpx.Response(status, json=body)


def answered_then_database_dropped(request: httpx.Request, sandbox: httpx.WSGITransport) -> httpx.Response:
    """An override: the sandbox answers (and acts: a refresh has rotated the token), then the caller's database
    connection is dropped before it can store anything of the answer."""
    from tests.reliability.processes import terminate_own_backend

    answer = sandbox.handle_request(request)
    answer.read()
    terminate_own_backend()
    return answer


def token_answer_with(**fields) -> Override:
    """An override of a token endpoint (TikTok's /v2/oauth/token/, Instagram's long-lived exchange and
    refresh): the sandbox answers, and acts (TikTok rotates the refresh token), then the JSON it answered is
    given `fields` (a value of `...` removes that field) before the client reads it."""
    import json

    def answer(request: httpx.Request, sandbox: httpx.WSGITransport) -> httpx.Response:
        original = sandbox.handle_request(request)
        original.read()
        body = json.loads(original.content)
        if isinstance(body, dict) and "access_token" in body:
            body.update(fields)
            body = {key: value for key, value in body.items() if value is not ...}
        # json.dumps, not httpx's json=: it writes NaN as a platform's answer could.
        content = json.dumps(body).encode()
        return httpx.Response(original.status_code, content=content, headers={"content-type": "application/json"})

    return answer


def tiktok_refresh_keeping_the_refresh_token(refresh_field: dict) -> Override:
    """An override of TikTok's token endpoint: a refresh answered with a new access token only, the refresh
    token sent left valid (not rotated), and the answer's `refresh_token` as `refresh_field` says ({} for no
    such field, {"refresh_token": ""} for an empty one), without `refresh_expires_in`."""
    from urllib.parse import parse_qs as parse_form

    from accounts.platforms.sandbox import oauth
    from accounts.platforms.sandbox.identities import tiktok_open_id
    from accounts.platforms.sandbox.models import Token

    def answer(request: httpx.Request, sandbox: httpx.WSGITransport) -> httpx.Response:
        form = {key: values[0] for key, values in parse_form(request.content.decode()).items()}
        assert form.get("grant_type") == "refresh_token", form
        old = oauth.find_token(platform="tiktok", raw=form["refresh_token"], kinds=(Token.Kind.REFRESH,))
        assert old is not None and oauth.token_problem(old) is None
        access = oauth.issue_token(
            platform="tiktok", kind=Token.Kind.ACCESS, username=old.username, scopes=old.scopes,
            ttl=oauth.tiktok_access_ttl(),
        )  # fmt: skip
        body = {
            "access_token": access.raw,
            "expires_in": int(oauth.tiktok_access_ttl().total_seconds()),
            "open_id": tiktok_open_id(old.username),
            "scope": old.scopes,
            "token_type": "Bearer",
            **refresh_field,
        }
        return httpx.Response(200, json=body)

    return answer


def platform_down(
    platform: str,
    calls: list | None = None,
    *,
    until=None,
    status: int = 500,
    retry_after: int | None = None,
    timeout: bool = False,
) -> dict[str, Override]:
    """Overrides (for `intercepted`) of every API call to `platform`: refused with the platform's own error (a
    500, or a 429 with `retry_after`), or not answered at all (`timeout`), until `until` (None: for good), then
    answered by the sandbox. `calls` gets the time of each refused call."""
    from django.utils import timezone

    def answer(request, sandbox):
        if until is not None and timezone.now() >= until:
            return sandbox.handle_request(request)
        if calls is not None:
            calls.append(timezone.now())
        if timeout:
            raise httpx.ReadTimeout("platform outage", request=request)
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        if platform == "tiktok":
            code = "rate_limit_exceeded" if status == 429 else "internal_error"
            body = {"data": {}, "error": {"code": code, "message": "down", "log_id": "x"}}
        else:
            code = 4 if status == 429 else 2
            body = {"error": {"message": "down", "type": "OAuthException", "code": code, "is_transient": True}}
        return httpx.Response(status, json=body, headers=headers)

    return {"/sandbox/tiktok/v2/" if platform == "tiktok" else "/sandbox/instagram/graph/": answer}


def tiktok_refreshes(username: str) -> int:
    """How many times TikTok (the sandbox) was asked to refresh `username`'s tokens and did: each rotated one
    refresh token away."""
    from accounts.platforms.sandbox.models import Token

    return Token.objects.filter(platform="tiktok", username=username, revoked_reason="rotated").count()
