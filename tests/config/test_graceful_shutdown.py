"""A deploy stops or reloads the web process (SIGTERM or SIGHUP to the gunicorn master, as `make run` starts
it: config/gunicorn_conf.py), and a stopping worker gets graceful_timeout to finish the requests in flight
before it drops their connections. Some requests wait on TikTok or Instagram: the OAuth callback exchanges the
customer's code (one call alone may take twice LAYERS_PLATFORM_TIMEOUT, 40 s at the defaults) and a
disconnect revokes the grant. Cut at gunicorn's default 30 s, the customer got a reset connection after the
platform had used up the code, and the state read `failed` 5 minutes later."""

import http.client
import os
import runpy
import signal
import threading
import time
from urllib.parse import urlsplit

import pytest
from django.conf import settings as django_settings
from gunicorn.config import GracefulTimeout

from accounts.platforms.http import ANSWER_DEADLINE_TIMEOUTS
from accounts.platforms.sandbox import oauth as sandbox_oauth
from tests.accounts.oauth_helpers import RETURN_URL, status
from tests.accounts.oauth_helpers import start as start_connect
from tests.e2e.browser import point_platforms_at
from tests.platform_helpers import consent
from tests.reliability.processes import django_env, free_port, manage, start, stop, wait_for

CONFIG = django_settings.BASE_DIR / "config" / "gunicorn_conf.py"


def _config() -> dict:
    """What gunicorn reads from config/gunicorn_conf.py, with this process's settings."""
    return runpy.run_path(str(CONFIG))


def _graceful_timeout() -> int:
    return _config().get("graceful_timeout", GracefulTimeout.default)


def test_a_stopping_web_process_lets_its_requests_wait_out_their_platform_calls():
    one_call = ANSWER_DEADLINE_TIMEOUTS * django_settings.LAYERS_PLATFORM_TIMEOUT  # the callback's code exchange
    assert _graceful_timeout() >= one_call

    from accounts.platforms.http import web_request_deadline

    assert _graceful_timeout() >= web_request_deadline()


def test_the_grace_follows_the_platform_timeout_it_is_derived_from(settings):
    settings.LAYERS_PLATFORM_TIMEOUT = 90.0  # a deployment that waits longer on the platforms

    from accounts.platforms.http import web_request_deadline

    assert web_request_deadline() >= ANSWER_DEADLINE_TIMEOUTS * 90.0
    assert _graceful_timeout() >= web_request_deadline()


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
