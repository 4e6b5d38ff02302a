"""A deploy stops or reloads the web process (SIGTERM or SIGHUP to the gunicorn master, as `make run` starts
it: config/gunicorn_conf.py), and a stopping worker gets graceful_timeout to finish the requests in flight
before it drops their connections. Some requests wait on TikTok or Instagram: the OAuth callback exchanges the
customer's code (one call alone may take twice LAYERS_PLATFORM_TIMEOUT, 40 s at the defaults) and a
disconnect revokes the grant. Cut at gunicorn's default 30 s, the customer got a reset connection after the
platform had used up the code, and the state read `failed` 5 minutes later."""

import http.client
import os
import signal
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

import pytest
from django.conf import settings as django_settings
from gunicorn.config import GracefulTimeout

from accounts.platforms.http import ANSWER_DEADLINE_TIMEOUTS, WEB_REQUEST_PLATFORM_CALLS
from accounts.platforms.sandbox import oauth as sandbox_oauth
from tests.accounts.oauth_helpers import RETURN_URL, status
from tests.accounts.oauth_helpers import start as start_connect
from tests.e2e.browser import point_platforms_at
from tests.platform_helpers import consent
from tests.reliability.processes import django_env, free_port, manage, start, stop, wait_for

CONFIG = django_settings.BASE_DIR / "config" / "gunicorn_conf.py"


# What gunicorn's master does with config/gunicorn_conf.py (runs it), in a fresh interpreter as the master is:
# it prints the grace and whether any of the application's code or settings got loaded into it.
_READ_CONFIG = f"""
import runpy, sys
config = runpy.run_path({str(CONFIG)!r})
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("accounts", "scheduling", "leasing", "billing")
                or m.startswith("config.settings") or m == "django.conf")
print(config["graceful_timeout"], ",".join(loaded) or "-")
"""


def _master_reads_config(**env) -> tuple[int, str]:
    answer = subprocess.run(
        [sys.executable, "-c", _READ_CONFIG],
        cwd=django_settings.BASE_DIR,
        env={**django_env(application_name="gunicorn-config"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert answer.returncode == 0, answer.stderr
    grace, loaded = answer.stdout.split()
    return int(grace), loaded


def test_a_stopping_web_process_lets_its_requests_wait_out_their_platform_calls():
    grace, _ = _master_reads_config(LAYERS_PLATFORM_TIMEOUT="20")
    # the callback's code exchange alone, then the six calls a callback may make in a row
    assert grace >= ANSWER_DEADLINE_TIMEOUTS * 20
    assert grace >= WEB_REQUEST_PLATFORM_CALLS * ANSWER_DEADLINE_TIMEOUTS * 20 > GracefulTimeout.default


def test_the_grace_follows_the_platform_timeout_the_workers_settings_read():
    grace, _ = _master_reads_config(LAYERS_PLATFORM_TIMEOUT="90")  # a deployment that waits longer
    assert grace >= WEB_REQUEST_PLATFORM_CALLS * ANSWER_DEADLINE_TIMEOUTS * 90


def test_the_master_loads_none_of_the_applications_code_or_settings():
    # Workers are forked from the master, and a SIGHUP reload re-imports nothing the master has loaded: the
    # settings and platform code imported here to compute the grace made every reloaded worker run the old
    # code and the old LAYERS_PLATFORM_TIMEOUT.
    _, loaded = _master_reads_config()
    assert loaded == "-"


# --- Under a real gunicorn, scaled down ----------------------------------------------------------------

# gunicorn's default grace, scaled down from 30 s so that a test can outlast it: what a worker gets when the
# configuration sets none. A code exchange the platform answers after EXCHANGE_HOLD seconds outlasts it, and
# stays within the client's timeouts (PLATFORM_TIMEOUT per wait) as a slow platform's answer does.
SHORT_DEFAULT_GRACE = 1
PLATFORM_TIMEOUT = 4
EXCHANGE_HOLD = 3.0
# The web process as `make run` starts it, gunicorn's default grace lowered first.
LAUNCHER = (
    "import sys, gunicorn.config as c; "
    f"c.GracefulTimeout.default = {SHORT_DEFAULT_GRACE}; "
    "from gunicorn.app.wsgiapp import run; sys.exit(run())"
)


@pytest.mark.django_db(transaction=True)
def test_a_callback_in_flight_when_the_web_process_is_stopped_still_sends_the_customer_back(
    tmp_path, owner, live_server, settings, monkeypatch
):
    # The sandbox platforms over real HTTP (the live test server), for this process and the web process.
    point_platforms_at(settings, live_server.url)
    exchanging = threading.Event()
    issue = sandbox_oauth.issue_tiktok_pair

    def slow_issue(**kwargs):
        exchanging.set()
        time.sleep(EXCHANGE_HOLD)  # TikTok taking its time to answer the code exchange
        return issue(**kwargs)

    monkeypatch.setattr(sandbox_oauth, "issue_tiktok_pair", slow_issue)
    link = start_connect(owner, "tiktok")
    callback = urlsplit(consent("tiktok", link["authorizeUrl"], "deploy.time"))

    port = free_port()
    argv = [*manage()[:1], "-c", LAUNCHER, "config.wsgi", "-c", str(CONFIG)]
    argv += ["--bind", f"127.0.0.1:{port}", "--workers", "1"]
    env = django_env(
        application_name="graceful-test",
        LAYERS_PUBLIC_URL=live_server.url,
        LAYERS_PLATFORM_TRANSPORT="http",
        LAYERS_PLATFORM_TIMEOUT=str(PLATFORM_TIMEOUT),
    )
    web = start(argv, env=env, log=tmp_path / "gunicorn.log")
    answer: dict = {}

    def customer() -> None:
        """The customer's browser, back from TikTok's consent page, on our callback."""
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("GET", f"{callback.path}?{callback.query}")
            response = conn.getresponse()
            answer.update(status=response.status, location=response.getheader("Location"))
        except OSError as exc:  # the connection dropped with no answer
            answer["error"] = repr(exc)
        finally:
            conn.close()

    try:
        wait_for(lambda: _healthz(port) == 200, what="gunicorn", timeout=60)
        browser = threading.Thread(target=customer)
        browser.start()
        assert exchanging.wait(timeout=20), "the callback never reached the code exchange"
        os.kill(web.pid, signal.SIGTERM)  # the deploy stops the master, the exchange in flight
        browser.join(timeout=30)
        exit_status = web.wait(timeout=30)
    finally:
        stop(web)

    assert answer == {"status": 302, "location": RETURN_URL}, (tmp_path / "gunicorn.log").read_text()[-3000:]
    assert status(owner, link["state"])["status"] == "completed"
    assert exit_status == 0


def _healthz(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status
    except OSError:
        time.sleep(0.1)
        return 0
    finally:
        conn.close()
