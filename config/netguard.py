"""Fetching URLs that partners or platforms hand us (avatars, media) and posting to partner URLs
(webhooks) without becoming a proxy into our own network: refuse private, loopback, link-local and
metadata addresses (outside dev, where the sandbox lives on 127.0.0.1), cap bytes (decoded ones: see
read_limited) and time, and never follow redirects blindly. Also the one deadline every outgoing call
(webhooks, avatars, platform and provider calls) is bounded by as a whole: see `deadline`."""

import ipaddress
import socket
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpcore
import httpx
from django.conf import settings


class UnsafeURL(ValueError):
    """The URL points somewhere we never connect to."""


class UnresolvedHost(UnsafeURL):
    """The host name did not resolve (now): the resolver failed or answered nothing. Unlike an address found
    non-public, this can change in a moment (a resolver restarting answers EAI_AGAIN), so a caller that
    retries anyway may treat it as transient; every other caller sees the UnsafeURL it always did."""


class FetchFailed(Exception):
    """The remote answered badly (status, type, size) or not in time."""


# IPv6 prefixes whose last 32 bits are an IPv4 address that a translator on the path may reach: NAT64's
# well-known prefix (RFC 6052), SIIT's IPv4-translated form (RFC 2765) and the deprecated IPv4-compatible
# form (which an old stack routes as IPv4). Python's `is_global` calls them all global; each is judged by
# the IPv4 address it carries.
_CARRY_IPV4 = tuple(ipaddress.ip_network(prefix) for prefix in ("64:ff9b::/96", "::ffff:0:0:0/96", "::/96"))
# NAT64's local-use prefix (RFC 8215): IANA marks it not globally reachable, and a local translator may place
# the IPv4 address anywhere in it (RFC 6052's /48 and /56 layouts put it mid-address), so none of it is public.
_LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")


def _ip_is_public(ip: ipaddress._BaseAddress) -> bool:
    """Globally routable, as IANA's special-purpose registries say (`is_global`): beyond private, loopback
    and link-local, that also refuses the shared address space 100.64.0.0/10, where some clouds serve their
    metadata (100.100.100.200). An IPv6 address that carries an IPv4 one (mapped, 6to4, Teredo, NAT64, SIIT,
    IPv4-compatible) reaches that IPv4 address, and is judged by it; site-local (deprecated, still routed
    inside some networks) is not public."""
    if ip.version == 6:
        if ip.is_site_local or ip in _LOCAL_NAT64:
            return False
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and any(ip in net for net in _CARRY_IPV4):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return _ip_is_public(embedded)
    return ip.is_global and not ip.is_multicast


def _public_addresses(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to, in the resolver's order; UnsafeURL unless every one is public
    (UnresolvedHost when there is none to judge)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise UnresolvedHost(f"cannot resolve {host}")
    except UnicodeError:  # the IDNA codec refuses an empty label or one over 63 characters before any lookup
        raise UnsafeURL(f"{host} is not a valid host name")
    addresses: list[str] = []
    for info in infos:
        address = info[4][0]
        if not _ip_is_public(ipaddress.ip_address(address.split("%")[0])):
            raise UnsafeURL(f"{host} resolves to a non-public address")
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise UnresolvedHost(f"cannot resolve {host}")
    return addresses


def assert_public_url(url: str, *, allow_private: bool | None = None) -> None:
    """Raise UnsafeURL unless `url` is http(s) and every address its host resolves to is public
    (UnresolvedHost, a kind of UnsafeURL, when its host does not resolve). `allow_private` defaults to
    settings.LAYERS_ALLOW_PRIVATE_FETCH (on in dev/test for the sandbox).

    A check made before the request, and so not enough alone: see public_client, whose connections
    go only to an address it has just checked."""
    if allow_private is None:
        allow_private = settings.LAYERS_ALLOW_PRIVATE_FETCH
    # urlsplit raises ValueError for a malformed IPv6 host (`http://[abc/`), and reading the port for one
    # out of range (`:99999`, which Django's URL validation lets through): UnsafeURL, as callers expect, not
    # a server error. Read whether or not private addresses are allowed: no HTTP client can use such a URL.
    try:
        parts = urlsplit(url)
    except ValueError:
        raise UnsafeURL("not a valid URL") from None
    try:
        port = parts.port
    except ValueError:
        raise UnsafeURL("invalid port (out of range or not a number)") from None
    if port == 0:  # read as "no port" below, and checked as 443 or 80; no connection can be made to it
        raise UnsafeURL("invalid port (0)")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeURL("only absolute http(s) URLs")
    if allow_private:
        return
    _public_addresses(parts.hostname, port or (443 if parts.scheme == "https" else 80))


# --- The whole exchange within a deadline -------------------------------------------------------------
#
# httpx's timeouts bound each network wait only (connect, each write, each read): a server that sends a byte
# now and then, of its status line, its headers or its body, never trips them and holds the calling thread
# as long as it likes. `deadline(seconds)` bounds the whole exchange instead: every wait of a client built
# here (public_client, bounded_client) is given at most the time left, and once none is left the next wait
# fails at once with httpx's own timeout error (ConnectTimeout, WriteTimeout, ReadTimeout), which callers
# already handle as a timeout.
#
# Why shrinking each wait rather than a watchdog thread that closes the connection when time is up: the
# waits stay on the calling thread, bounded by the kernel's socket timeouts, with no second thread racing the
# connection pool or TLS state (and close() from another thread does not even wake a blocked recv() on
# Linux), no timer per request, and the failure is a timeout where it happens. What it does not bound: the
# DNS lookup before connecting (getaddrinfo takes no timeout; the resolver's own applies).

_deadline: ContextVar[float | None] = ContextVar("netguard_deadline", default=None)


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Within this block, the network waits of clients built here (connect, TLS handshake, sending the
    request, and reading the status line, headers and body) end at most `seconds` from now, together: past
    that, httpx raises its timeout error. A block inside another keeps the earlier of the two deadlines.
    Per thread (a context variable), so a client shared by threads keeps each caller's own deadline."""
    at = time.monotonic() + seconds
    outer = _deadline.get()
    token = _deadline.set(at if outer is None else min(at, outer))
    try:
        yield
    finally:
        _deadline.reset(token)


def deadline_passed() -> bool:
    """Whether the current `deadline` block's time is up (False outside one)."""
    at = _deadline.get()
    return at is not None and time.monotonic() >= at


def _time_left(timeout: float | None, error: type[Exception]) -> float | None:
    """`timeout` (httpx's, per wait) shortened to what is left of the current deadline; `error` once nothing
    is left."""
    at = _deadline.get()
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise error("the deadline of the whole exchange has passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every wait ends by the current deadline. Read at each wait, not when the connection
    was made: a kept-alive connection serves later calls with deadlines of their own."""

    # Sending is split so that each piece's wait is computed afresh: one socket write of a large body could
    # otherwise wait the whole time left once per send() inside it.
    WRITE_PIECE = 64 * 1024

    def __init__(self, stream: httpcore.NetworkStream):
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _time_left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        for start in range(0, len(buffer), self.WRITE_PIECE):
            self._stream.write(buffer[start : start + self.WRITE_PIECE], _time_left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None) -> httpcore.NetworkStream:
        tls = self._stream.start_tls(ssl_context, server_hostname, _time_left(timeout, httpcore.ConnectTimeout))
        return _DeadlineStream(tls)

    def get_extra_info(self, info: str):
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.SyncBackend):
    """httpcore's own sockets, connected and then waited on within the current deadline (_DeadlineStream)."""

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        timeout = _time_left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(super().connect_tcp(host, port, timeout, local_address, socket_options))


def _use_backend(client: httpx.Client, backend: httpcore.SyncBackend) -> httpx.Client:
    """Give every connection pool of `client` (its transport and any proxy mounts taken from the
    environment) this network backend. httpx takes no network backend; the httpcore pool it wraps does
    (checked by tests/hardening/test_limits.py, which fails if a new httpx or httpcore moves it). Transports
    without a network (httpx.WSGITransport, MockTransport) are left as they are."""
    transports = [client._transport, *client._mounts.values()]
    for transport in transports:
        if isinstance(transport, httpx.HTTPTransport):
            pool = transport._pool
            if not hasattr(pool, "_network_backend"):
                raise RuntimeError("httpcore's connection pool no longer has _network_backend")
            pool._network_backend = backend
    return client


def _uncompressed(kwargs: dict) -> dict:
    """httpx.Client `kwargs` whose headers ask for answers as they are (Accept-Encoding: identity, where httpx
    asks for gzip and deflate by default): a compressed answer is decoded within its cap by read_limited,
    but one not compressed in the first place costs nothing to decode."""
    headers = httpx.Headers(kwargs.get("headers"))
    headers["Accept-Encoding"] = "identity"
    return {**kwargs, "headers": headers}


def bounded_client(**kwargs) -> httpx.Client:
    """`httpx.Client(**kwargs)` whose connections honour `deadline` (for hosts we chose: the platforms) and
    which asks for answers uncompressed."""
    return _use_backend(httpx.Client(**_uncompressed(kwargs)), _DeadlineBackend())


# --- Connections to public addresses only -------------------------------------------------------------


class _PublicAddressesOnly(_DeadlineBackend):
    """Opens a connection only to an address it has just checked is public.

    Checking a URL's host before the request leaves a gap: the HTTP client resolves the name again to
    connect, and a name under an attacker's control can answer a public address to the check and a private
    one (the metadata service, an internal host) to the connection a moment later (DNS rebinding). Here the
    check and the connection use the same answer. TLS still verifies the certificate against the host name,
    which httpcore passes on separately from the address."""

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        try:
            addresses = _public_addresses(host, port)
        except UnsafeURL as exc:
            raise httpcore.ConnectError(str(exc)) from None
        for address in addresses[:-1]:
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout):
                continue  # the next address, as socket.create_connection would
        return super().connect_tcp(addresses[-1], port, timeout, local_address, socket_options)


def public_client(*, allow_private: bool | None = None, limits: httpx.Limits | None = None, **kwargs) -> httpx.Client:
    """An httpx client (`kwargs` as for httpx.Client) for URLs partners or platforms hand us: its connections
    go only to public addresses (see _PublicAddressesOnly) unless `allow_private` (default:
    settings.LAYERS_ALLOW_PRIVATE_FETCH, on in dev and tests, where the sandbox lives on 127.0.0.1); a refused
    address is an httpx.ConnectError. It follows no redirect and takes no proxy from the environment
    (through a proxy, the address connected to would be the proxy's, not the one checked). Its connections
    honour `deadline`, and it asks for answers uncompressed."""
    if allow_private is None:
        allow_private = settings.LAYERS_ALLOW_PRIVATE_FETCH
    transport = httpx.HTTPTransport(limits=limits) if limits else httpx.HTTPTransport()  # httpx's default limits
    client = httpx.Client(transport=transport, trust_env=False, **{**_uncompressed(kwargs), "follow_redirects": False})
    return _use_backend(client, _DeadlineBackend() if allow_private else _PublicAddressesOnly())


@dataclass(frozen=True)
class Fetched:
    content: bytes
    content_type: str


def fetch_limited(
    url: str, *, client: httpx.Client, max_bytes: int, allowed_types: tuple[str, ...], timeout: float = 10.0
) -> Fetched:
    """GET `url` (no redirects) and return its body if its type is allowed, it fits in `max_bytes` and the
    whole exchange (connect, headers, body) took at most `timeout` seconds (`deadline`; `client` is one
    built here). A server that answers nothing, or drips a byte at a time, is given up on then."""
    assert_public_url(url)
    try:
        with (
            deadline(timeout),
            client.stream("GET", url, timeout=timeout, follow_redirects=False) as response,
        ):
            if response.status_code != 200:
                raise FetchFailed(f"status {response.status_code}")
            content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type not in allowed_types:
                raise FetchFailed(f"content type {content_type or 'missing'} not allowed")
            return Fetched(content=read_limited(response, max_bytes=max_bytes), content_type=content_type)
    except httpx.HTTPError as exc:
        raise FetchFailed(type(exc).__name__)


# The content codings read_limited decodes, each with zlib's window bits for it: gzip's header, or zlib's.
_INFLATED = {"gzip": zlib.MAX_WBITS | 16, "x-gzip": zlib.MAX_WBITS | 16, "deflate": zlib.MAX_WBITS}
# The most bytes one step of decoding produces: what decoding holds beyond the body counted so far.
DECODE_PIECE = 64 * 1024


def read_limited(response: httpx.Response, *, max_bytes: int) -> bytes:
    """The body of a streamed `response`, decoded: FetchFailed("too large") as soon as it is known to be over
    `max_bytes` (declared, or counted as it is decoded), and FetchFailed("too slow") once the current
    `deadline` has passed while it is still arriving (over the network, a client built here already fails
    its next wait then; this also covers the transports without a network: the in-process sandbox, test
    doubles). httpx errors (a dropped connection, an undecodable body, a timeout) are raised as they are.

    Decoded here, a piece at a time (see _decoded), not by httpx: httpx decodes each network read whole
    before handing it over, and a compression bomb (a gzip answer of 64 KiB is 64 MiB of zeros decoded;
    gzip twice, a few hundred bytes) would be in memory whole before any count saw it. Here a body is never
    held past `max_bytes` and DECODE_PIECE. An answer compressed in a way not decoded here (br, zstd, or
    more than one coding) is FetchFailed("content encoding … not accepted"): the clients built here ask for
    no compression, and a server that compresses unasked uses gzip (or deflate)."""
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise FetchFailed("too large")
    if response.is_stream_consumed:
        # Read already, by httpx itself: an answer a test double built around bytes (httpx.Response(content=…)
        # reads and decodes those at once). Every transport with a network, and the in-process sandbox, streams.
        body = response.content
        if len(body) > max_bytes:
            raise FetchFailed("too large")
        return body
    body = bytearray()
    for piece in _decoded(response):
        body.extend(piece)
        if len(body) > max_bytes:
            raise FetchFailed("too large")
        if deadline_passed():
            raise FetchFailed("too slow")
    return bytes(body)


def _decoded(response: httpx.Response) -> Iterator[bytes]:
    """The body of a streamed `response` as its Content-Encoding says to decode it, in pieces of at most
    DECODE_PIECE bytes: however much a network read decodes into, it is handed over a piece at a time, so a
    caller that stops counting stops the decoding too.

    As httpx's own decoders do: "deflate" without zlib's header (raw deflate, which some servers send) is
    tried when the first bytes are not zlib's; what follows the end of the compressed data is ignored; a
    body that does not decode is httpx.DecodingError."""
    codings = [c.strip().lower() for c in response.headers.get_list("content-encoding", split_commas=True)]
    codings = [c for c in codings if c not in ("", "identity")]
    if not codings:
        yield from response.iter_raw()
        return
    if len(codings) > 1 or codings[0] not in _INFLATED:
        raise FetchFailed(f"content encoding {', '.join(codings)} not accepted")
    inflater = zlib.decompressobj(_INFLATED[codings[0]])
    may_be_raw = codings[0] == "deflate"
    for data in response.iter_raw():
        # Until a step decodes less than a piece: zlib has then used all of `data` and holds no more output.
        while not inflater.eof:
            try:
                piece = inflater.decompress(data, DECODE_PIECE)
            except zlib.error as exc:
                if may_be_raw:
                    inflater, may_be_raw = zlib.decompressobj(-zlib.MAX_WBITS), False
                    continue
                raise httpx.DecodingError(str(exc), request=response.request) from None
            may_be_raw = False
            data = inflater.unconsumed_tail
            if piece:
                yield piece
            if len(piece) < DECODE_PIECE:
                break
        if inflater.eof:
            return
