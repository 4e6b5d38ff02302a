"""Fetching URLs that partners or platforms hand us (avatars, media) and posting to partner URLs
(webhooks) without becoming a proxy into our own network: refuse private, loopback, link-local and
metadata addresses (outside dev, where the sandbox lives on 127.0.0.1), cap bytes and time, and never
follow redirects blindly."""

import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
from django.conf import settings


class UnsafeURL(ValueError):
    """The URL points somewhere we never connect to."""


class FetchFailed(Exception):
    """The remote answered badly (status, type, size) or not in time."""


def _ip_is_public(ip: ipaddress._BaseAddress) -> bool:
    return not (
        ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved or ip.is_unspecified
    )


def assert_public_url(url: str, *, allow_private: bool | None = None) -> None:
    """Raise UnsafeURL unless `url` is http(s) and every address its host resolves to is public.
    `allow_private` defaults to settings.LAYERS_ALLOW_PRIVATE_FETCH (on in dev/test for the sandbox)."""
    if allow_private is None:
        allow_private = settings.LAYERS_ALLOW_PRIVATE_FETCH
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeURL("only absolute http(s) URLs")
    if allow_private:
        return
    host = parts.hostname
    try:
        infos = socket.getaddrinfo(host, parts.port or (443 if parts.scheme == "https" else 80))
    except socket.gaierror:
        raise UnsafeURL(f"cannot resolve {host}")
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%")[0])
        if not _ip_is_public(ip):
            raise UnsafeURL(f"{host} resolves to a non-public address")


@dataclass(frozen=True)
class Fetched:
    content: bytes
    content_type: str


def fetch_limited(
    url: str, *, client: httpx.Client, max_bytes: int, allowed_types: tuple[str, ...], timeout: float = 10.0
) -> Fetched:
    """GET `url` (no redirects) and return its body if its type is allowed, it fits in `max_bytes` and it
    arrived within `timeout` seconds in all. Each network wait is bounded by `timeout` too, so a server that
    answers nothing, or drips a byte at a time, is given up on after at most about twice that."""
    assert_public_url(url)
    deadline = time.monotonic() + timeout
    try:
        with client.stream("GET", url, timeout=timeout, follow_redirects=False) as response:
            if response.status_code != 200:
                raise FetchFailed(f"status {response.status_code}")
            content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type not in allowed_types:
                raise FetchFailed(f"content type {content_type or 'missing'} not allowed")
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise FetchFailed("too large")
            body = bytearray()
            for chunk in response.iter_bytes():
                body.extend(chunk)
                if len(body) > max_bytes:
                    raise FetchFailed("too large")
                if time.monotonic() > deadline:
                    raise FetchFailed("too slow")
            return Fetched(content=bytes(body), content_type=content_type)
    except httpx.HTTPError as exc:
        raise FetchFailed(type(exc).__name__)
