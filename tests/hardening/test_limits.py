"""Limits: the per-key rate limit is documented on every operation, request bodies are capped (413, never
a 500), pages are capped on every list, remote fetches (avatars) are capped by bytes, type and time without
failing the connect flow, and the OAuth callback and the sandbox are rate limited per client IP."""

import json
import socket
import threading
import time
from datetime import UTC, datetime

import httpx
import pytest
import time_machine
from django.core.cache import cache
from django.test import Client

from accounts.models import IdempotencyKey, SocialAccount
from accounts.platforms import http as platform_http
from accounts.platforms.base import PlatformUnavailable
from accounts.platforms.tiktok import TikTokClient
from config import netguard, ratelimit
from tests.accounts.oauth_helpers import connect, status
from tests.conftest import assert_error
from tests.hardening.routes import snapshot, v1_routes
from tests.hardening.world import build
from tests.platform_helpers import sandbox_control

NOON = datetime(2026, 5, 4, 12, 0, 10, tzinfo=UTC)


@pytest.fixture
def clean_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def schema(db):
    return Client().get("/v1/openapi.json").json()


# --- Documentation ----------------------------------------------------------------------------------


def test_every_operation_documents_429_with_retry_after_and_its_body_limits(schema):
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            responses = operation["responses"]
            assert responses["429"]["headers"]["Retry-After"]["schema"]["type"] == "integer", where
            assert "RATE_LIMITED" in responses["429"]["description"], where
            if method == "post":
                assert "PAYLOAD_TOO_LARGE" in responses["413"]["description"], where
                if "requestBody" in operation:  # rotate-secret reads no body: it never answers 400
                    assert "MALFORMED_REQUEST" in responses["400"]["description"], where
                assert "IDEMPOTENCY_KEY_REUSED" in responses["409"]["description"], where
                assert "422" in responses, where


def test_the_api_description_states_every_limit(schema):
    text = schema["info"]["description"]
    for needle in (
        "429 RATE_LIMITED",
        "Retry-After",
        "413 PAYLOAD_TOO_LARGE",
        "1 MiB",
        "limit",
        "200",
        "OAuth callback",
        "per client IP",
        "sandbox",
        "avatar",
        "Unknown query parameters",
    ):
        assert needle in text, needle
    content = schema["paths"]["/v1/projects/{projectId}/content"]["post"]["description"]
    assert "never downloads" in content and "mediaUrls" in content


# --- Request body cap -------------------------------------------------------------------------------


def post_routes():
    return [route for route in v1_routes() if "post" in route.methods]


@pytest.mark.parametrize("idempotency_key", [None, "cap-1"])
def test_a_body_over_the_cap_is_413_on_every_post_route_and_does_nothing(owner, settings, idempotency_key):
    world = build(owner, handle="cap.owner")
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    oversized = json.dumps({"caption": "x" * 5000, "returnUrl": "https://app.acme.test/"})
    headers = {"HTTP_IDEMPOTENCY_KEY": idempotency_key} if idempotency_key else {}
    before = snapshot(owner.org)
    routes = post_routes()
    assert len(routes) >= 7
    for route in routes:
        path = route.path({name: world.ids[name] for _, name in route.params})
        response = owner.client.post(path, oversized, content_type="application/json", **headers)
        error = assert_error(response, 413, "PAYLOAD_TOO_LARGE")
        assert "4096" in error["message"], route.route
    assert snapshot(owner.org) == before
    assert not IdempotencyKey.objects.filter(organization=owner.org).exists()


def test_the_default_cap_is_one_mebibyte(owner):
    path = f"/v1/projects/{owner.project.id}/content"
    body = {"mediaType": "image", "mediaUrls": ["https://cdn.acme.test/a.jpg"], "caption": "x" * (1024 * 1024)}
    assert_error(owner.client.post(path, body, format="json"), 413, "PAYLOAD_TOO_LARGE")
    body["caption"] = "x" * 5000  # under the cap: the request is read and validated as usual (4000 at most)
    assert_error(owner.client.post(path, body, format="json"), 422, "VALIDATION")


def test_a_body_over_the_cap_on_the_sandbox_is_a_client_error(db, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    response = sandbox_control("tiktok", "faults", {"username": "someone", "kind": "x" * 4096})
    assert response.status_code == 400


# --- Page size cap ----------------------------------------------------------------------------------


def test_every_list_caps_its_page_size_at_200(owner):
    world = build(owner, handle="pages.owner")
    lists = 0
    for route in v1_routes():
        if "get" not in route.methods:
            continue
        path = route.path({name: world.ids[name] for _, name in route.params})
        first = owner.client.get(path).json()
        if not (isinstance(first, dict) and isinstance(first.get("data"), list)):
            continue
        lists += 1
        for bad in ("201", "0", "-1", "1000000", "abc", "", "1_0", "٣"):
            error = assert_error(owner.client.get(path, {"limit": bad}), 422, "VALIDATION")
            assert list(error["details"]["fields"]) == ["limit"], (route.route, bad)
        for good in ("1", "200"):
            assert owner.client.get(path, {"limit": good}).status_code == 200, (route.route, good)
    assert lists >= 9


# --- Remote fetches: avatars --------------------------------------------------------------------------


def serve(respond, path: str = "/avatar.png", requests: list[bytes] | None = None) -> tuple[str, threading.Event]:
    """A one-connection HTTP server on loopback; `respond(conn)` writes the answer. Returns its URL. The
    request it read (its head, at least) is appended to `requests` when given."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    done = threading.Event()

    def run():
        conn, _ = server.accept()
        try:
            request = conn.recv(65536)
            if requests is not None:
                requests.append(request)
            respond(conn, done)
        except OSError:
            pass  # the client gave up and closed: what the test wants
        finally:
            conn.close()
            server.close()

    threading.Thread(target=run, daemon=True).start()
    return f"http://127.0.0.1:{server.getsockname()[1]}{path}", done


def fetch(url, **kwargs):
    with httpx.Client() as client:
        return netguard.fetch_limited(
            url, client=client, allowed_types=("image/png",), **{"max_bytes": 1000, "timeout": 0.5, **kwargs}
        )


def test_a_server_that_drips_bytes_is_given_up_on(settings):
    def drip(conn, done):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 900\r\n\r\n")
        while not done.is_set():  # one byte every 50 ms: no single read ever waits long
            conn.sendall(b"x")
            time.sleep(0.05)

    url, done = serve(drip)
    try:
        with pytest.raises(netguard.FetchFailed, match="too slow"):
            fetch(url)
    finally:
        done.set()


def dripping(head: bytes, trickle: bytes, tail: bytes = b""):
    """A `serve` responder: `head` at once, then `trickle` a byte every 50 ms (no single wait reaches a
    timeout), then `tail`; and what it saw: `client_left` if the client hung up first, `complete` if it sent
    it all, `ended` (an Event) once it stopped."""
    seen = {"ended": threading.Event()}

    def drip(conn, done):
        conn.sendall(head)
        try:
            for i in range(len(trickle)):
                if done.is_set():
                    return
                conn.sendall(trickle[i : i + 1])
                time.sleep(0.05)
            conn.sendall(tail)
            seen["complete"] = True
        except OSError:
            seen["client_left"] = True
            raise
        finally:
            seen["ended"].set()

    return drip, seen


def json_answer_dripping(body: bytes):
    """An answer whose headers come at once and whose body drips."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    return dripping(head, body)


def headers_dripping(content_type: bytes):
    """An answer whose headers drip (a minute of them): httpx reads them all before handing the answer over."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type + b"\r\n"
    return dripping(head, b"X" * 1200, b"-Drip: 1\r\nContent-Length: 0\r\n\r\n")


def test_a_server_that_drips_its_headers_is_given_up_on():
    # httpx reads the status line and headers before it hands over the response: a deadline checked while
    # reading the body never started for this one.
    drip, seen = headers_dripping(b"image/png")
    url, done = serve(drip)
    try:
        with netguard.public_client() as client, pytest.raises(netguard.FetchFailed, match="ReadTimeout"):
            netguard.fetch_limited(url, client=client, max_bytes=1000, allowed_types=("image/png",), timeout=0.5)
        assert seen["ended"].wait(30), "the client still holds the connection"
    finally:
        done.set()
    assert "client_left" in seen and "complete" not in seen


def test_a_server_that_never_answers_is_given_up_on():
    def silent(conn, done):
        done.wait(5)

    url, done = serve(silent)
    try:
        with pytest.raises(netguard.FetchFailed, match="ReadTimeout"):
            fetch(url)
    finally:
        done.set()


@pytest.mark.parametrize(
    "headers, body, reason",
    [
        ({"content-type": "image/png", "content-length": "5000"}, b"\x89PNG" + b"x" * 4996, "too large"),
        ({"content-type": "image/png"}, b"\x89PNG" + b"x" * 4996, "too large"),  # no length declared: counted
        ({"content-type": "text/html"}, b"<html></html>", "content type text/html"),
        ({}, b"\x89PNG", "content type missing"),
    ],
)
def test_fetch_refuses_oversized_and_non_image_answers(headers, body, reason):
    transport = httpx.MockTransport(lambda request: httpx.Response(200, headers=headers, content=iter([body])))
    with httpx.Client(transport=transport) as client, pytest.raises(netguard.FetchFailed, match=reason):
        netguard.fetch_limited(
            "https://cdn.example.test/a.png", client=client, max_bytes=1000, allowed_types=("image/png",)
        )


def test_fetch_follows_no_redirect_and_refuses_private_addresses(settings):
    transport = httpx.MockTransport(lambda request: httpx.Response(302, headers={"location": "http://10.0.0.1/"}))
    with httpx.Client(transport=transport) as client:
        with pytest.raises(netguard.FetchFailed, match="status 302"):
            netguard.fetch_limited("https://cdn.example.test/a.png", client=client, max_bytes=10, allowed_types=())
        settings.LAYERS_ALLOW_PRIVATE_FETCH = False
        with pytest.raises(netguard.UnsafeURL):
            netguard.fetch_limited("http://127.0.0.1/a.png", client=client, max_bytes=10, allowed_types=())


@pytest.fixture
def refusals(monkeypatch):
    """Why each avatar download was refused (fetch_limited's FetchFailed messages)."""
    seen: list[str] = []
    real = netguard.fetch_limited

    def spy(*args, **kwargs):
        try:
            return real(*args, **kwargs)
        except netguard.FetchFailed as exc:
            seen.append(str(exc))
            raise

    monkeypatch.setattr(netguard, "fetch_limited", spy)
    return seen


def _connect_without_avatar(owner, username: str, refusals: list[str], reason: str):
    """The connect flow succeeds in full although the avatar was refused, for `reason`."""
    state, response = connect(owner, "tiktok", username)
    assert response.status_code == 302 and response["Location"] == "https://app.acme.test/connected"
    body = status(owner, state)
    assert body["status"] == "completed"
    account = owner.client.get(f"/v1/social-accounts/{body['socialAccountId']}").json()
    assert account["status"] == "connected"
    assert len(account["layers"]) == 4  # the rest of the fan-out ran
    assert account["avatarUrl"] is None
    assert SocialAccount.objects.get(pk=account["id"]).avatar_url == ""
    assert refusals and all(reason in refused for refused in refusals), refusals


@pytest.mark.django_db(transaction=True)
def test_an_oversized_avatar_is_refused_without_failing_the_connect(owner, settings, refusals):
    settings.LAYERS_AVATAR_MAX_BYTES = 64  # the sandbox's avatar is a real PNG of a few hundred bytes
    _connect_without_avatar(owner, "big.avatar", refusals, "too large")


@pytest.mark.django_db(transaction=True)
def test_an_avatar_that_is_not_an_image_is_refused_without_failing_the_connect(owner, settings, monkeypatch, refusals):
    # The platform's profile points at something that is not an image (this server's JSON health check).
    monkeypatch.setattr(
        "accounts.platforms.sandbox.avatars.signed_url",
        lambda request, **kwargs: f"{settings.LAYERS_PUBLIC_URL}/healthz",
    )
    _connect_without_avatar(owner, "html.avatar", refusals, "content type application/json not allowed")


@pytest.mark.django_db(transaction=True)
def test_an_avatar_server_that_times_out_does_not_fail_the_connect(owner, monkeypatch, refusals):
    def timeout(username):
        raise httpx.ReadTimeout("avatar CDN did not answer")  # reaches the client as a real timeout

    monkeypatch.setattr("accounts.platforms.sandbox.avatars.png", timeout)
    _connect_without_avatar(owner, "slow.avatar", refusals, "ReadTimeout")


# --- Platform calls: the whole answer within a deadline and a size ----------------------------------------


def test_a_platform_answer_that_drips_is_given_up_on_before_it_ends(settings):
    # Each byte comes 50 ms after the last, so no single wait reaches the timeout; the whole answer would
    # take a minute.
    settings.LAYERS_PLATFORM_TRANSPORT = "http"
    settings.LAYERS_PLATFORM_TIMEOUT = 0.5
    body = json.dumps({"data": {"user": {"open_id": "abc", "username": "drip"}}, "error": {"code": "ok"}}).encode()
    body += b" " * 1200
    drip, seen = json_answer_dripping(body)
    url, done = serve(drip, path="")
    settings.LAYERS_TIKTOK_API_BASE = url
    try:
        with pytest.raises(PlatformUnavailable):
            TikTokClient().get_profile(access_token="act.x")
        assert seen["ended"].wait(30), "the client still holds the connection"
    finally:
        done.set()
    assert "client_left" in seen and "complete" not in seen


def test_a_platform_answer_whose_headers_drip_is_given_up_on_before_they_end(settings):
    settings.LAYERS_PLATFORM_TRANSPORT = "http"
    settings.LAYERS_PLATFORM_TIMEOUT = 0.5
    drip, seen = headers_dripping(b"application/json")
    url, done = serve(drip, path="")
    settings.LAYERS_TIKTOK_API_BASE = url
    try:
        with pytest.raises(PlatformUnavailable) as raised:
            TikTokClient().get_profile(access_token="act.x")
        assert seen["ended"].wait(30), "the client still holds the connection"
    finally:
        done.set()
    assert raised.value.code == "timeout" and raised.value.outcome_unknown
    assert "client_left" in seen and "complete" not in seen


@pytest.mark.django_db(transaction=True)
def test_a_managed_provider_whose_answer_drips_is_given_up_on_and_the_post_retried(owner, settings):
    # The provider call used its own client: each network wait was bounded, the whole answer was not, so a
    # provider answering a byte now and then held a publisher past its claim lease.
    from tests.accounts.oauth_helpers import connected_account
    from tests.scheduling.publish_helpers import managed_provider, post, run_dispatcher, schedule_now

    settings.LAYERS_PLATFORM_TIMEOUT = 0.5
    drip, seen = json_answer_dripping(b" " * 1200)  # a minute at this pace
    url, done = serve(drip, path="/dispatch")
    account = connected_account(owner, "tiktok", "managed.drip")
    managed_provider(project=owner.project, name="Slow", endpoint_url=url)
    scheduled = schedule_now(owner, account["id"], mode="managed")
    try:
        run_dispatcher()
        assert seen["ended"].wait(30), "the publisher still holds the connection"
    finally:
        done.set()
    body = post(owner, scheduled["id"])
    assert "client_left" in seen and "complete" not in seen
    assert body["status"] == "queued" and body["attempts"] == 1  # retried later: the provider deduplicates


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_platform_answer_larger_than_the_cap_is_refused(declared):
    chunk = b" " * 65536
    count = platform_http.MAX_ANSWER_BYTES // len(chunk) + 2
    sent = {"chunks": 0}

    def chunks():
        yield b'{"data": {"user": {"open_id": "abc"}}, "error": {"code": "ok"}}'
        for _ in range(count):
            sent["chunks"] += 1
            yield chunk

    def handler(request):
        headers = {"Content-Type": "application/json"}
        if declared:
            headers["Content-Length"] = str(len(chunk) * count + 64)
        return httpx.Response(200, headers=headers, content=chunks())

    client = TikTokClient(http=httpx.Client(transport=httpx.MockTransport(handler)))
    with pytest.raises(PlatformUnavailable):
        client.get_profile(access_token="act.x")
    assert sent["chunks"] < count  # not read to its end


# --- Per-IP limits: OAuth callback and sandbox ----------------------------------------------------------


def test_the_oauth_callback_is_rate_limited_per_client_ip(db, settings, clean_cache):
    settings.LAYERS_CALLBACK_RATE = "3/min"
    here, there = Client(REMOTE_ADDR="203.0.113.7"), Client(REMOTE_ADDR="198.51.100.9")
    url = "/oauth/tiktok/callback?code=x&state=st_" + "0" * 40
    with time_machine.travel(NOON, tick=False):
        for _ in range(3):
            assert here.get(url).status_code == 400  # unknown state: the error page
        limited = here.get(url)
        assert there.get(url).status_code == 400  # another client is not affected
    assert limited.status_code == 429
    assert limited["Content-Type"].startswith("text/html")
    assert b"Too many sign-in attempts" in limited.content
    assert int(limited["Retry-After"]) == 50  # the rest of the minute
    with time_machine.travel(NOON.replace(minute=1), tick=False):
        assert here.get(url).status_code == 400  # the next window


def test_behind_trusted_proxies_the_forwarded_client_address_counts(db, settings, clean_cache):
    settings.LAYERS_CALLBACK_RATE = "1/min"
    settings.LAYERS_NUM_PROXIES = 1
    proxy = Client(REMOTE_ADDR="10.0.0.2")
    url = "/oauth/instagram/callback?state=st_" + "0" * 40
    with time_machine.travel(NOON, tick=False):
        # A client cannot dodge the limit by sending its own X-Forwarded-For: the proxy appends the real one.
        assert proxy.get(url, HTTP_X_FORWARDED_FOR="1.1.1.1, 203.0.113.7").status_code == 400
        assert proxy.get(url, HTTP_X_FORWARDED_FOR="2.2.2.2, 203.0.113.7").status_code == 429
        assert proxy.get(url, HTTP_X_FORWARDED_FOR="203.0.113.8").status_code == 400


def test_the_sandbox_is_rate_limited_per_client_ip_with_json(db, settings, clean_cache):
    settings.LAYERS_SANDBOX_RATE = "2/min"
    with time_machine.travel(NOON, tick=False):
        for _ in range(2):
            assert sandbox_control("tiktok", "faults", {}).status_code == 422
        limited = sandbox_control("instagram", "faults", {})
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(limited["Retry-After"]) == 50


def test_the_partner_api_is_not_counted_against_the_per_ip_limits(owner, settings, clean_cache):
    settings.LAYERS_CALLBACK_RATE = settings.LAYERS_SANDBOX_RATE = "1/min"
    with time_machine.travel(NOON, tick=False):
        for _ in range(3):
            assert owner.client.get("/v1/projects").status_code == 200


def test_rates_are_read_like_the_api_rate():
    assert ratelimit.parse_rate("60/min") == (60, 60)
    assert ratelimit.parse_rate("5/s") == (5, 1)
    assert ratelimit.parse_rate("100/hour") == (100, 3600)
    assert ratelimit.parse_rate("1000/day") == (1000, 86400)


# --- Remote addresses: checked where the connection is made --------------------------------------------


class Listener:
    """A loopback server standing for an internal service: counts the connections it is offered and
    answers each with a small PNG."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.requests: list[bytes] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self.requests.append(conn.recv(65536))
                body = b"\x89PNG\r\n\x1a\n"
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nConnection: close\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )

    def close(self):
        self.sock.close()


@pytest.fixture
def internal():
    listener = Listener()
    yield listener
    listener.close()


def rebind(monkeypatch, name: str, first: str) -> list[str]:
    """`name` answers `first` to its first lookup and 127.0.0.1 to every later one, as a name whose DNS
    server an attacker runs (zero TTL) can. Returns the list of lookups made."""
    real = socket.getaddrinfo
    lookups: list[str] = []

    def getaddrinfo(host, port, *args, **kwargs):
        if host != name:
            return real(host, port, *args, **kwargs)
        address = first if not lookups else "127.0.0.1"
        lookups.append(address)
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return lookups


@pytest.fixture
def rebinding(monkeypatch):
    """`rebind.example.test`: a public address first, then 127.0.0.1."""
    return rebind(monkeypatch, "rebind.example.test", "93.184.216.34")


def test_an_avatar_host_that_changes_its_answer_never_gets_a_connection(settings, internal, rebinding):
    from accounts.platforms.http import platform_http_client

    settings.LAYERS_ALLOW_PRIVATE_FETCH = False
    settings.LAYERS_PLATFORM_TRANSPORT = "http"
    url = f"http://rebind.example.test:{internal.port}/avatar.png"

    with platform_http_client(public_only=True) as client, pytest.raises(netguard.FetchFailed, match="ConnectError"):
        netguard.fetch_limited(url, client=client, max_bytes=1000, allowed_types=("image/png",))

    # The check saw a public address; the connection looked again, saw 127.0.0.1 and was not made.
    assert rebinding == ["93.184.216.34", "127.0.0.1"]
    assert internal.requests == []


def test_a_name_that_rebinds_after_the_guards_lookup_never_reaches_the_internal_address(monkeypatch, internal):
    """The attacker's DNS answers `127.0.0.2` (taken as public here) to the guard's lookup and the internal
    127.0.0.1 to any lookup after it. The guard must connect to the address it checked (nothing listens
    there: the connection fails); resolving the name again to connect would hand the request to the internal
    service."""
    lookups = rebind(monkeypatch, "rebind-late.example.test", "127.0.0.2")
    monkeypatch.setattr(netguard, "_ip_is_public", lambda ip: str(ip) == "127.0.0.2")

    with netguard.public_client(allow_private=False, timeout=2) as client, pytest.raises(httpx.ConnectError):
        client.get(f"http://rebind-late.example.test:{internal.port}/avatar.png")

    assert lookups[0] == "127.0.0.2"
    assert internal.requests == []


def test_a_webhook_host_that_changes_its_answer_never_gets_a_connection(settings, internal, rebinding):
    from accounts.webhooks.services import _post

    settings.LAYERS_ALLOW_PRIVATE_FETCH = settings.LAYERS_WEBHOOK_ALLOW_PRIVATE = False
    url = f"http://rebind.example.test:{internal.port}/hook"

    netguard.assert_public_url(url)  # what every attempt checks first: a public address, this time
    result = _post(url, body=b"{}", headers={"Content-Type": "application/json"})

    assert result.status_code is None and "non-public" in result.error
    assert rebinding == ["93.184.216.34", "127.0.0.1"]
    assert internal.requests == []


def test_the_guarded_transport_connects_to_the_address_it_checked_and_keeps_the_host_name(
    settings, internal, monkeypatch
):
    """A host whose every address is public is reached at that address, with its own name in the request
    (and, over TLS, in the certificate check). 127.0.0.1 stands for a public address here."""
    settings.LAYERS_ALLOW_PRIVATE_FETCH = False
    real = socket.getaddrinfo
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda host, port, *a, **k: (
            [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", port))]
            if host == "cdn.example.test"
            else real(host, port, *a, **k)
        ),
    )
    monkeypatch.setattr(netguard, "_ip_is_public", lambda ip: str(ip) == "127.0.0.1")

    with netguard.public_client() as client:
        fetched = netguard.fetch_limited(
            f"http://cdn.example.test:{internal.port}/a.png",
            client=client,
            max_bytes=1000,
            allowed_types=("image/png",),
        )

    assert fetched.content.startswith(b"\x89PNG")
    assert f"Host: cdn.example.test:{internal.port}".encode() in internal.requests[0]
