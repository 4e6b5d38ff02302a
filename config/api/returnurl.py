"""The returnUrl allowlist (API.md "returnUrl allowlist — exact host match").

A partner's end-customer is redirected to this URL after consenting, so a loose check is an open
redirect that leaks the OAuth outcome to an attacker. The rule is deliberately blunt: the URL must parse
cleanly, and its host (lower-cased, IDNA-encoded, with any non-default port) must *equal* one allowlist
entry. No suffix, subdomain or wildcard matching; anything unusual is refused rather than interpreted."""

import re
from urllib.parse import urlsplit

import idna
from django.conf import settings

from config.api.errors import ReturnUrlNotAllowed, Validation

DEFAULT_PORTS = {"https": 443, "http": 80}
LOCAL_HOSTS = {"localhost", "127.0.0.1"}
MAX_LENGTH = 2048
# Characters browsers silently strip or reinterpret (\ becomes /, tabs and newlines vanish).
_SUSPICIOUS = re.compile(r"[\x00-\x20\x7f\\]")
_HOST_LABEL = re.compile(r"\A[a-z0-9-]{1,63}\Z")


def normalize_host(host: str) -> str:
    """Lower-cased ASCII (IDNA) form of a hostname; raises ValueError when it is not a valid name."""
    host = host.strip().lower()
    if not host or host.endswith(".") or "%" in host:
        raise ValueError("not a hostname")
    if re.fullmatch(r"[0-9.]+", host):  # dotted IPv4
        parts = host.split(".")
        if len(parts) != 4 or any(not p or int(p) > 255 or (len(p) > 1 and p[0] == "0") for p in parts):
            raise ValueError("not an IPv4 address")
        return host
    try:
        ascii_host = idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise ValueError(str(exc))
    if not all(_HOST_LABEL.match(label) for label in ascii_host.split(".")):
        raise ValueError("not a hostname")
    return ascii_host


def normalize_allowlist_entry(entry: str) -> str:
    """`App.Acme.test:8443` → `app.acme.test:8443`; used when staff save a key's allowlist."""
    host, sep, port = entry.strip().rpartition(":") if ":" in entry else (entry.strip(), "", "")
    host = normalize_host(host)
    if sep:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("invalid port")
        if int(port) == DEFAULT_PORTS["https"]:
            # check_return_url compares https://host:443 as the bare host; host:443 would never match.
            return host
        return f"{host}:{int(port)}"
    return host


def check_return_url(url, *, allowlist: list[str], field: str = "returnUrl") -> str:
    """Return `url` if it may be redirected to; raise Validation (422) when malformed and
    ReturnUrlNotAllowed (403) when well-formed but its host is not on `allowlist`."""

    def bad(message: str):
        return Validation({field: [message]})

    if not isinstance(url, str) or not url:
        raise bad("Must be an absolute https URL.")
    if len(url) > MAX_LENGTH:
        raise bad(f"Must be at most {MAX_LENGTH} characters.")
    if _SUSPICIOUS.search(url):
        raise bad("Must not contain spaces, control characters or backslashes.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise bad("Is not a valid URL.")
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.netloc or not url.lower().startswith(f"{scheme}://"):
        raise bad("Must be an absolute https URL.")
    if "@" in parts.netloc:
        raise bad("Must not contain user information.")
    if "#" in url:
        raise bad("Must not contain a fragment.")
    try:
        host = normalize_host(parts.hostname or "")
    except ValueError:
        raise bad("Has an invalid host.")
    if scheme == "http" and not (host in LOCAL_HOSTS and settings.LAYERS_ALLOW_HTTP_LOCALHOST_RETURN):
        raise bad("Must use https.")
    authority = host if port in (None, DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    if authority not in set(allowlist):
        raise ReturnUrlNotAllowed(f"The host '{authority}' is not on this API key's allowed return domains.")
    return url
