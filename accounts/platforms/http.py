"""The one HTTP client every platform call goes through: explicit timeouts, a deadline and a size cap on
every answer, no redirects, and — in tests — an in-process route to this very Django app (the sandbox), so
the real client code runs end to end with no network.

Secrets travel in these requests (Bearer headers, and Instagram's `access_token` query parameter), so
nothing here logs a URL or a request, and transport errors are re-raised without their cause's text.
The `httpx` logger (which logs request URLs at INFO) is kept at WARNING in settings for the same reason.
"""

import contextvars
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.wsgi import WSGIHandler
from django.http import HttpResponseServerError

from config.netguard import FetchFailed, bounded_client, deadline, public_client, read_limited
from config.text import shorten, storable

from .base import PlatformUnavailable
from .decoding import json_loads

USER_AGENT = "layers-partner-api/1.0"
# The platforms answer small JSON documents (the largest, a page of 50 Instagram media with their captions,
# is a few hundred KB); anything much bigger is not an answer to read into memory.
MAX_ANSWER_BYTES = 4 * 1024 * 1024
# A call must be complete, answer and all, within this many LAYERS_PLATFORM_TIMEOUTs of its start. The
# timeout itself bounds each network wait only, and an answer dripped a byte at a time (its headers as well
# as its body) would otherwise hold a publisher past its claim lease (scheduling.services.CLAIM_LEASE).
ANSWER_DEADLINE_TIMEOUTS = 2
# The most platform calls one web request makes, one after the other, each within call_deadline(): the OAuth
# callback's on TikTok (accounts.services._exchange_and_bind): the code exchange, the profile and its retry
# without `username` (TikTok refusing the scope), then, for a grant it binds to nothing, the withdrawal
# (_revoke_at_platform): revoke, refresh the refused token, revoke again. Instagram's callback makes 5 (three
# for the exchange, the profile, a revoke), a disconnect (DELETE of an account, its revoke after commit) 3, and
# the admin's revoke of selected accounts makes as many as fit (a worker revokes the rest); a lease assignment's
# token checks are a worker's. tests/config/test_web_request_platform_calls.py counts each path's worst.
# A stopping gunicorn worker lets its requests in flight run that long (config/gunicorn_conf.py).
WEB_REQUEST_PLATFORM_CALLS = 6
# httpx errors raised before any byte of the request left this machine: the platform cannot have it.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError, httpx.UnsupportedProtocol)

# The most characters of a platform's message an exception carries (redact).
MESSAGE_LENGTH = 300

_in_process_handler: "InProcessWSGIHandler | None" = None
_per_thread = threading.local()


def platform_http_client(*, public_only: bool = False) -> httpx.Client:
    """A fresh client with the platform timeouts; use it as a context manager so it is closed.

    It never stores cookies: the platform APIs use none, and a client reused for many accounts must not
    carry anything from one account's call to the next. `public_only`: for URLs the platforms hand us
    (avatars), whose connections must go to public addresses only (config/netguard.public_client). Either
    way its connections honour config/netguard.deadline, which platform_request sets, and it asks for answers
    uncompressed (a compressed one all the same is decoded within the cap: config/netguard.read_limited)."""
    options = {
        "timeout": httpx.Timeout(settings.LAYERS_PLATFORM_TIMEOUT, connect=settings.LAYERS_PLATFORM_CONNECT_TIMEOUT),
        "follow_redirects": False,
        "headers": {"User-Agent": USER_AGENT},
        "cookies": CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
    }
    limits = httpx.Limits(keepalive_expiry=settings.LAYERS_PLATFORM_KEEPALIVE_SECONDS)
    if settings.LAYERS_PLATFORM_TRANSPORT == "wsgi":
        return bounded_client(transport=httpx.WSGITransport(app=_in_process_app()), limits=limits, **options)
    if settings.LAYERS_PLATFORM_TRANSPORT != "http":
        raise ImproperlyConfigured("LAYERS_PLATFORM_TRANSPORT must be 'http' or 'wsgi'")
    if public_only:
        return public_client(limits=limits, **options)
    return bounded_client(limits=limits, **options)


def thread_http_client() -> httpx.Client:
    """This thread's long-lived platform client: its connections are kept alive between calls.

    Making a client costs tens of milliseconds of CPU (httpx builds an SSL context and loads the CA bundle
    every time) and every fresh client opens new connections, which made client set-up the largest cost of
    a publish. One client per thread (Celery's threads pool, gunicorn's gthread) is never shared between
    threads, so it needs no locking; it is rebuilt after a fork or when the settings it was built from
    change (tests switch the transport)."""
    key = (
        os.getpid(),
        settings.LAYERS_PLATFORM_TRANSPORT,
        settings.LAYERS_PLATFORM_TIMEOUT,
        settings.LAYERS_PLATFORM_CONNECT_TIMEOUT,
        settings.LAYERS_PLATFORM_KEEPALIVE_SECONDS,
    )
    client = getattr(_per_thread, "client", None)
    if client is None or client.is_closed or _per_thread.key != key:
        if client is not None and _per_thread.pid == os.getpid():
            client.close()
        client = platform_http_client()
        _per_thread.client, _per_thread.key, _per_thread.pid = client, key, os.getpid()
    return client


def call_deadline() -> float:
    """Seconds one platform call may take, connecting, sending and the whole answer (platform_request)."""
    return ANSWER_DEADLINE_TIMEOUTS * settings.LAYERS_PLATFORM_TIMEOUT


def web_request_deadline() -> float:
    """Seconds a web request may spend waiting on the platforms: WEB_REQUEST_PLATFORM_CALLS calls, each
    taking its whole deadline (a slow platform that still answers)."""
    return WEB_REQUEST_PLATFORM_CALLS * call_deadline()


@contextmanager
def http_session(http: httpx.Client | None) -> Iterator[httpx.Client]:
    """The injected client or this thread's client (both left open: their owners close them)."""
    yield http if http is not None else thread_http_client()


@contextmanager
def transport_errors(platform: str) -> Iterator[None]:
    """Every httpx error — timeouts, connection failures, an undecodable body — is PlatformUnavailable, so a
    client raises only the typed errors of .base. `outcome_unknown` is False only when the request never
    left (NOT_SENT): once it was sent, the platform may have acted on it whatever happened to the answer.

    `from None`: the httpx exception holds the request (URL with Instagram's access_token query
    parameter); it must not ride along as __cause__ into logs or error trackers."""
    try:
        yield
    except httpx.HTTPError as exc:
        sent = not isinstance(exc, NOT_SENT)
        if isinstance(exc, httpx.TimeoutException):
            message, code = f"{platform}: request timed out {_in_words(exc, TIMEOUT_WORDS)}", "timeout"
        elif isinstance(exc, httpx.TransportError):
            message, code = f"{platform}: {_in_words(exc, CONNECTION_WORDS)}", "connection_error"
        else:  # httpx.DecodingError: the body does not match its Content-Encoding (or too many redirects)
            message, code = f"{platform}: unreadable answer", "bad_response"
        raise PlatformUnavailable(message, code=code, outcome_unknown=sent) from None


# What each transport failure was, in the words a failed post's message gives the partner and support
# (error.message, the admin): it used to name httpx's class ("request timed out (ReadTimeout)"), which is
# Python to a partner. The words keep what the class told: whether the request had reached the platform.
TIMEOUT_WORDS = (
    (httpx.ConnectTimeout, "while connecting"),
    (httpx.PoolTimeout, "waiting for a free connection"),
    (httpx.WriteTimeout, "while sending"),
    (httpx.ReadTimeout, "waiting for the answer"),
)
CONNECTION_WORDS = (
    (httpx.ConnectError, "could not connect"),
    (httpx.ProxyError, "the proxy refused the request"),
    (httpx.UnsupportedProtocol, "the address is not http(s)"),
    (httpx.WriteError, "the connection broke while sending"),
    (httpx.ReadError, "the connection broke while reading the answer"),
    (httpx.RemoteProtocolError, "the connection broke mid-answer"),
)


def _in_words(exc: Exception, words: tuple) -> str:
    return next((said for kind, said in words if isinstance(exc, kind)), "connection failed")


def platform_request(http: httpx.Client, platform: str, method: str, url: str, **kwargs) -> httpx.Response:
    """`http.request(method, url, **kwargs)`, the whole exchange — connecting, sending, the status line, the
    headers and the body — within its deadline (ANSWER_DEADLINE_TIMEOUTS × LAYERS_PLATFORM_TIMEOUT from now,
    config/netguard.deadline) and the answer within MAX_ANSWER_BYTES, through transport_errors. Returns the
    answer, body decoded and already read. An answer too slow or too large is PlatformUnavailable; once the
    request went out, with outcome_unknown: the platform may have acted on it.

    `http` must be built by platform_http_client or config/netguard (their connections honour the deadline);
    without a network (the in-process sandbox) the deadline is checked as the body arrives."""
    with (
        transport_errors(platform),
        deadline(call_deadline()),
        http.stream(method, url, **kwargs) as response,
    ):
        try:
            content = read_limited(response, max_bytes=MAX_ANSWER_BYTES)
        except FetchFailed as exc:  # "too slow" or "too large"
            code = "timeout" if str(exc) == "too slow" else "bad_response"
            raise PlatformUnavailable(f"{platform}: answer {exc}", code=code, outcome_unknown=True) from None
    # The body is decoded now: the headers that described its encoding on the wire no longer apply.
    wire_only = {"content-encoding", "content-length", "transfer-encoding"}
    headers = [(key, value) for key, value in response.headers.multi_items() if key.lower() not in wire_only]
    return httpx.Response(response.status_code, headers=headers, content=content, request=response.request)


def json_body(response: httpx.Response) -> dict | list | None:
    """The decoded JSON body, or None when there is none (a proxy's HTML 502, an empty 204) or it is nested too
    deeply to decode (a RecursionError out of a call whose answer came, not a typed PlatformError)."""
    try:
        return json_loads(response.content)
    except ValueError:
        return None


def redact(text: str, *secrets: str | None) -> str:
    """A platform message made safe to carry in an exception: some platforms echo request parameters
    back in error descriptions, and tokens must never reach a log. Also storable (config/text.storable: a
    refusal PostgreSQL could not store left its post `publishing`, the platform's words lost) and bounded in
    length, cut between graphemes with "…" (it reaches partners as a failed post's error.message)."""
    return shorten(storable(blank_secrets(text, *secrets)), MESSAGE_LENGTH)


def platform_text(value) -> str:
    """A text field of a platform's answer (a profile's names, a post's fail reason) as the database can keep
    it: a string whatever JSON type came, with what PostgreSQL text cannot hold made U+FFFD. A display name
    with half an emoji in it failed every connect of its creator. Not cut: the caller knows its column."""
    return storable(value if isinstance(value, str) else str(value or ""))


def blank_secrets(text: str, *secrets: str | None) -> str:
    """`text` with each of `secrets` blanked, as sent and as a form or query string carries it (TikTok's
    "…!6135.va" is "…%216135.va" there)."""
    from urllib.parse import quote, quote_plus

    for secret in secrets:
        if secret:
            for form in {secret, quote(secret, safe=""), quote_plus(secret)}:
                text = text.replace(form, "[redacted]")
    return text


def _in_process_app() -> "InProcessWSGIHandler":
    global _in_process_handler
    if _in_process_handler is None:
        _in_process_handler = InProcessWSGIHandler()
    return _in_process_handler


class InProcessWSGIHandler(WSGIHandler):
    """This Django app as a WSGI callable for httpx.WSGITransport (LAYERS_PLATFORM_TRANSPORT = "wsgi").

    Why not plain get_wsgi_application():
    - The platform call is nested inside the caller's own request, task or test, on the caller's thread
      and database connection. The stock handler sends request_started / request_finished, whose
      close_old_connections receiver would close that connection (it is inside a transaction in tests,
      and CONN_MAX_AGE=0), and reset_queries would wipe the caller's query-count assertions. So neither
      signal is sent here.
    - The nested request runs in a copy of the caller's context, so the caller keeps its request id.
    - The stock handler turns a view's exception into a 500 page and fires got_request_exception, which
      Django's test Client (when the outer request is a test request) would re-raise at the end of the
      *outer* request. Instead the exception is taken from the innermost layer and re-raised to httpx,
      which propagates it: a sandbox bug surfaces as its own traceback, and the sandbox's simulated
      timeout (it raises httpx.ReadTimeout) reaches the client as a real timeout.
    """

    _exception_attr = "_layers_in_process_exception"

    def __call__(self, environ, start_response):
        request = self.request_class(environ)
        # In a copy of the caller's context: the nested request's id (config/requestid.py) must not become the
        # caller's, whose lines after the call would carry the sandbox's id (no request_finished clears it).
        response = contextvars.copy_context().run(self.get_response, request)
        exc = getattr(request, self._exception_attr, None)
        if exc is not None:
            raise exc
        # Read the body now: the stock path would close the response later, which sends request_finished.
        body = b"".join(response.streaming_content) if response.streaming else response.content
        status = f"{response.status_code} {response.reason_phrase}"
        headers = [*response.items(), *(("Set-Cookie", c.output(header="")) for c in response.cookies.values())]
        start_response(status, headers)
        return [body]

    def _get_response(self, request):
        try:
            return super()._get_response(request)
        except Exception as exc:  # re-raised in __call__, outside Django's 500 handling
            setattr(request, self._exception_attr, exc)
            return HttpResponseServerError()
