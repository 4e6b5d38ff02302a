"""What an operator writes in the environment is checked when the settings load. A value that would answer
every request it covers with a 500, stop work without a word (no post published, no webhook delivered), or
open a guard (a client-written X-Forwarded-For hop) stops manage.py, gunicorn, Celery workers and beat at
start-up, with an ImproperlyConfigured naming the variable and what it accepts. The cases load the settings
afresh in this process (tests/config/settings_env.py); the last ones start real processes."""

import os
import signal
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from tests.config.settings_env import load_settings

RATES = ("LAYERS_API_RATE", "LAYERS_AUTH_FAILURE_RATE", "LAYERS_CALLBACK_RATE", "LAYERS_SANDBOX_RATE")


def refused(monkeypatch, module="dev", **env) -> str:
    with pytest.raises(ImproperlyConfigured) as raised:
        load_settings(module, monkeypatch, **env)
    return str(raised.value)


@pytest.mark.parametrize(
    "value", ["abc", "100/minutes", "100/fortnight", "100 per minute", "1.5/min", "0/min", "-1/min"]
)
def test_a_rate_the_limiter_cannot_count_is_refused_at_start_up(monkeypatch, value):
    # Each passed `check`, then every call it covers was a 500 (or, for 0 and below, a 429 from the first).
    message = refused(monkeypatch, LAYERS_API_RATE=value)
    assert "LAYERS_API_RATE" in message and "per s, min, hour or day" in message, message


@pytest.mark.parametrize("name", RATES)
def test_each_rate_setting_is_checked(monkeypatch, name):
    for value in ("100/minutes", "0/min"):
        assert name in refused(monkeypatch, **{name: value})


@pytest.mark.parametrize(
    "name, value, accepts",
    [
        # No post ever published, no webhook ever delivered, silently.
        ("LAYERS_DISPATCH_MAX_WAITING", "0", "from 1 to 100000"),
        ("LAYERS_DISPATCH_MAX_WAITING", "-5", "from 1 to 100000"),
        ("LAYERS_WEBHOOK_ORG_IN_FLIGHT", "0", "from 1 to 100"),
        ("LAYERS_WEBHOOK_ORG_IN_FLIGHT", "-1", "from 1 to 100"),
        ("LAYERS_WEBHOOK_MAX_WAITING", "0", "from 1 to 100000"),
        # Every connect link already expired when handed out.
        ("LAYERS_OAUTH_STATE_TTL_SECONDS", "0", "from 60 to 86400"),
        ("LAYERS_OAUTH_STATE_TTL_SECONDS", "-60", "from 60 to 86400"),
        ("LAYERS_OAUTH_STATE_TTL_SECONDS", "59", "from 60 to 86400"),
        # A client-written X-Forwarded-For hop would be taken for the client's address.
        ("LAYERS_NUM_PROXIES", "-1", "from 0 to 10"),
        # Every JSON POST a 413; every avatar too large.
        ("LAYERS_MAX_BODY_BYTES", "0", "from 1 to 104857600"),
        ("LAYERS_MAX_BODY_BYTES", "-1", "from 1 to 104857600"),
        ("LAYERS_AVATAR_MAX_BYTES", "0", "from 1 to 104857600"),
        # Every call they bound times out at once (or never waits at all).
        ("LAYERS_WEBHOOK_TIMEOUT", "0", "greater than 0"),
        ("LAYERS_WEBHOOK_TIMEOUT", "-1", "greater than 0"),
        ("LAYERS_PLATFORM_TIMEOUT", "0", "greater than 0"),
        ("LAYERS_PLATFORM_CONNECT_TIMEOUT", "-1", "greater than 0"),
        ("LAYERS_AVATAR_TIMEOUT_SECONDS", "0", "greater than 0"),
        ("LAYERS_BROKER_TIMEOUT", "0", "greater than 0"),
        # Past 24 h the container expires before its post is published.
        ("LAYERS_PREPARE_AHEAD_SECONDS", "172800", "from 0 to 86399"),
        ("LAYERS_PREPARE_AHEAD_SECONDS", "86400", "from 0 to 86399"),
        ("LAYERS_PREPARE_AHEAD_SECONDS", "-1", "from 0 to 86399"),
        # A negative limit read every clock as off (no post ever claimed); one of the claim's lease (5 minutes)
        # or more lets a worker that far off fail the posts other workers are publishing.
        ("LAYERS_MAX_CLOCK_SKEW_SECONDS", "-1", "from 0 to 299"),
        ("LAYERS_MAX_CLOCK_SKEW_SECONDS", "300", "from 0 to 299"),
        ("LAYERS_MAX_CLOCK_SKEW_SECONDS", "5s", "from 0 to 299"),
        # The existing ranges, through the same helper.
        ("LAYERS_PUBLISH_RETRY_WINDOW_MINUTES", "0", "from 1 to 10080"),
        ("LAYERS_METRICS_SYNC_WINDOW_DAYS", "0", "from 1 to 365"),
    ],
)
def test_a_number_out_of_its_range_is_refused_naming_the_variable_and_its_range(monkeypatch, name, value, accepts):
    message = refused(monkeypatch, **{name: value})
    assert message.startswith(f"{name} must be") and accepts in message, message


@pytest.mark.parametrize(
    "name, value, accepts",
    [
        # httpx took a negative keep-alive for "drop at once", silently; nan, inf and words stopped the process
        # with environs' own message, which does not say what the variable takes.
        ("LAYERS_PLATFORM_KEEPALIVE_SECONDS", "-1", "greater than 0"),
        ("LAYERS_PLATFORM_KEEPALIVE_SECONDS", "0", "greater than 0"),
        ("LAYERS_PLATFORM_KEEPALIVE_SECONDS", "nan", "greater than 0"),
        ("LAYERS_PLATFORM_KEEPALIVE_SECONDS", "inf", "greater than 0"),
        ("LAYERS_PLATFORM_KEEPALIVE_SECONDS", "1s", "greater than 0"),
        # gunicorn (`make run` binds settings.PORT) refused it only after migrate and collectstatic, and
        # LAYERS_PUBLIC_URL, the OAuth callbacks' base, named a port nothing could listen on.
        ("PORT", "0", "from 1 to 65535"),
        ("PORT", "-8000", "from 1 to 65535"),
        ("PORT", "65536", "from 1 to 65535"),
        ("PORT", "80a", "from 1 to 65535"),
        # The sandbox: a negative delay published at once, a negative latency was none, a TTL of 0 or less
        # handed out expired tokens and avatar URLs, a negative cap refused every post, silently.
        ("LAYERS_SANDBOX_PUBLISH_DELAY_SECONDS", "-1", "0 or more"),
        ("LAYERS_SANDBOX_PUBLISH_DELAY_SECONDS", "nan", "0 or more"),
        ("LAYERS_SANDBOX_TIKTOK_MODERATION_SECONDS", "-10", "0 or more"),
        ("LAYERS_SANDBOX_TIKTOK_MODERATION_SECONDS", "ten", "0 or more"),
        ("LAYERS_SANDBOX_LATENCY_MS", "-5", "0 or more"),
        ("LAYERS_SANDBOX_LATENCY_MS", "inf", "0 or more"),
        ("LAYERS_SANDBOX_AVATAR_TTL_SECONDS", "0", "from 1 to 31536000"),
        ("LAYERS_SANDBOX_AVATAR_TTL_SECONDS", "2h", "from 1 to 31536000"),
        ("LAYERS_SANDBOX_TIKTOK_ACCESS_TTL_SECONDS", "0", "from 1 to 31536000"),
        ("LAYERS_SANDBOX_TIKTOK_ACCESS_TTL_SECONDS", "-3600", "from 1 to 31536000"),
        ("LAYERS_SANDBOX_TIKTOK_REFRESH_TTL_SECONDS", "-1", "from 1 to 31536000"),
        ("LAYERS_SANDBOX_TIKTOK_DAILY_POST_CAP", "-1", "from 0 to 1000000000"),
        ("LAYERS_SANDBOX_TIKTOK_PENDING_DRAFT_CAP", "-1", "from 0 to 1000000000"),
        ("LAYERS_SANDBOX_INSTAGRAM_QUOTA_TOTAL", "-1", "from 0 to 1000000000"),
        ("LAYERS_SANDBOX_INSTAGRAM_QUOTA_TOTAL", "1.5", "from 0 to 1000000000"),
        # Per-minute limits: 0 or less answered every call 429; a misspelt group was ignored; a colon for the
        # equals sign stopped every process with "not enough values to unpack", naming nothing.
        ("LAYERS_SANDBOX_TIKTOK_RATE_LIMITS", "init=0", "from 1 to 1000000000"),
        ("LAYERS_SANDBOX_TIKTOK_RATE_LIMITS", "init=-1", "from 1 to 1000000000"),
        ("LAYERS_SANDBOX_TIKTOK_RATE_LIMITS", "inti=6", "init, creator_info, status, user_info, video_query"),
        ("LAYERS_SANDBOX_TIKTOK_RATE_LIMITS", "init:6", "from 1 to 1000000000"),
        ("LAYERS_SANDBOX_TIKTOK_RATE_LIMITS", "init=6,", "from 1 to 1000000000"),
        ("LAYERS_SANDBOX_TIKTOK_RATE_LIMITS", "init=many", "from 1 to 1000000000"),
        # The media bucket: a timeout of 0 or less failed every avatar copy and deletion at once, words stopped
        # the process with environs' message; 0 attempts would try nothing, and more than 10 gives back the
        # minutes a bucket that never answers held a worker thread (config/settings/base.py).
        ("LAYERS_S3_CONNECT_TIMEOUT", "0", "greater than 0"),
        ("LAYERS_S3_CONNECT_TIMEOUT", "5s", "greater than 0"),
        ("LAYERS_S3_READ_TIMEOUT", "-1", "greater than 0"),
        ("LAYERS_S3_READ_TIMEOUT", "inf", "greater than 0"),
        ("LAYERS_S3_MAX_ATTEMPTS", "0", "from 1 to 10"),
        ("LAYERS_S3_MAX_ATTEMPTS", "11", "from 1 to 10"),
        ("LAYERS_S3_MAX_ATTEMPTS", "2.5", "from 1 to 10"),
        # Words where a number goes: the same message as a number out of range, not environs' own.
        ("LAYERS_WEBHOOK_TIMEOUT", "15s", "greater than 0"),
        ("LAYERS_DISPATCH_MAX_WAITING", "1e3", "from 1 to 100000"),
    ],
)
def test_a_number_the_code_cannot_use_is_refused_naming_the_variable_and_what_it_takes(
    monkeypatch, name, value, accepts
):
    message = refused(monkeypatch, **{name: value})
    assert message.startswith(f"{name} must be") and accepts in message, message
    assert f"(not {value!r})" in message or f"(not {value})" in message, message


def test_the_bench_settings_check_the_sandbox_delays_they_read_again(monkeypatch):
    env = {"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/layers"}
    for name in ("LAYERS_SANDBOX_PUBLISH_DELAY_SECONDS", "LAYERS_SANDBOX_TIKTOK_MODERATION_SECONDS"):
        message = refused(monkeypatch, module="bench", **env, **{name: "-1"})
        assert message.startswith(f"{name} must be") and "0 or more" in message, message


def test_the_edges_of_the_new_ranges_are_accepted(monkeypatch):
    loaded = load_settings(
        "dev",
        monkeypatch,
        PORT="65535",
        LAYERS_PLATFORM_KEEPALIVE_SECONDS="0.25",
        LAYERS_SANDBOX_PUBLISH_DELAY_SECONDS="0",
        LAYERS_SANDBOX_TIKTOK_MODERATION_SECONDS="0",
        LAYERS_SANDBOX_LATENCY_MS="0",
        LAYERS_SANDBOX_AVATAR_TTL_SECONDS="1",
        LAYERS_SANDBOX_TIKTOK_ACCESS_TTL_SECONDS="1",
        LAYERS_SANDBOX_TIKTOK_REFRESH_TTL_SECONDS="1",
        LAYERS_SANDBOX_TIKTOK_DAILY_POST_CAP="0",
        LAYERS_SANDBOX_TIKTOK_PENDING_DRAFT_CAP="0",
        LAYERS_SANDBOX_INSTAGRAM_QUOTA_TOTAL="0",
        LAYERS_SANDBOX_TIKTOK_RATE_LIMITS=" init = 1,video_query=5",
    )
    assert loaded.PORT == 65535 and loaded.LAYERS_PUBLIC_URL == "http://127.0.0.1:65535"
    assert loaded.LAYERS_PLATFORM_KEEPALIVE_SECONDS == 0.25
    assert loaded.LAYERS_SANDBOX_PUBLISH_DELAY_SECONDS == loaded.LAYERS_SANDBOX_LATENCY_MS == 0
    assert loaded.LAYERS_SANDBOX_TIKTOK_ACCESS_TTL.total_seconds() == 1
    assert loaded.LAYERS_SANDBOX_TIKTOK_DAILY_POST_CAP == loaded.LAYERS_SANDBOX_INSTAGRAM_QUOTA_TOTAL == 0
    assert loaded.LAYERS_SANDBOX_TIKTOK_RATE_LIMITS == {
        "init": 1,
        "creator_info": 20,
        "status": 30,
        "user_info": 600,
        "video_query": 5,
    }
    assert load_settings("dev", monkeypatch, PORT="1").LAYERS_PUBLIC_URL == "http://127.0.0.1:1"
    defaults = load_settings("dev", monkeypatch)
    assert defaults.PORT == 8000 and defaults.LAYERS_PLATFORM_KEEPALIVE_SECONDS == 1.0
    assert defaults.LAYERS_SANDBOX_TIKTOK_RATE_LIMITS["init"] == 6
    assert defaults.LAYERS_SANDBOX_AVATAR_TTL_SECONDS == 7200


def s3_client_config(loaded):
    config = loaded.STORAGES["default"]["OPTIONS"]["client_config"]
    return config.connect_timeout, config.read_timeout, config.retries


def test_the_media_buckets_timeouts_and_attempts_bound_its_client(monkeypatch):
    defaults = load_settings("dev", monkeypatch, LAYERS_S3_BUCKET="layers-media")
    assert s3_client_config(defaults) == (5.0, 20.0, {"mode": "standard", "total_max_attempts": 2})
    edges = load_settings(
        "dev",
        monkeypatch,
        LAYERS_S3_BUCKET="layers-media",
        LAYERS_S3_CONNECT_TIMEOUT="0.5",
        LAYERS_S3_READ_TIMEOUT="120",
        LAYERS_S3_MAX_ATTEMPTS="1",
    )
    assert s3_client_config(edges) == (0.5, 120.0, {"mode": "standard", "total_max_attempts": 1})
    assert s3_client_config(load_settings("dev", monkeypatch, LAYERS_S3_BUCKET="m", LAYERS_S3_MAX_ATTEMPTS="10"))[
        2
    ] == {"mode": "standard", "total_max_attempts": 10}


@pytest.mark.parametrize(
    "env",
    [
        {"LAYERS_WEBHOOK_LEASE_SECONDS": "1"},
        {"LAYERS_WEBHOOK_LEASE_SECONDS": "30"},  # twice the default timeout: no room for the recording
        {"LAYERS_WEBHOOK_TIMEOUT": "200"},  # with the default lease of 300 s
        {"LAYERS_WEBHOOK_TIMEOUT": "60", "LAYERS_WEBHOOK_LEASE_SECONDS": "100"},
    ],
)
def test_a_webhook_lease_not_well_above_the_send_timeout_is_refused(monkeypatch, env):
    # A send still running when its lease ends is claimed by the next relay tick and sent a second time.
    message = refused(monkeypatch, **env)
    assert "LAYERS_WEBHOOK_LEASE_SECONDS" in message and "twice LAYERS_WEBHOOK_TIMEOUT" in message, message


@pytest.mark.parametrize(
    "name, value, accepts",
    [
        # Passed `check`; ImproperlyConfigured at the first platform call only.
        ("LAYERS_PLATFORM_TRANSPORT", "htp", "'http' or 'wsgi'"),
        # Neither mode: the sandbox not mounted, live endpoints with empty credentials.
        ("LAYERS_PLATFORMS", "Sandbox", "'sandbox' or 'live'"),
        ("LAYERS_PLATFORMS", "prod", "'sandbox' or 'live'"),
        # httpx.UnsupportedProtocol on every call.
        ("LAYERS_TIKTOK_API_BASE", "open.tiktokapis.com", "http:// or https://"),
        ("LAYERS_INSTAGRAM_GRAPH_BASE", "ftp://graph.instagram.com", "http:// or https://"),
        ("LAYERS_TIKTOK_AUTHORIZE_URL", "https://", "http:// or https://"),
        # The base of every OAuth callback and sandbox URL: without a scheme, the refusal named
        # LAYERS_TIKTOK_AUTHORIZE_URL, built on it, and in live mode nothing refused it at all.
        ("LAYERS_PUBLIC_URL", "localhost:8000", "http:// or https://"),
        ("LAYERS_PUBLIC_URL", "https//api.example.com", "http:// or https://"),
        ("LAYERS_PUBLIC_URL", "https://", "http:// or https://"),
        # Where the sandbox posts its platform webhooks: each send failed, "UnsupportedProtocol" in its answer.
        ("LAYERS_SANDBOX_TIKTOK_WEBHOOK_URL", "127.0.0.1:8000/platform-webhooks/tiktok", "http:// or https://"),
        ("LAYERS_SANDBOX_INSTAGRAM_DEAUTHORIZE_URL", "/platform-webhooks/instagram/deauthorize", "http:// or https://"),
        ("LAYERS_SANDBOX_INSTAGRAM_DATA_DELETION_URL", "", "http:// or https://"),
        # Stopped every process with "Unable to configure root logger", naming nothing.
        ("LAYERS_LOG_LEVEL", "verbose", "DEBUG, INFO, WARNING, ERROR or CRITICAL"),
        ("LAYERS_LOG_LEVEL", "", "DEBUG, INFO, WARNING, ERROR or CRITICAL"),
    ],
)
def test_a_word_outside_its_choices_is_refused_naming_the_variable_and_the_choices(monkeypatch, name, value, accepts):
    message = refused(monkeypatch, **{name: value})
    assert message.startswith(f"{name} must be") and accepts in message, message


@pytest.mark.parametrize(
    "name, value, accepts",
    [
        # boto3 raised "Invalid endpoint" at the first avatar copy, in a worker, and every copy failed.
        ("LAYERS_S3_ENDPOINT_URL", "minio.internal:9000", "http:// or https://"),
        # django-storages puts its own "https://" before it: every avatarUrl read "https://https://cdn…".
        ("LAYERS_CDN_DOMAIN", "https://cdn.example.com", "a host name without a scheme"),
        ("LAYERS_CDN_DOMAIN", "/cdn", "a host name without a scheme"),
    ],
)
def test_a_bucket_endpoint_or_cdn_domain_in_another_form_is_refused(monkeypatch, name, value, accepts):
    message = refused(monkeypatch, LAYERS_S3_BUCKET="layers-media", **{name: value})
    assert message.startswith(f"{name} must be") and accepts in message, message


def test_a_bucket_endpoint_and_cdn_domain_in_their_forms_are_taken(monkeypatch):
    options = load_settings(
        "dev",
        monkeypatch,
        LAYERS_S3_BUCKET="layers-media",
        LAYERS_S3_ENDPOINT_URL="http://minio.internal:9000",
        LAYERS_CDN_DOMAIN="cdn.example.com",
    ).STORAGES["default"]["OPTIONS"]
    assert (options["endpoint_url"], options["custom_domain"]) == ("http://minio.internal:9000", "cdn.example.com")
    options = load_settings("dev", monkeypatch, LAYERS_S3_BUCKET="layers-media").STORAGES["default"]["OPTIONS"]
    assert options["endpoint_url"] is None and options["custom_domain"] is None


def test_an_instagram_api_version_not_like_v23_0_is_refused(monkeypatch):
    # Every versioned Graph call went to graph.instagram.com/23.0/…, refused by Instagram.
    message = refused(monkeypatch, LAYERS_INSTAGRAM_API_VERSION="23.0")
    assert message == "LAYERS_INSTAGRAM_API_VERSION must be a Graph API version such as 'v23.0' (not '23.0')"
    assert (
        load_settings("dev", monkeypatch, LAYERS_INSTAGRAM_API_VERSION="v24.0").LAYERS_INSTAGRAM_API_VERSION == "v24.0"
    )


def test_a_public_url_without_a_scheme_is_refused_in_live_mode_too(monkeypatch):
    # Live mode builds no sandbox URL on it: the service started, and every OAuth redirect URI it sent the
    # platforms was "localhost:8000/oauth/tiktok/callback".
    message = refused(monkeypatch, LAYERS_PLATFORMS="live", LAYERS_PUBLIC_URL="localhost:8000")
    assert message.startswith("LAYERS_PUBLIC_URL must be an http:// or https:// URL"), message


def test_the_embedded_defaults_load_as_documented(monkeypatch):
    loaded = load_settings("dev", monkeypatch)
    assert (loaded.LAYERS_API_RATE, loaded.LAYERS_AUTH_FAILURE_RATE) == ("1200/min", "60/min")
    assert (loaded.LAYERS_CALLBACK_RATE, loaded.LAYERS_SANDBOX_RATE) == ("60/min", "1200/min")
    assert loaded.LAYERS_NUM_PROXIES == 0 and loaded.REST_FRAMEWORK["NUM_PROXIES"] is None
    assert loaded.LAYERS_OAUTH_STATE_TTL.total_seconds() == 1800
    assert loaded.LAYERS_WEBHOOK_LEASE.total_seconds() == 300 and loaded.LAYERS_WEBHOOK_TIMEOUT == 15
    assert (loaded.LAYERS_WEBHOOK_ORG_IN_FLIGHT, loaded.LAYERS_DISPATCH_MAX_WAITING) == (2, 1000)
    assert loaded.LAYERS_PREPARE_AHEAD.total_seconds() == 900
    assert loaded.DATA_UPLOAD_MAX_MEMORY_SIZE == 1024 * 1024 and loaded.LAYERS_AVATAR_MAX_BYTES == 5 * 1024 * 1024
    assert loaded.LAYERS_PLATFORMS == "sandbox" and loaded.LAYERS_PLATFORM_TRANSPORT == "http"
    assert loaded.LOGGING["root"]["level"] == "INFO"


def test_the_values_at_the_edges_of_each_range_are_accepted(monkeypatch):
    loaded = load_settings(
        "dev",
        monkeypatch,
        LAYERS_API_RATE="5/s",
        LAYERS_AUTH_FAILURE_RATE=" 100 / Hour",
        LAYERS_CALLBACK_RATE="1/day",
        LAYERS_SANDBOX_RATE="1/minute",
        LAYERS_NUM_PROXIES="2",
        LAYERS_OAUTH_STATE_TTL_SECONDS="60",
        LAYERS_PREPARE_AHEAD_SECONDS="86399",
        LAYERS_WEBHOOK_TIMEOUT="0.5",
        LAYERS_WEBHOOK_LEASE_SECONDS="2",
        LAYERS_WEBHOOK_ORG_IN_FLIGHT="1",
        LAYERS_DISPATCH_MAX_WAITING="1",
        LAYERS_MAX_BODY_BYTES="1",
        LAYERS_PLATFORMS="live",
        LAYERS_TIKTOK_API_BASE="http://127.0.0.1:9000/tiktok",
    )
    assert loaded.LAYERS_API_RATE == "5/s" and loaded.REST_FRAMEWORK["NUM_PROXIES"] == 2
    assert loaded.LAYERS_OAUTH_STATE_TTL.total_seconds() == 60
    assert loaded.LAYERS_PREPARE_AHEAD.total_seconds() == 86399
    assert loaded.LAYERS_WEBHOOK_LEASE.total_seconds() == 2
    assert loaded.LAYERS_TIKTOK_API_BASE == "http://127.0.0.1:9000/tiktok"
    assert load_settings("dev", monkeypatch, LAYERS_PREPARE_AHEAD_SECONDS="0").LAYERS_PREPARE_AHEAD.total_seconds() == 0


@pytest.mark.parametrize(
    "value",
    [
        "hunter2",  # guessable: the status it guards says how far behind Layers is, per line
        "x" * 31,
        "ops-status-token 0123456789abcdefghijklmnop",  # a space: no checker sends it in one header value
        "ops-status-token-0123456789abcdefghijklmnop\n",  # a secret file's trailing newline
        "ops-status-token-0123456789abcdefghijklmnopé",  # HTTP header values are ASCII
    ],
)
def test_an_ops_status_token_too_short_or_not_sendable_is_refused_without_echoing_it(monkeypatch, value):
    message = refused(monkeypatch, LAYERS_OPS_STATUS_TOKEN=value)
    assert message.startswith("LAYERS_OPS_STATUS_TOKEN must be") and "at least 32" in message, message
    assert value.strip() not in message


@pytest.mark.parametrize("value", ["", "A" * 32, "Zx9-_.~+/=" * 5])
def test_an_ops_status_token_of_32_or_more_printable_characters_is_taken(monkeypatch, value):
    # Empty, the default, is off: /ops/status answers 404 (tests/scheduling/test_layers_now.py).
    loaded = load_settings("dev", monkeypatch, LAYERS_OPS_STATUS_TOKEN=value)
    assert value == loaded.LAYERS_OPS_STATUS_TOKEN
    assert load_settings("dev", monkeypatch).LAYERS_OPS_STATUS_TOKEN == ""


@pytest.mark.parametrize(
    "value, level", [("debug", "DEBUG"), ("Warning", "WARNING"), (" error ", "ERROR"), ("INFO", "INFO")]
)
def test_a_log_level_is_taken_in_any_case(monkeypatch, value, level):
    assert load_settings("dev", monkeypatch, LAYERS_LOG_LEVEL=value).LOGGING["root"]["level"] == level


def test_the_test_and_bench_settings_load_on_their_defaults(monkeypatch):
    assert load_settings("test", monkeypatch).LAYERS_PLATFORM_TRANSPORT == "wsgi"
    bench = load_settings("bench", monkeypatch, DATABASE_URL="postgres://postgres@127.0.0.1:5432/layers")
    assert bench.LAYERS_API_RATE == "1000000000/min"
    assert "LAYERS_PLATFORM_TRANSPORT" in refused(monkeypatch, module="test", LAYERS_PLATFORM_TRANSPORT="htp")


# --- Every number has a range, and every value outside it the same message ----------------------------

# The documented range (README, Configuration) of every numeric setting: (name, least, most). Past `most` a
# value either overflowed later, in the middle of the work (a sandbox delay of 1e300: OverflowError at the
# first publish; a retention of 10**11 days: OverflowError at start-up, naming nothing), or was legal and
# absurd (a platform timeout of a year made gunicorn's grace a decade).
RANGES = [
    ("PORT", 1, 65535),
    ("LAYERS_NUM_PROXIES", 0, 10),
    ("LAYERS_OAUTH_STATE_TTL_SECONDS", 60, 86400),
    ("LAYERS_EVENT_RETENTION_DAYS", 0, 3650),
    ("LAYERS_OAUTH_SESSION_RETENTION_DAYS", 0, 3650),
    ("LAYERS_AVATAR_MAX_BYTES", 1, 104857600),
    ("LAYERS_MAX_BODY_BYTES", 1, 104857600),
    ("LAYERS_WEBHOOK_LEASE_SECONDS", 1, 3600),
    ("LAYERS_WEBHOOK_ORG_IN_FLIGHT", 1, 100),
    ("LAYERS_WEBHOOK_MAX_WAITING", 1, 100000),
    ("LAYERS_DISPATCH_MAX_WAITING", 1, 100000),
    ("LAYERS_MAX_CLOCK_SKEW_SECONDS", 0, 299),
    ("LAYERS_PREPARE_AHEAD_SECONDS", 0, 86399),
    ("LAYERS_PUBLISH_RETRY_WINDOW_MINUTES", 1, 10080),
    ("LAYERS_METRICS_SYNC_WINDOW_DAYS", 1, 365),
    ("LAYERS_S3_MAX_ATTEMPTS", 1, 10),
    ("LAYERS_SANDBOX_AVATAR_TTL_SECONDS", 1, 31536000),
    ("LAYERS_SANDBOX_TIKTOK_ACCESS_TTL_SECONDS", 1, 31536000),
    ("LAYERS_SANDBOX_TIKTOK_REFRESH_TTL_SECONDS", 1, 31536000),
    ("LAYERS_SANDBOX_TIKTOK_DAILY_POST_CAP", 0, 1000000000),
    ("LAYERS_SANDBOX_TIKTOK_PENDING_DRAFT_CAP", 0, 1000000000),
    ("LAYERS_SANDBOX_INSTAGRAM_QUOTA_TOTAL", 0, 1000000000),
]
# Lengths of time, fractions allowed: (name, least, most); a least of 0 is allowed, one of None means "greater
# than 0".
TIMES = [
    ("LAYERS_S3_CONNECT_TIMEOUT", None, 60),
    ("LAYERS_S3_READ_TIMEOUT", None, 300),
    ("LAYERS_AVATAR_TIMEOUT_SECONDS", None, 300),
    ("LAYERS_WEBHOOK_TIMEOUT", None, 300),
    ("LAYERS_PLATFORM_CONNECT_TIMEOUT", None, 60),
    ("LAYERS_PLATFORM_TIMEOUT", None, 120),
    ("LAYERS_PLATFORM_KEEPALIVE_SECONDS", None, 60),
    ("LAYERS_BROKER_TIMEOUT", None, 60),
    ("LAYERS_SANDBOX_PUBLISH_DELAY_SECONDS", 0, 3600),
    ("LAYERS_SANDBOX_TIKTOK_MODERATION_SECONDS", 0, 3600),
    ("LAYERS_SANDBOX_LATENCY_MS", 0, 60000),
]


@pytest.mark.parametrize("name, least, most", RANGES)
def test_a_whole_number_past_its_range_is_refused_naming_the_variable_the_value_and_the_range(
    monkeypatch, name, least, most
):
    for value in (str(most + 1), "1" + "0" * 30, str(least - 1)):
        message = refused(monkeypatch, **{name: value})
        assert message.startswith(f"{name} must be") and f"from {least} to {most}" in message, message
        assert f"(not {value})" in message, message


@pytest.mark.parametrize("name, least, most", TIMES)
def test_a_length_of_time_past_its_range_is_refused_naming_the_variable_the_value_and_the_range(
    monkeypatch, name, least, most
):
    span = f"{'0 or more' if least == 0 else 'greater than 0'}, up to {most}"
    for value in (str(most + 1), "1e300", "-1"):
        message = refused(monkeypatch, **{name: value})
        assert message.startswith(f"{name} must be") and span in message, message
        assert f"(not {float(value):g})" in message, message


def test_the_tops_of_the_ranges_are_accepted(monkeypatch):
    tops = {name: str(most) for name, _, most in RANGES + TIMES}
    loaded = load_settings("dev", monkeypatch, **tops, LAYERS_SANDBOX_TIKTOK_RATE_LIMITS="init=1000000000")
    assert loaded.PORT == 65535 and loaded.LAYERS_SANDBOX_LATENCY_MS == 60000
    assert loaded.LAYERS_EVENT_RETENTION.days == loaded.LAYERS_OAUTH_SESSION_RETENTION.days == 3650
    assert loaded.LAYERS_WEBHOOK_LEASE.total_seconds() == 3600 and loaded.LAYERS_WEBHOOK_TIMEOUT == 300
    assert loaded.LAYERS_SANDBOX_TIKTOK_RATE_LIMITS["init"] == 10**9
    assert loaded.LAYERS_PLATFORM_TIMEOUT == 120 and loaded.LAYERS_METRICS_SYNC_WINDOW.days == 365


@pytest.mark.parametrize(
    "name, value, accepts",
    [
        # Words where a number goes got environs' "Not a valid integer.", which does not say what is taken.
        ("LAYERS_WEBHOOK_LEASE_SECONDS", "5m", "from 1 to 3600"),
        ("LAYERS_EVENT_RETENTION_DAYS", "forever", "from 0 to 3650"),
        ("LAYERS_OAUTH_SESSION_RETENTION_DAYS", "30d", "from 0 to 3650"),
        ("LAYERS_SANDBOX_TIKTOK_RATE_LIMITS", "init=1000000001", "from 1 to 1000000000"),
    ],
)
def test_words_or_absurd_counts_are_refused_with_the_range(monkeypatch, name, value, accepts):
    message = refused(monkeypatch, **{name: value})
    assert message.startswith(f"{name} must be") and accepts in message, message
    assert f"(not {value!r})" in message, message


# Every boolean the settings read (production's own: tests/config/test_production_settings.py).
BOOLEANS = (
    "DJANGO_DEBUG",
    "LAYERS_DB_PREPARED_STATEMENTS",
    "LAYERS_ALLOW_HTTP_LOCALHOST_RETURN",
    "LAYERS_ALLOW_PRIVATE_FETCH",
    "LAYERS_WEBHOOK_ALLOW_PRIVATE",
    "LAYERS_STAFF_MFA_REQUIRED",
)


@pytest.mark.parametrize("name", BOOLEANS)
@pytest.mark.parametrize("value", ["maybe", "", "  ", "enabled", "truee", "o n", "+1", "2"])
def test_a_boolean_neither_true_nor_false_is_refused_naming_the_variable_and_the_words_it_takes(
    monkeypatch, name, value
):
    # environs' own "Environment variable ... invalid: Not a valid boolean." said not what it takes.
    message = refused(monkeypatch, **{name: value})
    assert message.startswith(f"{name} must be true or false") and f"(not {value!r})" in message, message


@pytest.mark.parametrize("name", BOOLEANS)
def test_a_boolean_takes_the_words_the_table_lists(monkeypatch, name):
    for value, meant in (("true", True), ("False", False), ("on", True), ("OFF", False), ("1", True), ("no", False)):
        assert getattr(load_settings("dev", monkeypatch, **{name: value}), name.removeprefix("DJANGO_")) is meant


@pytest.mark.parametrize("name", BOOLEANS)
@pytest.mark.parametrize(
    "value, meant",
    [
        ("tRUE", True),
        ("fALSE", False),
        ("YeS", True),
        ("oFF", False),
        (" true ", True),
        ("false\n", False),
        ("\tOn", True),
        (" 0 ", False),
        ("Y", True),  # environs' single letters, which some deployment may carry: still taken
        ("f", False),
    ],
)
def test_a_boolean_takes_its_words_in_any_case_and_spacing(monkeypatch, name, value, meant):
    # "True", "TRUE", "On" were taken but "tRUE", "oN", "yEs" refused (environs' fixed list of spellings), and
    # " true" (a value pasted with its space, a trailing newline from a secret store) too: as a log level is.
    assert getattr(load_settings("dev", monkeypatch, **{name: value}), name.removeprefix("DJANGO_")) is meant


# --- Real processes: the refusal stops them, and says which variable ------------------------------------


TIMEOUT = 60


def start(args: list[str], **env: str) -> subprocess.CompletedProcess:
    """Run one of our programs to its end. Its own session, so that one that started after all (gunicorn's
    master and its workers) is killed whole when it outlives TIMEOUT, which fails the test."""
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.dev", "LAYERS_ENV_FILE": "/nonexistent"}
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter, fixed programs
        [sys.executable, *args],
        cwd=settings.BASE_DIR,
        env={**environment, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{args[:3]} still running after {TIMEOUT} s: it started with {env}\n{err[-1500:]}")
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def test_manage_py_check_refuses_a_rate_it_used_to_pass():
    result = start(["manage.py", "check"], LAYERS_API_RATE="100/minutes")
    assert result.returncode != 0, result.stdout
    assert "ImproperlyConfigured: LAYERS_API_RATE must be" in result.stderr, result.stderr[-1500:]


def test_a_celery_worker_refuses_to_start_naming_the_log_level():
    # It died with "ValueError: Unable to configure root logger", which names no setting.
    args = ["-m", "celery", "-A", "config", "worker", "--pool", "threads", "-Q", "celery"]
    args += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    result = start(args, LAYERS_LOG_LEVEL="verbose", CELERY_BROKER_URL="memory://")
    assert result.returncode != 0, result.stdout
    assert "ImproperlyConfigured: LAYERS_LOG_LEVEL must be" in result.stderr, result.stderr[-1500:]


# gunicorn and beat were seen refusing a bad setting by hand only: one checked before (a rate), and two that
# were not (the keep-alive, PORT: each program started with them).
BAD_SETTINGS = [("LAYERS_API_RATE", "100/minutes"), ("LAYERS_PLATFORM_KEEPALIVE_SECONDS", "-1"), ("PORT", "0")]


@pytest.mark.parametrize("name, value", BAD_SETTINGS)
def test_gunicorn_refuses_to_start_naming_the_variable(name, value):
    # The command `make run` and the README's Production section run; loopback only, any free port.
    args = ["-m", "gunicorn", "config.wsgi", "-c", "config/gunicorn_conf.py", "--bind", "127.0.0.1:0"]
    result = start(args, **{name: value})
    assert result.returncode != 0, result.stderr[-1500:]
    assert f"ImproperlyConfigured: {name} must be" in result.stderr, result.stderr[-1500:]


@pytest.mark.parametrize("name, value", BAD_SETTINGS)
def test_celery_beat_refuses_to_start_naming_the_variable(tmp_path, name, value):
    # Its own SQLite file and an in-memory broker: should it start after all, it schedules into nothing shared.
    args = ["-m", "celery", "-A", "config", "beat", "--schedule", str(tmp_path / "beat-schedule")]
    env = {"CELERY_BROKER_URL": "memory://", "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    result = start(args, **env, **{name: value})
    assert result.returncode != 0, result.stderr[-1500:]
    assert f"ImproperlyConfigured: {name} must be" in result.stderr, result.stderr[-1500:]


@pytest.mark.parametrize(
    "name, value",
    [("LAYERS_SANDBOX_PUBLISH_DELAY_SECONDS", "1e300"), ("LAYERS_STAFF_MFA_REQUIRED", "maybe")],
)
def test_manage_py_check_refuses_a_value_past_its_range_or_no_boolean_naming_the_variable(name, value):
    # The delay passed `check` and overflowed at the first publish; the boolean stopped it with environs'
    # EnvValidationError, which does not say what the variable takes.
    result = start(["manage.py", "check"], **{name: value})
    assert result.returncode != 0, result.stdout
    assert f"ImproperlyConfigured: {name} must be" in result.stderr, result.stderr[-1500:]
