"""config.settings.production refuses to start without what a deployment needs (and says which), forces the
flags a dev environment may carry over, and is what a DJANGO_SETTINGS_MODULE written in `.env` selects.
Each case loads the settings in a fresh process with a clean environment, as a deployment would."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from tests.config.settings_env import load_settings

ROOT = Path(settings.BASE_DIR)
FULL = {
    "DJANGO_SETTINGS_MODULE": "config.settings.production",
    "DJANGO_SECRET_KEY": "x7Kq-2vNw9Lr_b4Tz8Hm3Yc6Pd1Fs5Jg0Ae7Ui2Ko9Qw4Er8Ty3Zx6Cv1Bn5Ml",
    "LAYERS_TOKEN_KEYS": Fernet.generate_key().decode(),
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/layers",
    "LAYERS_PLATFORMS": "live",
    "DJANGO_ALLOWED_HOSTS": "api.layers.example",
    "LAYERS_PUBLIC_URL": "https://api.layers.example",
    "LAYERS_TIKTOK_CLIENT_KEY": "tt-key",
    "LAYERS_TIKTOK_CLIENT_SECRET": "tt-secret",
    "LAYERS_INSTAGRAM_CLIENT_ID": "ig-id",
    "LAYERS_INSTAGRAM_CLIENT_SECRET": "ig-secret",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
    "LAYERS_CACHE_URL": "redis://127.0.0.1:6379/1",
    "LAYERS_S3_BUCKET": "layers-media",
}
PROBE = """
import json, django
from django.conf import settings as s
django.setup()
from accounts import crypto
print(json.dumps({"module": s.SETTINGS_MODULE, "debug": s.DEBUG, "webhook_private": s.LAYERS_WEBHOOK_ALLOW_PRIVATE,
                  "keys": s.LAYERS_TOKEN_KEYS, "token": crypto.decrypt(crypto.encrypt("tok"))}))
"""


def load(env: dict, code: str = PROBE) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **env}
    return subprocess.run(  # noqa: S603 - our own interpreter, a fixed program
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def production(**changes) -> subprocess.CompletedProcess:
    env = {**FULL, **{name: value for name, value in changes.items() if value is not None}}
    for name in (name for name, value in changes.items() if value is None):
        env.pop(name)
    return load(env)


def assert_refused(result: subprocess.CompletedProcess, naming: str) -> None:
    assert result.returncode != 0, f"production started: {result.stdout.strip()}"
    assert "Production settings refused" in result.stderr and naming in result.stderr, result.stderr[-800:]


def test_a_complete_environment_starts_and_encrypts_with_its_key():
    result = production()
    assert result.returncode == 0, result.stderr[-800:]
    loaded = json.loads(result.stdout)
    assert loaded["module"] == "config.settings.production" and loaded["debug"] is False
    assert loaded["keys"] == [FULL["LAYERS_TOKEN_KEYS"]] and loaded["token"] == "tok"


@pytest.mark.parametrize(
    "missing",
    [
        "DJANGO_SECRET_KEY",
        "LAYERS_TOKEN_KEYS",
        "LAYERS_TIKTOK_CLIENT_KEY",
        "LAYERS_TIKTOK_CLIENT_SECRET",
        "LAYERS_INSTAGRAM_CLIENT_ID",
        "LAYERS_INSTAGRAM_CLIENT_SECRET",
        "DJANGO_ALLOWED_HOSTS",
        "LAYERS_PUBLIC_URL",
        "CELERY_BROKER_URL",
        "LAYERS_CACHE_URL",
    ],
)
def test_production_refuses_to_start_without(missing):
    assert_refused(production(**{missing: None}), naming=missing)


@pytest.mark.parametrize(
    "name, value",
    [
        ("LAYERS_TOKEN_KEYS", ","),  # "${NEW},${OLD}" with both unset
        ("LAYERS_TOKEN_KEYS", "change-me"),  # not a Fernet key: the first OAuth callback would be a 500
        ("LAYERS_PUBLIC_URL", "http://api.layers.example"),
        ("CELERY_BROKER_URL", "filesystem://"),
        ("LAYERS_PLATFORMS", "sandbox"),
        # What `check --deploy` (security.W009) calls weak, and nothing ran at start: sessions, password
        # reset links and signed values forgeable.
        ("DJANGO_SECRET_KEY", "x"),
        ("DJANGO_SECRET_KEY", "changeme"),
        ("DJANGO_SECRET_KEY", "k" * 60),  # long, but 1 distinct character
        ("DJANGO_SECRET_KEY", "django-insecure-" + "a1b2c3d4e5" * 5),  # startproject's placeholder
        # readyz said "broker ok" while no task ever left the web process.
        ("CELERY_BROKER_URL", "memory://"),
        ("CELERY_BROKER_URL", "redis//127.0.0.1:6379/0"),  # a colon short
        ("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0;memory://"),  # a failover list is checked whole
        # Every OAuth callback on it would be a 400 (its host refused by ALLOWED_HOSTS). (One without a host is
        # refused by every settings module: tests/config/test_settings_inputs.py.)
        ("LAYERS_PUBLIC_URL", "https://layers.example"),
        # Handed to the Redis cache backend, which cannot speak it: every request's rate limit fell back.
        ("LAYERS_CACHE_URL", "memcached://127.0.0.1:11211"),
        # The tests' transport: every TikTok and Instagram call answered by this very app.
        ("LAYERS_PLATFORM_TRANSPORT", "wsgi"),
    ],
)
def test_production_refuses_a_value_that_cannot_work(name, value):
    assert_refused(production(**{name: value}), naming=name)


@pytest.mark.parametrize(
    "changes",
    [
        {"CELERY_BROKER_URL": "rediss://:pw@redis.internal:6380/0"},
        {"CELERY_BROKER_URL": "sentinel://10.0.0.1:26379;sentinel://10.0.0.2:26379"},
        {"CELERY_BROKER_URL": "amqps://layers:pw@mq.internal:5671//"},
        {"LAYERS_CACHE_URL": "rediss://cache.internal:6380/1"},
        {"LAYERS_PUBLIC_URL": "https://api.layers.example:8443"},
        {"DJANGO_ALLOWED_HOSTS": ".layers.example"},  # a subdomain pattern covers api.layers.example
    ],
)
def test_production_accepts_the_real_variants_of_those_values(changes):
    result = production(**changes)
    assert result.returncode == 0, result.stderr[-800:]


def test_production_refuses_local_media_that_only_one_process_can_see():
    # Workers save the avatars, web processes serve them: on separate machines or containers each with
    # its own disk, every avatarUrl was a 404.
    assert_refused(production(LAYERS_S3_BUCKET=None), naming="LAYERS_S3_BUCKET")
    assert_refused(production(LAYERS_S3_BUCKET=None), naming="LAYERS_MEDIA_ROOT_SHARED")


def test_production_keeps_local_media_when_the_operator_says_the_media_root_is_shared():
    result = production(LAYERS_S3_BUCKET=None, LAYERS_MEDIA_ROOT_SHARED="true")
    assert result.returncode == 0, result.stderr[-800:]


PLATFORM_URLS = (
    "LAYERS_TIKTOK_AUTHORIZE_URL",
    "LAYERS_TIKTOK_API_BASE",
    "LAYERS_INSTAGRAM_AUTHORIZE_URL",
    "LAYERS_INSTAGRAM_API_BASE",
    "LAYERS_INSTAGRAM_GRAPH_BASE",
    "LAYERS_INSTAGRAM_DRAFT_DELIVERY_URL",
)


def refused_in_process(monkeypatch, **changes) -> str:
    """production(), without the process: the settings module loaded afresh here (tests/config/settings_env.py)."""
    with pytest.raises(ImproperlyConfigured) as raised:
        load_settings("production", monkeypatch, **{**FULL, **changes})
    return str(raised.value)


@pytest.mark.parametrize("name", PLATFORM_URLS)
@pytest.mark.parametrize("value", ["http://platform.example/api", "platform.example"])
def test_production_refuses_a_platform_url_that_is_not_https(monkeypatch, name, value):
    # Client secrets and tokens in clear on the wire, or httpx.UnsupportedProtocol on every call.
    message = refused_in_process(monkeypatch, **{name: value})
    assert name in message and "https://" in message, message
    assert value not in message  # only the variable is named: a URL may carry a credential


@pytest.mark.parametrize("value", ["-1", "63072001", "1" + "0" * 30])
def test_production_refuses_an_hsts_max_age_outside_zero_to_two_years(monkeypatch, value):
    # Past two years: no upper bound made a typo bind every browser that saw it to https for centuries.
    message = refused_in_process(monkeypatch, LAYERS_HSTS_SECONDS=value)
    assert message.startswith("LAYERS_HSTS_SECONDS must be") and "from 0 to 63072000" in message, message
    assert f"(not {value})" in message, message
    assert load_settings("production", monkeypatch, **FULL, LAYERS_HSTS_SECONDS="63072000").SECURE_HSTS_SECONDS == (
        63072000
    )


def test_production_loads_with_the_live_platform_urls_and_https_overrides(monkeypatch):
    loaded = load_settings("production", monkeypatch, **FULL)
    assert loaded.LAYERS_PLATFORM_TRANSPORT == "http" and loaded.LAYERS_INSTAGRAM_DRAFT_DELIVERY_URL == ""
    assert loaded.LAYERS_TIKTOK_API_BASE == "https://open.tiktokapis.com" and loaded.SECURE_HSTS_SECONDS == 31536000
    changes = {name: f"https://{name.lower()}.example/v" for name in PLATFORM_URLS}
    loaded = load_settings("production", monkeypatch, **FULL, **changes, LAYERS_HSTS_SECONDS="0")
    assert all(getattr(loaded, name) == value for name, value in changes.items())
    assert loaded.SECURE_HSTS_SECONDS == 0


def test_production_forces_private_webhook_destinations_off():
    result = production(LAYERS_WEBHOOK_ALLOW_PRIVATE="true", DJANGO_DEBUG="true")
    assert result.returncode == 0, result.stderr[-800:]
    loaded = json.loads(result.stdout)
    assert loaded["webhook_private"] is False and loaded["debug"] is False


def test_the_settings_module_written_in_dot_env_is_the_one_manage_py_runs(tmp_path):
    # manage.py (like wsgi and celery) used to pick dev settings before `.env` was read: production written
    # there ran as dev (DEBUG, the insecure key) without a word.
    env_file = tmp_path / ".env"
    env_file.write_text("DJANGO_SETTINGS_MODULE=config.settings.production\nLAYERS_PLATFORMS=live\n")
    show = "from django.conf import settings; print(settings.SETTINGS_MODULE)"
    result = subprocess.run(  # noqa: S603
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", show],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "LAYERS_ENV_FILE": str(env_file)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_refused(result, naming="DJANGO_SECRET_KEY")  # production, refusing: not dev, running


HTTPS_PROBE = """
import json, django
django.setup()
from django.test import Client
client = Client(HTTP_HOST="api.layers.example")
plain = client.get("/v1/wallet/entries?limit=5")
secure = client.get("/v1/wallet", HTTP_X_FORWARDED_PROTO="https")
health = client.get("/healthz")
print(json.dumps({"plain": [plain.status_code, plain.get("Location")], "secure": secure.status_code,
                  "hsts": secure.get("Strict-Transport-Security"), "health": health.status_code}))
"""


def test_production_sends_plain_http_to_https_except_the_health_probes():
    # Behind the proxy, a request it received over plain http must not be served (codes, cookies, keys in
    # clear): it is redirected, and browsers are told to stay on https. Load balancers probe over http.
    result = load(FULL, code=HTTPS_PROBE)
    assert result.returncode == 0, result.stderr[-800:]
    seen = json.loads(result.stdout)
    assert seen["plain"] == [301, "https://api.layers.example/v1/wallet/entries?limit=5"]
    assert seen["secure"] == 401 and seen["hsts"] == "max-age=31536000"
    assert seen["health"] == 200


def test_production_can_leave_the_redirect_and_hsts_to_the_proxy():
    result = load({**FULL, "LAYERS_SSL_REDIRECT": "false", "LAYERS_HSTS_SECONDS": "0"}, code=HTTPS_PROBE)
    assert result.returncode == 0, result.stderr[-800:]
    seen = json.loads(result.stdout)
    assert seen["plain"][0] == 401 and seen["hsts"] is None


def test_production_adds_include_subdomains_to_hsts_only_when_the_operator_asks():
    # Off by default (the existing tests see a bare max-age): it binds every subdomain of the operator's
    # domain to https for the max-age, which only the operator can know to be safe.
    result = load({**FULL, "LAYERS_HSTS_INCLUDE_SUBDOMAINS": "true"}, code=HTTPS_PROBE)
    assert result.returncode == 0, result.stderr[-800:]
    assert json.loads(result.stdout)["hsts"] == "max-age=31536000; includeSubDomains"


@pytest.mark.parametrize("name", ["LAYERS_HSTS_INCLUDE_SUBDOMAINS", "LAYERS_SSL_REDIRECT", "LAYERS_MEDIA_ROOT_SHARED"])
def test_production_refuses_a_boolean_that_is_no_boolean_naming_the_words_it_takes(monkeypatch, name):
    # As every boolean setting (a typo must not leave it off unseen), with the words it takes: environs' own
    # "invalid: Not a valid boolean." did not say them.
    with pytest.raises(ImproperlyConfigured) as raised:
        load_settings("production", monkeypatch, **FULL, **{name: "subdomains"})
    assert str(raised.value) == f"{name} must be true or false (also on/off, yes/no, 1/0) (not 'subdomains')"


def test_production_takes_a_false_include_subdomains(monkeypatch):
    loaded = load_settings("production", monkeypatch, **FULL, LAYERS_HSTS_INCLUDE_SUBDOMAINS="false")
    assert loaded.SECURE_HSTS_INCLUDE_SUBDOMAINS is False


BAD_HOST_PROBE = """
import json, logging, django
django.setup()
from django.test import Client
logged = []
class Keep(logging.Handler):
    def emit(self, record):
        logged.append(record.getMessage())
logging.getLogger("django").addHandler(Keep(level=logging.ERROR))
# What a load balancer or a kubelet sends: the pod's address as Host, over plain http.
client = Client(HTTP_HOST="10.0.0.5:18431", raise_request_exception=False)
probes = {path: client.get(path) for path in ("/healthz", "/readyz")}
probe_errors = list(logged)
others = {path: client.get(path).status_code
          for path in ("/healthz/", "/healthzx", "/v1/projects", "/admin/", "/docs/", "/oauth/tiktok/callback",
                       "/static/admin/css/base.css", "/media/avatars/a.png")}
print(json.dumps({"probes": {p: [r.status_code, r.json()] for p, r in probes.items()}, "probe_errors": probe_errors,
                  "others": others, "others_logged": len(logged) - len(probe_errors)}))
"""


def test_production_answers_the_health_probes_whatever_the_host_and_nothing_else():
    # Load balancers and Kubernetes probe the pod's address: each probe was a 400 and an ERROR log line.
    result = load(FULL, code=BAD_HOST_PROBE)
    assert result.returncode == 0, result.stderr[-800:]
    seen = json.loads(result.stdout)
    assert seen["probes"]["/healthz"] == [200, {"status": "ok"}]
    status, body = seen["probes"]["/readyz"]
    # No database nor broker behind this process: not ready, and saying so in readyz's own shape.
    assert status == 503 and body["status"] == "unavailable" and set(body["checks"]) == {"database", "broker"}
    assert not [line for line in seen["probe_errors"] if "HTTP_HOST" in line]  # no DisallowedHost line per probe
    assert set(seen["others"].values()) == {400}, seen["others"]  # the host check still guards the rest
    assert seen["others_logged"] >= len(seen["others"])
