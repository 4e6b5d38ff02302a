"""Settings shared by every environment. Everything that differs between deployments comes from the
environment (DESIGN.md "Runtime contract"); with nothing set the service runs on embedded defaults."""

import logging
import os
import re
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from environs import Env
from environs.exceptions import EnvValidationError

from config.envfile import ENV_FILE
from config.rates import parse_rate

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = BASE_DIR / "var"

env = Env()
env.read_env(str(ENV_FILE), recurse=False)  # already read by the entry points (config/envfile.py); kept for others


# Values the code cannot use are refused here, when the settings load, so that manage.py, gunicorn, Celery
# workers and beat all refuse to start naming the variable and what it takes. Left to the code that reads
# them, they passed `check` and then answered every request they cover with a 500, or stopped work without a
# word (a dispatcher handing out 0 posts, a relay sending to 0 endpoints at once).
def _read(name: str, default, takes: str, parse=env.int, **options):
    """env.int / env.float / env.dict (`parse`), with what the variable takes in the message for a value that is
    no number at all ("15s", nan, inf, "init:6"): environs' own says only "Not a valid number", or, for a dict
    pair without "=", "not enough values to unpack", naming no variable. (Booleans: switch.)"""
    try:
        return parse(name, default=default, **options)
    except (EnvValidationError, ValueError):
        raise ImproperlyConfigured(f"{name} must be {takes} (not {os.environ.get(name, '')!r})") from None


# Every number has an upper bound too (README, Configuration, gives each range): past a sane one a value was
# either absurd (a platform timeout of a year made gunicorn's grace a decade) or overflowed later, in the middle
# of the work, naming nothing (a sandbox delay of 1e300 at the first publish, a retention of 10**11 days at
# start-up as "Python int too large to convert to C int").
def whole_number(name: str, default: int, *, least: int = 1, most: int, unit: str = "") -> int:
    """An integer from `least` to `most`; `unit` says what it counts."""
    takes = f"a whole number{f' of {unit}' if unit else ''}, from {least} to {most}"
    value = _read(name, default, takes)
    if not least <= value <= most:
        raise ImproperlyConfigured(f"{name} must be {takes} (not {value})")
    return value


def seconds(name: str, default: float, *, most: float, zero: bool = False, unit: str = "seconds") -> float:
    """A length of time, up to `most`: a timeout of 0 (or less) fails every call it bounds at once. `zero`: 0 is
    allowed (a delay the sandbox adds, off), a negative one is not."""
    takes = f"a number of {unit}{', 0 or more' if zero else ' greater than 0'}, up to {most:g}"
    value = _read(name, default, takes, env.float)  # env.float refuses nan and inf
    if value < 0 or (value == 0 and not zero) or value > most:
        raise ImproperlyConfigured(f"{name} must be {takes} (not {value:g})")
    return value


# environs' words (marshmallow's), the single letters too so that no deployment written with one stops, but in
# any case and with the spaces around them ignored: environs took only the spellings on its list ("True",
# "TRUE", "On"), so "tRUE", "oN" or " true" (pasted with its space, a trailing newline from a secret store)
# stopped the start-up while "TRUE" did not. A log level is read the same way (log_level).
TRUE_WORDS = frozenset({"true", "on", "yes", "1", "t", "y"})
FALSE_WORDS = frozenset({"false", "off", "no", "0", "f", "n"})


def switch(name: str, default: bool | None) -> bool | None:
    """A boolean (`default` when unset: None for one that follows another setting), in the words the README
    lists, in any case; any other word (an empty value included) is refused naming the variable."""
    written = env.str(name, default=None)
    if written is None:
        return default
    if (word := written.strip().lower()) in TRUE_WORDS | FALSE_WORDS:
        return word in TRUE_WORDS
    raise ImproperlyConfigured(f"{name} must be true or false (also on/off, yes/no, 1/0) (not {written!r})")


def per_minute_limits(name: str, defaults: dict[str, int], *, most: int) -> dict[str, int]:
    """Per-minute limits by group, "init=6,status=30" (the groups unnamed keep their default), each from 1 to
    `most`. 0 or less answered every call of its group 429, and a misspelt group was ignored, both silently."""
    takes = f"name=count pairs, comma-separated, each count from 1 to {most} and each name one of {', '.join(defaults)}"
    limits = _read(name, {}, takes, env.dict, subcast_values=int)
    if set(limits) - set(defaults) or any(not 1 <= count <= most for count in limits.values()):
        raise ImproperlyConfigured(f"{name} must be {takes} (not {os.environ.get(name, '')!r})")
    return {**defaults, **limits}


def one_of(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.str(name, default=default)
    if value not in choices:
        named = " or ".join(f"'{choice}'" for choice in choices)
        raise ImproperlyConfigured(f"{name} must be {named} (not {value!r})")
    return value


def log_level(name: str, default: str) -> str:
    """A logging level name in any case ("debug"): logging takes upper case only, and stopped every process
    with "Unable to configure root logger", naming no setting."""
    written = env.str(name, default=default)
    if (value := written.strip().upper()) not in logging.getLevelNamesMapping():
        raise ImproperlyConfigured(
            f"{name} must be DEBUG, INFO, WARNING, ERROR or CRITICAL, in any case (not {written!r})"
        )
    return value


def rate(name: str, default: str) -> str:
    """A request budget such as "1200/min" (config/rates.py), kept as written: the limiter reads it per request."""
    value = env.str(name, default=default)
    try:
        count = parse_rate(value)[0]
    except (ValueError, KeyError):
        count = 0
    if count < 1:
        raise ImproperlyConfigured(
            f"{name} must be a number of requests, at least 1, per s, min, hour or day, such as {default!r} "
            f"(not {value!r})"
        )
    return value


def http_url(name: str, default: str, *, optional: bool = False) -> str:
    """A URL the platform clients call or send browsers to (empty for none when `optional`): one without
    http:// or https:// and a host failed every call (httpx.UnsupportedProtocol). Not echoed in the message: a
    URL may carry a credential."""
    value = env.str(name, default=default)
    if optional and not value:
        return value
    try:
        parts = urlsplit(value)
    except ValueError:  # an unclosed IPv6 bracket
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ImproperlyConfigured(f"{name} must be an http:// or https:// URL with a host")
    return value


def bearer_token(name: str, *, least: int = 32) -> str:
    """A secret that clients send as `Authorization: Bearer <token>`, or empty (the default) for none: what it
    guards is then off. At least `least` characters, printable ASCII without spaces: a short one can be guessed,
    and a space, a non-ASCII letter or a secret file's trailing newline would make a token no client sends in
    one header value, so that every check fails with a 401 naming nothing. Not echoed: it is a secret."""
    value = env.str(name, default="")
    if value and (len(value) < least or not all("!" <= char <= "~" for char in value)):
        raise ImproperlyConfigured(
            f"{name} must be empty (off) or a token of at least {least} printable ASCII characters without "
            "spaces, such as python -c 'import secrets; print(secrets.token_urlsafe(32))' prints"
        )
    return value


SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="dev-only-insecure-key-do-not-use-in-production")
DEBUG = switch("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
# The port `make run` binds gunicorn to (the Makefile asks the settings), and LAYERS_PUBLIC_URL's by default.
PORT = whole_number("PORT", default=8000, most=65535)
# Checked here, not only where URLs are built on it: a value without a scheme was refused as the sandbox's
# LAYERS_TIKTOK_AUTHORIZE_URL, and in live mode not at all (every OAuth redirect URI "localhost:8000/oauth/…").
LAYERS_PUBLIC_URL = http_url("LAYERS_PUBLIC_URL", default=f"http://127.0.0.1:{PORT}").rstrip("/")
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[LAYERS_PUBLIC_URL])

INSTALLED_APPS = [
    "accounts.admin_site.BackOfficeAdminConfig",  # django.contrib.admin, with admin actions audited
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "import_export",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "accounts",
    "accounts.platforms.sandbox",
    "accounts.webhooks",
    "scheduling",
    "leasing",
    "billing",
]

MIDDLEWARE = [
    # First: every response, the probes' included, and every log line of its request carry its id
    # (config/requestid.py; it reads no Host).
    "config.requestid.RequestIdMiddleware",
    # Next: /healthz and /readyz answer load balancers that send the pod's address as Host (config/probes.py).
    "config.probes.HealthProbeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "config.ratelimit.ClientRateLimitMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "config.nulguard.RefuseNulBytesMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "accounts.staff_mfa.StaffMFARequiredMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Database: SQLite under ./var by default (one command to run), PostgreSQL via DATABASE_URL.
DATABASE_URL = env.str("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")
# PostgreSQL plans a statement every time it receives one as text, and for the API's hot reads (the API key,
# a page of accounts) planning took several times what executing did (BENCHMARKS.md, bench_api). With
# server-side parameters, psycopg prepares a statement once a connection has run it 5 times, and PostgreSQL
# reuses its plan. Django leaves both off so that transaction-mode connection poolers (PgBouncer before 1.21)
# keep working: set LAYERS_DB_PREPARED_STATEMENTS=false behind such a pooler. A migration that changes a
# column's type makes PostgreSQL refuse the statements prepared before it: config/pgprepared.py.
LAYERS_DB_PREPARED_STATEMENTS = switch("LAYERS_DB_PREPARED_STATEMENTS", default=True)


def database(url: str, *, conn_max_age: int = 60) -> dict:
    """Django's DATABASES entry for `url`, with the options its engine runs with here.

    Connections are kept between requests and tasks (`conn_max_age`) and checked before their first use in
    each (CONN_HEALTH_CHECKS: one `SELECT 1` round trip): a PostgreSQL restart or failover, or a proxy killing
    idle connections, left every web and worker thread with a dead one, and its next request answered 500, its
    next publish task left its claimed posts to the resolver 5 minutes later, while the database was back."""
    db = dj_database_url.parse(url, conn_max_age=conn_max_age, conn_health_checks=True)
    if db["ENGINE"].endswith("sqlite3"):
        # Web, worker and beat share the file: wait for locks instead of failing, and let readers in (WAL).
        defaults = {"timeout": 30, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    else:
        # libpq waits without limit for a server that accepts the connection and never answers (a hung pooler,
        # a failover address with nobody behind it): a process starting then (its system checks read the
        # database, config/startup.py) would hang before serving /healthz, and /readyz would never answer.
        # Past this many seconds the connection fails like a refused one. The URL's query string may set another.
        defaults = {"connect_timeout": 10}
        if LAYERS_DB_PREPARED_STATEMENTS:
            defaults |= {"server_side_binding": True, "prepare_threshold": 5}
    db["OPTIONS"] = {**defaults, **db.get("OPTIONS", {})}  # what the URL's query string sets wins
    return db


DATABASES = {"default": database(DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
# Date-times in the admin with seconds and their time zone (config/formats/en/formats.py).
FORMAT_MODULE_PATH = ["config.formats"]

STATIC_URL = "/static/"
STATIC_ROOT = env.str("DJANGO_STATIC_ROOT", default=str(VAR_DIR / "static"))
MEDIA_URL = env.str("LAYERS_MEDIA_URL", default="/media/")
MEDIA_ROOT = env.str("LAYERS_MEDIA_ROOT", default=str(VAR_DIR / "media"))


# How long one call to the media bucket may wait. boto3's own defaults (60 s to connect, 60 s for each wait for
# an answer, 5 attempts in all) let a bucket endpoint that accepts connections and never answers (a hung proxy
# or load balancer) hold a worker thread 10 minutes per avatar copy (two calls), and a disconnect 5 minutes.
# - connect, 5 s: an S3 endpoint that is up completes TCP and TLS in well under a second; the platform calls
#   allow the same (LAYERS_PLATFORM_CONNECT_TIMEOUT).
# - read, 20 s: each wait for an answer (not the whole transfer). An avatar is at most LAYERS_AVATAR_MAX_BYTES
#   (5 MiB), and S3 answers a HEAD, a PUT of that size, a list or a delete within seconds; a slow but working
#   bucket still gets four times what it normally needs.
# - 2 attempts in all ("standard" retry mode: timeouts, dropped connections, 5xx and throttling): one retry
#   absorbs a connection dropped or a 503 SlowDown once; a longer outage is left to the avatar task's own
#   retries over an hour and to the provisioning tick, which boto3's further attempts only delayed.
# So a call gives up after at most 2 x (5 + 20) s and a backoff of a second at most: under a minute.
LAYERS_S3_CONNECT_TIMEOUT = seconds("LAYERS_S3_CONNECT_TIMEOUT", default=5.0, most=60)
LAYERS_S3_READ_TIMEOUT = seconds("LAYERS_S3_READ_TIMEOUT", default=20.0, most=300)
LAYERS_S3_MAX_ATTEMPTS = whole_number("LAYERS_S3_MAX_ATTEMPTS", default=2, most=10, unit="attempts")


def s3_media_storage(
    bucket: str,
    *,
    endpoint_url: str | None = None,
    custom_domain: str | None = None,
    connect_timeout: float = LAYERS_S3_CONNECT_TIMEOUT,
    read_timeout: float = LAYERS_S3_READ_TIMEOUT,
    max_attempts: int = LAYERS_S3_MAX_ATTEMPTS,
) -> dict:
    """The STORAGES entry for media in an S3-compatible bucket (credentials through boto3's usual AWS_*
    variables): what production runs with LAYERS_S3_BUCKET, and what tests/accounts/test_s3_media.py points at
    an S3 server on loopback. URLs are unsigned (partners keep avatarUrl: a signed one would expire), on the
    CDN domain when given. Every call to the bucket is bounded by the timeouts and attempts above (a call past
    them raises botocore's ConnectTimeoutError / ReadTimeoutError, as a refused one raises ClientError)."""
    from botocore.config import Config

    return {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": bucket,
            "endpoint_url": endpoint_url,
            "custom_domain": custom_domain,
            "querystring_auth": False,
            "file_overwrite": False,
            # Replaces django-storages' own Config, which sets only what AWS_S3_ADDRESSING_STYLE,
            # AWS_S3_SIGNATURE_VERSION and AWS_S3_PROXIES say (none is set here: boto3's defaults).
            "client_config": Config(
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                retries={"mode": "standard", "total_max_attempts": max_attempts},
            ),
        },
    }


# Storage: local media by default; an S3-compatible bucket (+ CDN domain) when a bucket is configured.
AWS_STORAGE_BUCKET_NAME = env.str("LAYERS_S3_BUCKET", default="")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}


def cdn_domain(name: str) -> str:
    """A host name (with a port or a path if need be) that django-storages puts after its own "https://", or
    empty for none: "https://cdn.example.com" made every avatarUrl "https://https://cdn.example.com/…"."""
    value = env.str(name, default="")
    if value and ("://" in value or value.startswith("/") or value != value.strip()):
        raise ImproperlyConfigured(
            f"{name} must be a host name without a scheme, such as cdn.example.com (not {value!r})"
        )
    return value


if AWS_STORAGE_BUCKET_NAME:
    STORAGES["default"] = s3_media_storage(
        AWS_STORAGE_BUCKET_NAME,
        # boto3 refused one without a scheme ("Invalid endpoint") at the first avatar copy, in a worker.
        endpoint_url=http_url("LAYERS_S3_ENDPOINT_URL", default="", optional=True) or None,
        custom_domain=cdn_domain("LAYERS_CDN_DOMAIN") or None,
    )

# Cache (throttling counters): Redis when configured so limits hold across processes. Short socket timeouts:
# an unreachable Redis must cost a request half a second at most, after which config/ratelimit.py counts in
# the process for a while instead (an outage of the counters must not become an outage of the API).
CACHE_URL = env.str("LAYERS_CACHE_URL", default="")
REDIS_CACHE_OPTIONS = {"socket_connect_timeout": 0.5, "socket_timeout": 0.5}
CACHES = {
    "default": (
        {
            "BACKEND": "config.cache.TolerantRedisCache",
            "LOCATION": CACHE_URL,
            "OPTIONS": REDIS_CACHE_OPTIONS,
        }
        if CACHE_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

# --- Django REST framework: every response and error goes through config/api ----------------------
LAYERS_API_RATE = rate("LAYERS_API_RATE", default="1200/min")
# Requests with a wrong API key, per client IP (config/api/authentication.py); then 429 until the next window.
LAYERS_AUTH_FAILURE_RATE = rate("LAYERS_AUTH_FAILURE_RATE", default="60/min")
# Per client IP (config/ratelimit.py): the OAuth callback the platforms redirect browsers to, and the sandbox.
LAYERS_CALLBACK_RATE = rate("LAYERS_CALLBACK_RATE", default="60/min")
LAYERS_SANDBOX_RATE = rate("LAYERS_SANDBOX_RATE", default="1200/min")
# Reverse proxies in front of the web processes that append to X-Forwarded-For (0: use REMOTE_ADDR). A
# negative count would take a client-written hop for the client's address (config/ratelimit.client_ip).
LAYERS_NUM_PROXIES = whole_number("LAYERS_NUM_PROXIES", default=0, least=0, most=10)
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["config.api.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_THROTTLE_CLASSES": ["config.api.throttling.ApiKeyRateThrottle"],
    "DEFAULT_RENDERER_CLASSES": ["config.api.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["config.api.parsers.JSONObjectParser"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "config.api.negotiation.JsonOnlyNegotiation",
    "URL_FORMAT_OVERRIDE": None,
    "EXCEPTION_HANDLER": "config.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
    "DATETIME_FORMAT": "iso-8601",
    "NUM_PROXIES": LAYERS_NUM_PROXIES or None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Layers partner API",
    "DESCRIPTION": (BASE_DIR / "config" / "api" / "openapi_description.md").read_text(),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/v1",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "config.api.schema.postprocess_plumbing_responses",
        "config.api.schema.postprocess_nullable_objects",
    ],
    # Several resources have a `status` with different values: name each set after its resource.
    "ENUM_NAME_OVERRIDES": {
        "WebhookEndpointStatusEnum": "accounts.webhooks.models.WebhookEndpoint.Status",
        "SocialAccountStatusEnum": ["connected", "reauth_required", "disconnected"],
        "OAuthSessionStatusEnum": ["pending", "completed", "failed", "expired"],
        "ScheduledPostStatusEnum": ["queued", "publishing", "published", "failed", "canceled"],
        "RevokedStatusEnum": ["disconnected"],
        "WalletStatusEnum": ["ok", "past_due"],
        "LedgerEntryKindEnum": ["top_up", "lease_charge", "adjustment"],
        # A subscription's `events` and an event's `type`: one type for generated clients.
        "EventsEnum": "accounts.services.EVENT_TYPES",
    },
}

# --- Layers -------------------------------------------------------------------------------------------
# Platforms: the local sandbox (default outside production) or the live TikTok / Instagram APIs.
LAYERS_PLATFORMS = one_of("LAYERS_PLATFORMS", default="sandbox", choices=("sandbox", "live"))
# http:// return URLs for localhost / 127.0.0.1 only (dev, demo, tests); production settings turn it off.
LAYERS_ALLOW_HTTP_LOCALHOST_RETURN = switch("LAYERS_ALLOW_HTTP_LOCALHOST_RETURN", default=True)
# At least a minute: the partner hands the link to a creator, who signs in at the platform before using it.
LAYERS_OAUTH_STATE_TTL = timedelta(
    seconds=whole_number("LAYERS_OAUTH_STATE_TTL_SECONDS", default=30 * 60, least=60, most=24 * 3600, unit="seconds")
)
LAYERS_IDEMPOTENCY_TTL = timedelta(hours=24)


def retention_days(name: str) -> timedelta:
    """A retention period in whole days from the environment, up to ten years; 0 means keep forever (an empty
    timedelta, which the purges read as "off"). A negative one would delete every row, so it is refused at
    start-up."""
    return timedelta(days=whole_number(name, default=30, least=0, most=3650, unit="days (0: keep forever)"))


# Events (GET /v1/events) and their webhook deliveries are deleted this many days after they were recorded
# (accounts/webhooks/services.events_purge_expired).
LAYERS_EVENT_RETENTION = retention_days("LAYERS_EVENT_RETENTION_DAYS")
# OAuth sessions (a row per oauth-url / reauth-url call) are deleted this many days after their state expired
# (accounts/services.oauth_sessions_purge_expired); oauth-status then answers 404, as for an unknown state.
LAYERS_OAUTH_SESSION_RETENTION = retention_days("LAYERS_OAUTH_SESSION_RETENTION_DAYS")
# Token health: refresh this long before expiry (TikTok access tokens live about a day, Instagram's 60
# days), or a third of the token's lifetime when that is shorter (TikTok's may live 2 h:
# accounts/token_margin.py), and verify every live token with a profile call at least this often.
LAYERS_TOKEN_REFRESH_MARGIN = {"tiktok": timedelta(hours=6), "instagram": timedelta(days=7)}
LAYERS_HEALTH_CHECK_EVERY = timedelta(hours=24)
# Fernet keys for platform tokens, comma-separated; the first encrypts, all decrypt (rotation).
LAYERS_TOKEN_KEYS = env.list("LAYERS_TOKEN_KEYS", default=[])
# System checks to ignore, by id. A check that fails stops every process from starting (config/startup.py);
# this is the way past one whose problem is known and accepted (layers.E001 when every token key is lost).
SILENCED_SYSTEM_CHECKS = env.list("DJANGO_SILENCED_SYSTEM_CHECKS", default=[])
# Remote fetches (avatars, media): private / loopback addresses are refused unless this is on (dev and
# tests, where the sandbox lives on 127.0.0.1). Production settings force it off.
LAYERS_ALLOW_PRIVATE_FETCH = switch("LAYERS_ALLOW_PRIVATE_FETCH", default=LAYERS_PLATFORMS == "sandbox")
LAYERS_AVATAR_MAX_BYTES = whole_number(
    "LAYERS_AVATAR_MAX_BYTES", default=5 * 1024 * 1024, most=100 * 1024 * 1024, unit="bytes"
)
# Seconds for the whole avatar download (connect, headers and body together): a server that drips bytes
# cannot hold a worker longer than this.
LAYERS_AVATAR_TIMEOUT_SECONDS = seconds("LAYERS_AVATAR_TIMEOUT_SECONDS", default=10.0, most=300)
# Request bodies larger than this are refused before parsing.
DATA_UPLOAD_MAX_MEMORY_SIZE = whole_number(
    "LAYERS_MAX_BODY_BYTES", default=1024 * 1024, most=100 * 1024 * 1024, unit="bytes"
)
# Webhooks (accounts/webhooks): plain-http and private / loopback destinations are refused unless this is
# on; unset, it follows LAYERS_ALLOW_PRIVATE_FETCH (on in dev/test, forced off by production settings).
LAYERS_WEBHOOK_ALLOW_PRIVATE = switch("LAYERS_WEBHOOK_ALLOW_PRIVATE", default=None)
# Seconds a delivery attempt may take in all (connect, send, the answer's status line and headers: a
# config/netguard.deadline), so that a receiver dripping its answer cannot hold a worker thread; a claimed
# delivery is re-sent by the next relay tick once its lease has expired without a recorded result (the relay
# died mid-send), so the lease must stay well above this: more than twice it, or a send still running (its
# result not yet recorded) would be claimed again and sent a second time.
LAYERS_WEBHOOK_TIMEOUT = seconds("LAYERS_WEBHOOK_TIMEOUT", default=15.0, most=300)
LAYERS_WEBHOOK_LEASE = timedelta(
    seconds=whole_number("LAYERS_WEBHOOK_LEASE_SECONDS", default=300, most=3600, unit="seconds")
)
if not LAYERS_WEBHOOK_LEASE.total_seconds() > 2 * LAYERS_WEBHOOK_TIMEOUT:
    raise ImproperlyConfigured(
        f"LAYERS_WEBHOOK_LEASE_SECONDS must be more than twice LAYERS_WEBHOOK_TIMEOUT ({2 * LAYERS_WEBHOOK_TIMEOUT:g} "
        f"seconds), or a send still running is sent again (not {LAYERS_WEBHOOK_LEASE.total_seconds():g})"
    )
# Sends in flight at once to all of one organization's endpoints (accounts/webhooks/services.py): keep it below
# the webhook worker's threads (make run: --concurrency 4), so that one organization whose endpoints all hang
# cannot take every thread. Beyond it a send is deferred a few seconds, not attempted.
LAYERS_WEBHOOK_ORG_IN_FLIGHT = whole_number("LAYERS_WEBHOOK_ORG_IN_FLIGHT", default=2, most=100)
# Webhook sends the relay tick leaves queued and not started at once (accounts/webhooks/services.py,
# deliveries_queue_room): while the webhook workers are down nothing starts, the gates stay open, and each lease
# the tick queued every due delivery again (an hour's outage with 200,000 due: 2.4M messages). The default is
# one tick's most (10 batches of 200), so a relay whose workers keep up never meets it. Raise it with the
# webhook workers, up to the sends they get through in a lease: a send waiting longer is queued again (a copy).
LAYERS_WEBHOOK_MAX_WAITING = whole_number("LAYERS_WEBHOOK_MAX_WAITING", default=2000, most=100_000)
# Scheduled posts: most claimed posts left waiting for a worker at once; a larger burst is handed out over
# the next dispatcher ticks (every 2 s). Raise it with the number of workers (a few times their posts/s). Also
# the most status checks handed out and not finished at once, counted apart (services.checks_in_flight_max).
LAYERS_DISPATCH_MAX_WAITING = whole_number("LAYERS_DISPATCH_MAX_WAITING", default=1000, most=100_000)
# A worker whose clock is off from the database's by more than this many seconds takes no part in publishing
# until it is right again, and a web process reports not ready (config/clock.py): the dispatcher tick claims no
# post, a post handed to the worker goes back to the queue before any platform call, /readyz answers 503.
# Publishing compares each process's clock with times other hosts wrote: a worker 90 s ahead published posts
# 90 s early, one 5 minutes off failed posts another worker was putting live. 0 turns the guard off; below the
# 5 minutes of a publishing worker's lease (scheduling.services.CLAIM_LEASE), which a larger skew defeats.
LAYERS_MAX_CLOCK_SKEW_SECONDS = whole_number(
    "LAYERS_MAX_CLOCK_SKEW_SECONDS", default=5, least=0, most=299, unit="seconds"
)
# Instagram posts get their container made this long before their time (scheduling.services.post_prepare),
# so that Instagram's processing of the media does not delay them; 0 turns it off. Under 24 h, the
# lifetime of an unpublished container.
LAYERS_PREPARE_AHEAD = timedelta(
    seconds=whole_number("LAYERS_PREPARE_AHEAD_SECONDS", default=900, least=0, most=24 * 3600 - 1, unit="seconds")
)
# A post the platform refused for now (an outage, a timeout before anything was created, a 5xx, a rate limit)
# is tried again, with backoff up to 5 minutes, until this long after its time (or its first try, when that
# came later), then fails RATE_LIMITED / PLATFORM_UNAVAILABLE (scheduling.services._retry_later). At most a
# week (10080 minutes): a post's `attempts` is a small integer, and it counts each of those tries.
LAYERS_PUBLISH_RETRY_WINDOW = timedelta(
    minutes=whole_number("LAYERS_PUBLISH_RETRY_WINDOW_MINUTES", default=60, most=7 * 24 * 60, unit="minutes")
)
# The metrics sync (globalPlatformPostsSync) refreshes the metrics of posts published within this many days
# hourly, and those of older posts daily (their figures barely move), so its hourly work follows recent
# posts, not every post ever published.
LAYERS_METRICS_SYNC_WINDOW = timedelta(
    days=whole_number("LAYERS_METRICS_SYNC_WINDOW_DAYS", default=30, most=365, unit="days")
)
# The bearer token of `GET /ops/status` ("Layers now" as JSON, for an uptime checker: scheduling/views.py).
# Empty: the endpoint answers 404, as an unknown path, so nothing is exposed unless ops set one.
LAYERS_OPS_STATUS_TOKEN = bearer_token("LAYERS_OPS_STATUS_TOKEN")
# Admin lists of the tables that grow forever (posts, events, webhook deliveries) show, unfiltered, the
# planner's estimate of their rows past this many instead of counting the whole table (config/adminpaging.py).
LAYERS_ADMIN_EXACT_COUNT_BELOW = 100_000
# An admin action on selected rows (retry or cancel posts, resend deliveries) does this many of them in the web
# request, a few hundred per transaction, and hands the rest to a worker (accounts/admin_bulk.py): "select all"
# over a day's outage is tens of thousands of rows, minutes of work one by one.
LAYERS_ADMIN_ACTION_ROWS = 2_000

# --- Platform clients (accounts/platforms) --------------------------------------------------------
# Live endpoints by default; in sandbox mode they point at this server's /sandbox/... stand-ins.
_SANDBOX = LAYERS_PLATFORMS == "sandbox"
_SB = f"{LAYERS_PUBLIC_URL}/sandbox"
LAYERS_TIKTOK_AUTHORIZE_URL = http_url(
    "LAYERS_TIKTOK_AUTHORIZE_URL",
    default=f"{_SB}/tiktok/v2/auth/authorize/" if _SANDBOX else "https://www.tiktok.com/v2/auth/authorize/",
)
LAYERS_TIKTOK_API_BASE = http_url(
    "LAYERS_TIKTOK_API_BASE", default=f"{_SB}/tiktok" if _SANDBOX else "https://open.tiktokapis.com"
)
LAYERS_TIKTOK_CLIENT_KEY = env.str("LAYERS_TIKTOK_CLIENT_KEY", default="sandbox-tiktok-client" if _SANDBOX else "")
LAYERS_TIKTOK_CLIENT_SECRET = env.str(
    "LAYERS_TIKTOK_CLIENT_SECRET", default="sandbox-tiktok-secret" if _SANDBOX else ""
)
LAYERS_INSTAGRAM_AUTHORIZE_URL = http_url(
    "LAYERS_INSTAGRAM_AUTHORIZE_URL",
    default=f"{_SB}/instagram/oauth/authorize" if _SANDBOX else "https://www.instagram.com/oauth/authorize",
)
LAYERS_INSTAGRAM_API_BASE = http_url(
    "LAYERS_INSTAGRAM_API_BASE", default=f"{_SB}/instagram/api" if _SANDBOX else "https://api.instagram.com"
)
LAYERS_INSTAGRAM_GRAPH_BASE = http_url(
    "LAYERS_INSTAGRAM_GRAPH_BASE", default=f"{_SB}/instagram/graph" if _SANDBOX else "https://graph.instagram.com"
)
# The Graph API version in every versioned call's path: "23.0" sent them all to graph.instagram.com/23.0/….
LAYERS_INSTAGRAM_API_VERSION = env.str("LAYERS_INSTAGRAM_API_VERSION", default="v23.0")
if not re.fullmatch(r"v\d+\.\d+", LAYERS_INSTAGRAM_API_VERSION):
    raise ImproperlyConfigured(
        "LAYERS_INSTAGRAM_API_VERSION must be a Graph API version such as 'v23.0' "
        f"(not {LAYERS_INSTAGRAM_API_VERSION!r})"
    )
LAYERS_INSTAGRAM_CLIENT_ID = env.str(
    "LAYERS_INSTAGRAM_CLIENT_ID", default="sandbox-instagram-client" if _SANDBOX else ""
)
LAYERS_INSTAGRAM_CLIENT_SECRET = env.str(
    "LAYERS_INSTAGRAM_CLIENT_SECRET", default="sandbox-instagram-secret" if _SANDBOX else ""
)
# Seconds: connect, and each wait for the answer. Every platform call has an explicit timeout, and the whole
# call, answer and all, must end within twice LAYERS_PLATFORM_TIMEOUT (accounts/platforms/http.py:
# platform_request).
LAYERS_PLATFORM_CONNECT_TIMEOUT = seconds("LAYERS_PLATFORM_CONNECT_TIMEOUT", default=5.0, most=60)
LAYERS_PLATFORM_TIMEOUT = seconds("LAYERS_PLATFORM_TIMEOUT", default=20.0, most=120)
# Idle keep-alive connections of a thread's platform client are dropped after this many seconds. Kept
# below the servers' own keep-alive timeout (gunicorn's default is 2 s, and it serves the sandbox in
# `make run`) so that a request is never sent on a connection the server is closing at that moment. Greater
# than 0: httpx takes 0 or less for "drop at once", and every call would open a new connection (TLS and all).
LAYERS_PLATFORM_KEEPALIVE_SECONDS = seconds("LAYERS_PLATFORM_KEEPALIVE_SECONDS", default=1.0, most=60)
# "http" (real sockets) or "wsgi" (tests: the clients call this Django app in-process, no network).
PLATFORM_TRANSPORTS = ("http", "wsgi")
LAYERS_PLATFORM_TRANSPORT = one_of("LAYERS_PLATFORM_TRANSPORT", default="http", choices=PLATFORM_TRANSPORTS)
# The callback every platform redirects to: {LAYERS_PUBLIC_URL}/oauth/{platform}/callback
LAYERS_OAUTH_CALLBACK_BASE = f"{LAYERS_PUBLIC_URL}/oauth"
# Instagram has no draft API: a "draft" is delivered to the creator through this Layers-operated endpoint
# (accounts/platforms/instagram.py); the sandbox serves it, live mode refuses drafts until one is configured.
LAYERS_INSTAGRAM_DRAFT_DELIVERY_URL = http_url(
    "LAYERS_INSTAGRAM_DRAFT_DELIVERY_URL", default=LAYERS_INSTAGRAM_GRAPH_BASE if _SANDBOX else "", optional=True
)
# The sandbox platforms (accounts/platforms/sandbox): publish processing time, avatar URL lifetime, TikTok's
# per-token per-minute limits ("init=6,creator_info=20,status=30,..." — a benchmark raises them) and daily
# caps, Instagram's 24 h publishing quota. Their tops: an hour for a delay, a minute of latency (past the
# platform timeout every call times out anyway), a year for a lifetime (TikTok's longest documented, the
# refresh token's 365 days), and a billion for a count, what the bench settings use for "unlimited".
SANDBOX_DELAY_MOST, SANDBOX_LATENCY_MOST_MS, SANDBOX_TTL_MOST, SANDBOX_COUNT_MOST = 3600, 60_000, 365 * 24 * 3600, 10**9
LAYERS_SANDBOX_PUBLISH_DELAY_SECONDS = seconds(
    "LAYERS_SANDBOX_PUBLISH_DELAY_SECONDS", default=2.0, zero=True, most=SANDBOX_DELAY_MOST
)
# How long after PUBLISH_COMPLETE the sandbox's TikTok fills a post's public id (PLATFORMS.md: "filled after
# moderation"); until then the post is live without a URL, which the metrics sync attaches later.
LAYERS_SANDBOX_TIKTOK_MODERATION_SECONDS = seconds(
    "LAYERS_SANDBOX_TIKTOK_MODERATION_SECONDS", default=10.0, zero=True, most=SANDBOX_DELAY_MOST
)
# Simulated network latency of every sandbox platform API call, in milliseconds (benchmarks set it).
LAYERS_SANDBOX_LATENCY_MS = seconds(
    "LAYERS_SANDBOX_LATENCY_MS", default=0.0, zero=True, most=SANDBOX_LATENCY_MOST_MS, unit="milliseconds"
)
LAYERS_SANDBOX_AVATAR_TTL_SECONDS = whole_number(
    "LAYERS_SANDBOX_AVATAR_TTL_SECONDS", default=2 * 3600, most=SANDBOX_TTL_MOST, unit="seconds"
)
# Lifetimes of the sandbox's TikTok access and refresh tokens (its answers' expires_in / refresh_expires_in).
# TikTok's docs give 24 h / 365 d or 2 h / 180 d: the defaults are the first, tests also run the second.
LAYERS_SANDBOX_TIKTOK_ACCESS_TTL = timedelta(
    seconds=whole_number(
        "LAYERS_SANDBOX_TIKTOK_ACCESS_TTL_SECONDS", default=24 * 3600, most=SANDBOX_TTL_MOST, unit="seconds"
    )
)
LAYERS_SANDBOX_TIKTOK_REFRESH_TTL = timedelta(
    seconds=whole_number(
        "LAYERS_SANDBOX_TIKTOK_REFRESH_TTL_SECONDS", default=365 * 24 * 3600, most=SANDBOX_TTL_MOST, unit="seconds"
    )
)
LAYERS_SANDBOX_TIKTOK_RATE_LIMITS = per_minute_limits(
    "LAYERS_SANDBOX_TIKTOK_RATE_LIMITS",
    {"init": 6, "creator_info": 20, "status": 30, "user_info": 600, "video_query": 600},
    most=SANDBOX_COUNT_MOST,
)
# 0 is a cap already reached: every post (or draft) refused as over it.
LAYERS_SANDBOX_TIKTOK_DAILY_POST_CAP = whole_number(
    "LAYERS_SANDBOX_TIKTOK_DAILY_POST_CAP", default=15, least=0, most=SANDBOX_COUNT_MOST
)
LAYERS_SANDBOX_TIKTOK_PENDING_DRAFT_CAP = whole_number(
    "LAYERS_SANDBOX_TIKTOK_PENDING_DRAFT_CAP", default=5, least=0, most=SANDBOX_COUNT_MOST
)
LAYERS_SANDBOX_INSTAGRAM_QUOTA_TOTAL = whole_number(
    "LAYERS_SANDBOX_INSTAGRAM_QUOTA_TOTAL", default=100, least=0, most=SANDBOX_COUNT_MOST
)
# Where the sandbox's TikTok posts its webhooks (`_control/deauthorize`): the callback URL one registers for
# the app in TikTok's developer portal, here this server's own receiver.
LAYERS_SANDBOX_TIKTOK_WEBHOOK_URL = http_url(
    "LAYERS_SANDBOX_TIKTOK_WEBHOOK_URL", default=f"{LAYERS_PUBLIC_URL}/platform-webhooks/tiktok"
)
# Where the sandbox's Instagram posts its signed requests (`_control/deauthorize`): the Deauthorize callback
# URL and the Data deletion request URL one registers in Meta's App Dashboard, here this server's own.
LAYERS_SANDBOX_INSTAGRAM_DEAUTHORIZE_URL = http_url(
    "LAYERS_SANDBOX_INSTAGRAM_DEAUTHORIZE_URL", default=f"{LAYERS_PUBLIC_URL}/platform-webhooks/instagram/deauthorize"
)
LAYERS_SANDBOX_INSTAGRAM_DATA_DELETION_URL = http_url(
    "LAYERS_SANDBOX_INSTAGRAM_DATA_DELETION_URL",
    default=f"{LAYERS_PUBLIC_URL}/platform-webhooks/instagram/data-deletion",
)

# --- Celery: filesystem broker by default (no server), Redis / RabbitMQ via CELERY_BROKER_URL --------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL == "filesystem://":
    _broker_dir = VAR_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "out"),
        "data_folder_out": str(_broker_dir / "out"),
        "processed_folder": str(_broker_dir / "processed"),
        "store_processed": False,
        # exchange tables; kombu's default is ./control, relative to whatever directory a process starts in
        "control_folder": str(_broker_dir / "control"),
    }
    # kombu's filesystem transport does not create its data folders: without them the worker dies at start-up
    # and every publish fails. Every process (web, worker, beat) loads these settings, so create them here.
    for _folder in ("out", "processed", "control"):
        (_broker_dir / _folder).mkdir(parents=True, exist_ok=True)
# A request queues its follow-up tasks after committing, on its own thread (config/queueing.enqueue): a broker
# that is down, or accepts connections and never answers, must make that fail within seconds rather than
# hang the request, so that the committed change answers and the periodic ticks pick the work up. Out of the
# box a silent Redis hung it forever (redis-py waits without limit) and Celery retried a publish 3 times.
# LAYERS_BROKER_TIMEOUT bounds connecting (TCP, and RabbitMQ's AMQP handshake: Celery's
# broker_connection_timeout, which kombu also takes as the total time of its reconnect attempts) and, on
# Redis, each wait for an answer; a failed publish is retried once (one that timed out may have reached the
# broker, so a retry can queue it twice: every task is idempotent).
LAYERS_BROKER_TIMEOUT = seconds("LAYERS_BROKER_TIMEOUT", default=2.0, most=60)
CELERY_BROKER_CONNECTION_TIMEOUT = LAYERS_BROKER_TIMEOUT
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}

# The longest a task's retry may wait in the broker (countdown / eta; config/queueing.py). With acks_late a
# message waiting for its countdown stays unacknowledged on the worker until it has run, and both brokers
# give up on such a message: RabbitMQ closes the worker's channel after its consumer_timeout (30 minutes by
# default; the worker then exits with PRECONDITION_FAILED) and Redis hands the message to another worker after
# the visibility_timeout (below), so that the task runs again and again. Fifteen minutes leaves a task's run
# well within both. A platform asking us to wait longer is waited out by the periodic ticks, which read the
# wait from the row (health_next_attempt_at, refresh_not_before), not by a message in the broker.
LAYERS_MAX_TASK_COUNTDOWN = 15 * 60


def broker_timeouts(url: str) -> dict:
    """The transport options that bound a broker's waits, by the broker URL's scheme (also used by the
    bench settings, which add their own key prefix)."""
    scheme = url.split("://")[0]
    if scheme in ("redis", "rediss", "sentinel"):
        # On the workers' connections too: kombu reads a BRPOP's answer once the socket has one (its
        # brpop_timeout, 1 s, is below this anyway), and recommends a socket_timeout against half-open
        # connections.
        # visibility_timeout: how long a message fetched and not yet acknowledged (acks_late: until its task
        # has run, countdown included) is left to its worker before Redis hands it out again. Set here, not
        # left to kombu's default (an hour), because it must stay above LAYERS_MAX_TASK_COUNTDOWN plus a
        # task's run; much longer would only delay the redelivery of the messages of a worker that died.
        return {
            "socket_connect_timeout": LAYERS_BROKER_TIMEOUT,
            "socket_timeout": LAYERS_BROKER_TIMEOUT,
            "visibility_timeout": 4 * LAYERS_MAX_TASK_COUNTDOWN,
        }
    if scheme in ("amqp", "amqps", "pyamqp"):
        # Sending only (a broker that stops reading once our socket buffer is full); a publish waits for no
        # answer, and a read timeout would cut a worker's idle connection, which waits as long as no message
        # comes.
        return {"write_timeout": LAYERS_BROKER_TIMEOUT}
    return {}


if broker_timeouts(CELERY_BROKER_URL):
    CELERY_BROKER_TRANSPORT_OPTIONS = broker_timeouts(CELERY_BROKER_URL)
# Webhook sends wait on partners' servers (each attempt up to LAYERS_WEBHOOK_TIMEOUT): the relay's tasks go
# to a queue of their own, consumed by workers of their own (`make run` starts one; README, Production), so
# endpoints that are slow or down hold those threads only, never the ones publishing posts. Empty: the
# default queue, for a deployment that runs one kind of worker and accepts that sharing.
LAYERS_WEBHOOK_QUEUE = env.str("LAYERS_WEBHOOK_QUEUE", default="webhooks")
# The rest of a staff action over a whole list (accounts/admin_bulk.py: retry, cancel, resend, release) and the
# revokes an admin revoke or an off-boarding hands to a worker go to a queue of their own too, consumed by a
# worker of its own (`make run` starts one; README, Production). On the default queue one "select all" put its
# tasks ahead of every publish queued after the click: a 200,000-row resend is 99 tasks of 2,000 ids (0.5-1.6 s
# of a thread each), a 40,000-post retry held publishing 18-47 s, and 50,000 revoked accounts are 25 tasks of
# 2,000 accounts, up to three platform calls each. Empty: the default queue, shared with publishing.
LAYERS_BULK_QUEUE = env.str("LAYERS_BULK_QUEUE", default="bulk")
CELERY_TASK_ROUTES = {
    **{
        f"accounts.webhooks.tasks.{name}": {"queue": LAYERS_WEBHOOK_QUEUE}
        for name in ("webhook_fan_out", "webhook_deliver", "webhook_send", "webhooks_tick")
        if LAYERS_WEBHOOK_QUEUE
    },
    **{
        name: {"queue": LAYERS_BULK_QUEUE}
        for name in (
            "scheduling.tasks.posts_retry_by_staff",
            "scheduling.tasks.posts_cancel_by_staff",
            "accounts.webhooks.tasks.deliveries_resend_by_staff",
            "leasing.tasks.leases_release_by_staff",
            "accounts.tasks.social_account_revoke_by_staff",
            "accounts.tasks.social_accounts_revoke_by_staff",
            "accounts.tasks.social_accounts_revoke_offboarded",
        )
        if LAYERS_BULK_QUEUE
    },
}
# Without it, Celery's Django fixup closes the worker's database connection before and after every task,
# so every task opened a new one; connections now live by CONN_MAX_AGE, as in the web processes
# (config/celery.py closes broken or expired ones around each task), and are recycled every 1000 tasks.
CELERY_DB_REUSE_MAX = 1000
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"


# The shortest expiry of a tick's message. The dispatcher's and the relay's ticks wait in the same queues as
# the work they hand out: in a burst, behind up to LAYERS_DISPATCH_MAX_WAITING posts (tens of seconds on a
# small machine). Expiring them there would pause the dispatcher mid-burst; five minutes never does, and
# still drops the pile an outage of workers leaves (1,800 dispatcher ticks an hour).
TICK_EXPIRES_MIN_SECONDS = 300


def _tick(task: str, every: float) -> dict:
    """A beat entry that runs `task` every `every` seconds. Each message expires after its interval, or
    TICK_EXPIRES_MIN_SECONDS for a faster job: ticks beat sent while no worker was consuming are discarded
    when workers come back, instead of running back to back (the next tick does the same work).
    django-celery-beat stores it as the task's expire_seconds, put back at every beat start like the interval."""
    return {"task": task, "schedule": every, "options": {"expire_seconds": max(int(every), TICK_EXPIRES_MIN_SECONDS)}}


# Periodic tasks are declared here; django-celery-beat's DatabaseScheduler installs them into its tables at
# start-up (idempotently, by name). Staff can pause one in the admin (kept across restarts); an interval
# changed there lasts until beat restarts, which puts back the interval declared here: change it here.
CELERY_BEAT_SCHEDULE = {
    "purge-idempotency-keys": _tick("accounts.tasks.purge_idempotency_keys", 3600.0),
    # Webhook relay safety net: fans out events whose fan-out never committed and sends due deliveries.
    "webhooks-relay": _tick("accounts.webhooks.tasks.webhooks_tick", 15.0),
    "events-retention": _tick("accounts.webhooks.tasks.events_purge_expired", 3600.0),
    "oauth-sessions-retention": _tick("accounts.tasks.oauth_sessions_purge_expired", 3600.0),
    "social-accounts-health": _tick("accounts.tasks.social_accounts_health_tick", 600.0),
    # New accounts whose post-connect fan-out never ran (a connected one lacks layers, a leased one its avatar).
    "social-accounts-provisioning": _tick("accounts.tasks.social_accounts_provision_tick", 600.0),
    # Scheduled posts are rows claimed by this tick (no Celery ETAs): lag is at most one tick.
    "dispatch-due-posts": _tick("scheduling.tasks.dispatch_due_posts", 2.0),
    "global-platform-posts-sync": _tick("globalPlatformPostsSync", 900.0),
    # Lease renewals: each started, uncharged lease period is charged once (bulk; catch-up after downtime).
    "billing-lease-renewals": _tick("billing.tasks.lease_renewals_tick", 900.0),
    # Lease requests whose assignment died half-way (left `provisioning`, accounts reserved) are reopened.
    "lease-requests-recovery": _tick("leasing.tasks.lease_requests_recover_interrupted", 300.0),
    # Pool accounts wait for a lease for days: their TikTok access token (24 h) is refreshed 6 h before it
    # expires, so their rotating refresh token (365 d) never lapses. Leased ones: social-accounts-health.
    "pool-accounts-token-refresh": _tick("leasing.tasks.pool_accounts_refresh_tick", 1800.0),
}

# --- allauth: staff sign-in with MFA; nobody signs up -------------------------------------------------
ACCOUNT_ADAPTER = "accounts.auth.StaffOnlyAccountAdapter"
ACCOUNT_LOGIN_METHODS = {"username"}
ACCOUNT_SIGNUP_FIELDS = ["username*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = "none"
LOGIN_REDIRECT_URL = "/admin/"
LOGIN_URL = "/staff/login/"
ACCOUNT_LOGOUT_REDIRECT_URL = LOGIN_URL
# Staff passwords are set by superusers in the admin; no mail is sent (config/urls.py closes allauth's reset
# pages). Kept off all the same: a reset form must never mail an address that belongs to no one here.
ACCOUNT_EMAIL_UNKNOWN_ACCOUNTS = False
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_TOTP_ISSUER = "Layers"
# TOTP secrets and recovery-code seeds encrypted with LAYERS_TOKEN_KEYS (and rotated with them).
MFA_ADAPTER = "accounts.auth.StaffMFAAdapter"
# Staff who can assign accounts, move money, issue API keys or grant permissions, and superusers, must activate
# TOTP before using the admin (accounts/staff_mfa.py). Only a local demo may turn it off; production settings
# force it on.
LAYERS_STAFF_MFA_REQUIRED = switch("LAYERS_STAFF_MFA_REQUIRED", default=True)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # request_id: the API request's X-Request-Id, or task:<id> in a worker, "-" elsewhere (config/requestid.py)
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(request_id)s %(message)s"},
        # runserver's request lines, as Django's default logging prints them
        "django.server": {
            "()": "django.utils.log.ServerFormatter",
            "format": "[{server_time}] {message}",
            "style": "{",
        },
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        "django.server": {"level": "INFO", "class": "logging.StreamHandler", "formatter": "django.server"},
    },
    "root": {"handlers": ["console"], "level": log_level("LAYERS_LOG_LEVEL", default="INFO")},
    # Credentials and OAuth states blanked in what the loggers that print URLs and request paths write
    # (config/logfilters.py). httpx prints request URLs at INFO, and Instagram's carry the access token: kept
    # at WARNING too. Django's request lines ("Not Found: /v1/social/oauth-status/st_…") and runserver's
    # (query string included) name the path; runserver's logger is Django's default one again, with the filter.
    "filters": {"redact_secrets": {"()": "config.logfilters.RedactSecrets"}},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "httpx": {"level": "WARNING", "filters": ["redact_secrets"]},
        "httpcore": {"filters": ["redact_secrets"]},
        "django.request": {"filters": ["redact_secrets"]},
        "django.server": {
            "handlers": ["django.server"],
            "level": "INFO",
            "propagate": False,
            "filters": ["redact_secrets"],
        },
    },
}
