"""Production: refuses to start without what a real deployment needs — real secrets, a real database, the
live platforms and their credentials, its public https URL and host names, a shared broker, cache and media
storage — rather than start and fail (or run insecurely) later."""

import re
from urllib.parse import urlsplit

from cryptography.fernet import Fernet
from django.core.checks.security.base import (
    SECRET_KEY_INSECURE_PREFIX,
    SECRET_KEY_MIN_LENGTH,
    SECRET_KEY_MIN_UNIQUE_CHARACTERS,
)
from django.core.exceptions import ImproperlyConfigured
from django.http.request import split_domain_port, validate_host

from .base import *  # noqa: F403
from .base import (
    ALLOWED_HOSTS,
    AWS_STORAGE_BUCKET_NAME,
    CACHE_URL,
    CELERY_BROKER_URL,
    DATABASES,
    LAYERS_INSTAGRAM_API_BASE,
    LAYERS_INSTAGRAM_AUTHORIZE_URL,
    LAYERS_INSTAGRAM_CLIENT_ID,
    LAYERS_INSTAGRAM_CLIENT_SECRET,
    LAYERS_INSTAGRAM_DRAFT_DELIVERY_URL,
    LAYERS_INSTAGRAM_GRAPH_BASE,
    LAYERS_PLATFORM_TRANSPORT,
    LAYERS_PLATFORMS,
    LAYERS_PUBLIC_URL,
    LAYERS_TIKTOK_API_BASE,
    LAYERS_TIKTOK_AUTHORIZE_URL,
    LAYERS_TIKTOK_CLIENT_KEY,
    LAYERS_TIKTOK_CLIENT_SECRET,
    LAYERS_TOKEN_KEYS,
    SECRET_KEY,
    env,
    switch,
    whole_number,
)

DEBUG = False
LAYERS_ALLOW_HTTP_LOCALHOST_RETURN = False
LAYERS_ALLOW_PRIVATE_FETCH = False
# Forced, like the fetch flag above: a dev .env carried over must not let partners register http:// or
# private (metadata, internal) webhook destinations.
LAYERS_WEBHOOK_ALLOW_PRIVATE = False
LAYERS_STAFF_MFA_REQUIRED = True
# Blanks dropped: "${NEW},${OLD}" with both unset gives ["", ""], which would otherwise pass as "set" and
# leave tokens encrypted with a key derived from SECRET_KEY, unreadable once real keys are configured.
LAYERS_TOKEN_KEYS = [key.strip() for key in LAYERS_TOKEN_KEYS if key.strip()]


def _is_fernet_key(key: str) -> bool:
    try:
        Fernet(key)
    except (ValueError, TypeError):
        return False
    return True


def _schemes(urls: str, separators: str) -> list[str]:
    """The scheme of each URL of a list ("" for one that is not a URL: `redis//host`, a colon short)."""
    return [urlsplit(url.strip()).scheme if "://" in url else "" for url in re.split(f"[{separators}]", urls)]


def _named(schemes: list[str]) -> str:
    return ", ".join(f"{scheme}://" if scheme else "a URL with no scheme:// (a colon missing?)" for scheme in schemes)


def _weak_secret_key(key: str) -> bool:
    """What Django's `check --deploy` calls weak (security.W009), which nothing runs at start-up: sessions,
    signed values and password reset tokens become guessable."""
    return (
        len(key) < SECRET_KEY_MIN_LENGTH
        or len(set(key)) < SECRET_KEY_MIN_UNIQUE_CHARACTERS
        or key.startswith(SECRET_KEY_INSECURE_PREFIX)
    )


# The brokers this deployment knows how to bound (base.broker_timeouts) and that every process can reach.
# memory:// (each process its own queue: readyz said "broker ok" while no task ever reached a worker) and a
# mistyped URL (`redis//host`, which kombu takes whole for the host name of an AMQP broker) are refused.
BROKER_SCHEMES = ("redis", "rediss", "sentinel", "amqp", "amqps", "pyamqp")
# What config.cache.TolerantRedisCache (Django's Redis backend) can connect to; it splits locations on , and ;
CACHE_SCHEMES = ("redis", "rediss", "unix")

_problems = []
if not env.str("DJANGO_SECRET_KEY", default="") or SECRET_KEY.startswith("dev-only"):
    _problems.append("DJANGO_SECRET_KEY must be set")
elif _weak_secret_key(SECRET_KEY):
    _problems.append(
        f"DJANGO_SECRET_KEY must be a long random value (at least {SECRET_KEY_MIN_LENGTH} characters, "
        f"{SECRET_KEY_MIN_UNIQUE_CHARACTERS} of them different, not Django's {SECRET_KEY_INSECURE_PREFIX!r} "
        "placeholder): python -c 'import secrets; print(secrets.token_urlsafe(50))'"
    )
if not LAYERS_TOKEN_KEYS:
    _problems.append("LAYERS_TOKEN_KEYS must list at least one Fernet key")
elif not all(_is_fernet_key(key) for key in LAYERS_TOKEN_KEYS):
    # Otherwise the first token to encrypt (an OAuth callback) would fail with a 500.
    _problems.append("LAYERS_TOKEN_KEYS must hold Fernet keys only (Fernet.generate_key())")
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    _problems.append("DATABASE_URL must point at PostgreSQL")
if LAYERS_PLATFORMS != "live":
    _problems.append("LAYERS_PLATFORMS must be 'live' (the sandbox is never mounted in production)")
for _name, _value in (
    ("LAYERS_TIKTOK_CLIENT_KEY", LAYERS_TIKTOK_CLIENT_KEY),
    ("LAYERS_TIKTOK_CLIENT_SECRET", LAYERS_TIKTOK_CLIENT_SECRET),
    ("LAYERS_INSTAGRAM_CLIENT_ID", LAYERS_INSTAGRAM_CLIENT_ID),
    ("LAYERS_INSTAGRAM_CLIENT_SECRET", LAYERS_INSTAGRAM_CLIENT_SECRET),
):
    if not _value:
        _problems.append(f"{_name} must be set (every connect would fail at the platform)")
if LAYERS_PLATFORM_TRANSPORT != "http":
    # "wsgi" is the tests' transport: every TikTok and Instagram call would be answered by this app itself.
    _problems.append("LAYERS_PLATFORM_TRANSPORT must be 'http' (the real platforms, over the network)")
# The calls carry the apps' client secrets and the creators' tokens, and the authorize URLs the browser's way
# back with its code: never in clear. (The draft delivery service is optional: empty, drafts are refused.)
for _name, _value in (
    ("LAYERS_TIKTOK_AUTHORIZE_URL", LAYERS_TIKTOK_AUTHORIZE_URL),
    ("LAYERS_TIKTOK_API_BASE", LAYERS_TIKTOK_API_BASE),
    ("LAYERS_INSTAGRAM_AUTHORIZE_URL", LAYERS_INSTAGRAM_AUTHORIZE_URL),
    ("LAYERS_INSTAGRAM_API_BASE", LAYERS_INSTAGRAM_API_BASE),
    ("LAYERS_INSTAGRAM_GRAPH_BASE", LAYERS_INSTAGRAM_GRAPH_BASE),
    ("LAYERS_INSTAGRAM_DRAFT_DELIVERY_URL", LAYERS_INSTAGRAM_DRAFT_DELIVERY_URL),
):
    if _value and urlsplit(_value).scheme != "https":
        _problems.append(f"{_name} must be an https:// URL (platform secrets and tokens travel on it)")
if not env.list("DJANGO_ALLOWED_HOSTS", default=[]):
    _problems.append("DJANGO_ALLOWED_HOSTS must name the API's host(s) (the default answers 400 to every request)")
_public_host = split_domain_port(urlsplit(LAYERS_PUBLIC_URL).netloc.rpartition("@")[2])[0]
if not env.str("LAYERS_PUBLIC_URL", default="") or urlsplit(LAYERS_PUBLIC_URL).scheme != "https":
    _problems.append("LAYERS_PUBLIC_URL must be the service's public https URL (OAuth redirect URIs are built on it)")
elif not _public_host:
    _problems.append("LAYERS_PUBLIC_URL must name the service's host (https://api.example.com)")
elif ALLOWED_HOSTS and not validate_host(_public_host, ALLOWED_HOSTS):
    _problems.append(
        f"LAYERS_PUBLIC_URL's host {_public_host!r} must be one of DJANGO_ALLOWED_HOSTS (the platforms send "
        "every OAuth callback, and TikTok its webhooks, there: each would be a 400)"
    )
if CELERY_BROKER_URL.startswith("filesystem://"):
    _problems.append("CELERY_BROKER_URL must point at Redis or RabbitMQ (the file broker works on one machine only)")
elif _bad := sorted({scheme for scheme in _schemes(CELERY_BROKER_URL, ";") if scheme not in BROKER_SCHEMES}):
    # Only the scheme is named: the URL may hold a password.
    _problems.append(
        f"CELERY_BROKER_URL must be a Redis or RabbitMQ URL ({', '.join(s + '://' for s in BROKER_SCHEMES)}), "
        f"not {_named(_bad)}"
    )
if not CACHE_URL:
    _problems.append("LAYERS_CACHE_URL must point at Redis (rate limits must be shared by every process)")
elif _bad := sorted({scheme for scheme in _schemes(CACHE_URL, ",;") if scheme not in CACHE_SCHEMES}):
    _problems.append(
        f"LAYERS_CACHE_URL must be a Redis URL ({', '.join(s + '://' for s in CACHE_SCHEMES)}), not {_named(_bad)}"
    )
# Workers save the avatars they rehost; web processes serve them at /media/. On local storage that works only
# when every one of them sees the same directory: with a disk per machine or container, every avatarUrl
# answered 404, silently. Production runs more than one process by design, so local media is refused unless
# the operator says the directory is shared (one machine, or a volume every web and worker process mounts)
# rather than guessed at from paths, which look the same whether shared or not. (Read even with a bucket, so
# that a word it does not take is refused whatever else is set.)
_media_root_shared = switch("LAYERS_MEDIA_ROOT_SHARED", default=False)
if not AWS_STORAGE_BUCKET_NAME and not _media_root_shared:
    _problems.append(
        "LAYERS_S3_BUCKET must name the media bucket, or LAYERS_MEDIA_ROOT_SHARED=true say that every web and "
        "worker process mounts the same LAYERS_MEDIA_ROOT (workers save the avatars that web processes serve)"
    )
if _problems:
    raise ImproperlyConfigured("Production settings refused: " + "; ".join(_problems))

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_CONTENT_TYPE_NOSNIFF = True
# A request that reached us over plain http (the proxy says so in X-Forwarded-Proto) is sent to https, and
# browsers are told to use https only: the consent callback and the admin carry codes and session cookies.
# The health probes are exempt: load balancers usually check over plain http and would read a 301 as down
# (config.probes answers them before SecurityMiddleware anyway; kept should the middleware order change).
# Set LAYERS_SSL_REDIRECT=false where the proxy already redirects; LAYERS_HSTS_SECONDS=0 turns HSTS off.
SECURE_SSL_REDIRECT = switch("LAYERS_SSL_REDIRECT", default=True)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
# Up to two years (the longest max-age commonly sent): every browser that saw it stays bound to https that long.
SECURE_HSTS_SECONDS = whole_number(
    "LAYERS_HSTS_SECONDS", default=365 * 24 * 3600, least=0, most=2 * 365 * 24 * 3600, unit="seconds"
)
# includeSubDomains binds every subdomain of the host that sends it to https for the max-age (with the API at
# the domain itself, every subdomain of the operator's domain), including ones this service does not run (an
# intranet page, a vendor's CNAME on plain http): browsers that saw it would refuse them. Off unless the
# operator, who alone knows the domain, turns it on.
SECURE_HSTS_INCLUDE_SUBDOMAINS = switch("LAYERS_HSTS_INCLUDE_SUBDOMAINS", default=False)
# No `preload` (SECURE_HSTS_PRELOAD stays False, and no variable sets it): the preload list binds the whole
# registered domain, every subdomain, for months after leaving it; the domain's owner asks for it at the apex,
# with includeSubDomains and a year's max-age, which is their decision, not this service's (README).
