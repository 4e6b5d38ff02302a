"""The returnUrl allowlist (API.md "returnUrl allowlist — exact host match").

A partner's end-customer is redirected to this URL after consenting, so a loose check is an open
redirect that leaks the OAuth outcome to an attacker. The rule is deliberately blunt: the URL must parse
cleanly, and its host (lower-cased, IDNA-encoded) must *equal* one allowlist entry's, on that entry's port:
a bare host allows the URL scheme's default port, `host:port` that port, compared as numbers (a URL writing
or omitting its default port is the same URL; an entry's port never allows another). No suffix, subdomain
or wildcard matching; anything unusual is refused rather than interpreted."""

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
    # The reasons are read by staff editing an allowlist (the returnUrl check only says "invalid host"): the
    # IDNA library's own ("Codepoint U+002A at position 1 of '*' not allowed") left them guessing.
    if "*" in host:
        raise ValueError("no wildcards: list each host, e.g. app.acme.com and www.acme.com")
    if host.endswith(".") and host.strip("."):
        raise ValueError("no trailing dot")
    if not host or "%" in host:
        raise ValueError("not a hostname")
    if re.fullmatch(r"[0-9.]+", host):  # dotted IPv4
        parts = host.split(".")
        if len(parts) != 4 or any(not p or int(p) > 255 or (len(p) > 1 and p[0] == "0") for p in parts):
            raise ValueError("not an IPv4 address")
        return host
    try:
        ascii_host = idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError:
        raise ValueError("not a valid hostname")
    if not all(_HOST_LABEL.match(label) for label in ascii_host.split(".")):
        raise ValueError("not a valid hostname")
    return ascii_host


def url_shape_problem(url: str, *, schemes: tuple[str, ...] = ("https",)) -> str | None:
    """Why `url` is not an absolute URL of one of `schemes` that every parser reads the same way, or None.
    The shape only (nothing is fetched or resolved), and the same rules as a returnUrl's where they apply to
    a URL someone else fetches: no spaces, control characters or backslashes (browsers and some HTTP clients
    read `https://a.test\\@b.test/` as host a.test, RFC 3986 parsers as b.test), a port that exists (1 to
    65535), no user information (credentials would be stored and handed on; RFC 9110 forbids sending them).
    For URLs we store or hand on without checking their host against an allowlist (media, provider links)."""
    if _SUSPICIOUS.search(url):
        return "Must not contain spaces, control characters or backslashes."
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError for a port that is not a number or over 65535
    except ValueError:
        return "Not a valid URL."
    scheme = parts.scheme.lower()
    if scheme not in schemes or not parts.hostname or not url.lower().startswith(f"{scheme}://"):
        return f"Must be an absolute {' or '.join(schemes)} URL."
    if port == 0:
        return "Not a valid URL: the port must be from 1 to 65535."
    if "@" in parts.netloc:
        return "Must not contain user information."
    return None


_PATH = re.compile(r"[/?#]")
_ORIGIN = re.compile(r"\A(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?#@]*)/?\Z")


def _entry_port(host: str, port: int | None) -> int | None:
    """The port an entry stores. None (the bare host) means "the returnUrl's default port", so 443, https's
    default, is dropped; a local host may also be reached over plain http (port 80), so there 443 is kept:
    `localhost:443` must not come to allow http://localhost."""
    if port == DEFAULT_PORTS["https"] and host not in LOCAL_HOSTS:
        return None
    return port


def normalize_allowlist_entry(entry: str) -> str:
    """One allowlist entry in its stored form: `host`, or `host:port` for any other port. Staff may write a
    host (`App.Acme.test`, `app.acme.test:8443`) or an origin (`https://app.acme.test:443`,
    `http://localhost:80`): an origin's port is its scheme's default when not written, and only its port is
    kept, since a returnUrl is matched on host and port (check_return_url). So `https://app.acme.test:443`,
    `https://app.acme.test` and `app.acme.test:443` are all `app.acme.test`, and `http://localhost` is
    `localhost:80`. Raises ValueError for anything else (a path, a query, user-info, another scheme, plain
    http to a public host, which check_return_url would refuse anyway)."""
    entry = entry.strip()
    scheme = None
    if "://" in entry:
        origin = _ORIGIN.match(entry)
        if origin is None or origin["scheme"].lower() not in DEFAULT_PORTS:
            # A returnUrl pasted whole is the usual mistake: say what to keep of it.
            written, _, rest = entry.partition("://")
            if written.lower() in DEFAULT_PORTS and _PATH.search(rest.rstrip("/")):
                raise ValueError("only the scheme, host and port: no path, query or fragment")
            raise ValueError("not an http(s) origin")
        scheme, entry = origin["scheme"].lower(), origin["authority"]
    elif _PATH.search(entry):
        raise ValueError("only the host (and :port): no path, query or fragment")
    host, sep, port = entry.rpartition(":") if ":" in entry else (entry, "", "")
    host = normalize_host(host)
    if sep:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("invalid port")
        number = int(port)
    else:
        number = DEFAULT_PORTS[scheme] if scheme else None
    if scheme == "http" and host not in LOCAL_HOSTS:
        raise ValueError("plain http is only for localhost / 127.0.0.1")
    number = _entry_port(host, number)
    return host if number is None else f"{host}:{number}"


def _allows(allowlist: list[str], *, host: str, port: int, default: bool) -> bool:
    """Whether an entry allows this host on this (effective) port: the bare host on the returnUrl's default
    port, `host:port` on that port however the URL writes it (`http://localhost/` is port 80 and matches
    `localhost:80`; `https://app.acme.test:443/` is the bare host's)."""
    entries = set(allowlist)
    return (default and host in entries) or f"{host}:{port}" in entries


def _not_allowed_message(authority: str, allowlist: list[str]) -> str:
    """The 403's message. A partner cannot change a key's allowlist (Layers staff do, in the admin), and a new
    key may have none yet: the message says which hosts the key allows (the partner's own, shown to the key
    holder only) and who adds one, rather than leaving the partner's engineer to guess at both."""
    listed = ", ".join(allowlist[:10]) + (", …" if len(allowlist) > 10 else "")
    allowed = f"it allows {listed}" if allowlist else "this API key has no allowed return domains yet"
    return (
        f"The host '{authority}' is not on this API key's allowed return domains ({allowed}). "
        "Layers staff add a host to a key: ask them."
    )


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
        raise bad("Not a valid URL.")
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
    effective = DEFAULT_PORTS[scheme] if port is None else port
    default = effective == DEFAULT_PORTS[scheme]
    if not _allows(allowlist, host=host, port=effective, default=default):
        authority = host if default else f"{host}:{effective}"
        raise ReturnUrlNotAllowed(_not_allowed_message(authority, allowlist))
    return url
