"""The web process's access log, as `make run` starts it (config/gunicorn_conf.py), writes no credential:
Instagram's token endpoints (the sandbox serves them in the same process) carry the access token and the app
secret in the query string, the OAuth callback the platform's authorization code and the state, and
oauth-status the pending state (a bearer secret) in its path, polled while the customer is on the consent
page. Nor do the process's other lines (Django's "Not Found: …", the 401 lines), nor `runserver`'s."""

import io
import time
import urllib.error
import urllib.request

import pytest

from tests.accounts.oauth_helpers import start as start_connect
from tests.reliability.processes import django_env, free_port, manage, start, stop, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


# A state no session has: oauth-status answers 404, and Django logs "Not Found: <path>" for it.
UNKNOWN_STATE = "st_" + "cd" * 20


def test_the_access_log_blanks_tokens_secrets_codes_and_states(tmp_path, owner):
    pending = start_connect(owner, "tiktok")["state"]
    port, access_log, output = free_port(), tmp_path / "access.log", tmp_path / "gunicorn.log"
    argv = manage()[:1] + ["-m", "gunicorn", "config.wsgi", "-c", "config/gunicorn_conf.py"]
    argv += ["--bind", f"127.0.0.1:{port}", "--workers", "1", "--access-logfile", str(access_log)]
    # gunicorn's default line, plus the credential headers a deployment might add to it, under each of the
    # names gunicorn gives them (request header, WSGI environ, response header)
    credentials = "%({authorization}i)s %({http_authorization}e)s %({http_cookie}e)s %({set-cookie}o)s"
    argv += ["--access-logformat", f'%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" {credentials}']
    web = start(argv, env=django_env(application_name="access-log-test"), log=output)
    try:
        wait_for(lambda: _get(port, "/healthz") == 200, what="gunicorn", timeout=60)
        _get(
            port,
            "/sandbox/instagram/graph/access_token?grant_type=ig_exchange_token"
            "&client_secret=app-secret-1234&access_token=IGQW-live-token-5678",
        )
        _get(port, f"/oauth/tiktok/callback?code=auth-code-9012&state={UNKNOWN_STATE}", auth="Bearer lyr_live_key_3456")
        assert _get(port, f"/v1/social/oauth-status/{pending}", auth=f"Bearer {owner.raw_key}") == 200
        assert _get(port, f"/v1/social/oauth-status/{pending}") == 401  # logged: "API call refused (401): …"
        assert _get(port, f"/v1/social/oauth-status/{UNKNOWN_STATE}", auth=f"Bearer {owner.raw_key}") == 404
        _get(port, "/staff/login/", cookie="sessionid=s3ss10n-secret")  # its answer sets a CSRF cookie
        wait_for(lambda: "/staff/login/" in access_log.read_text(), what="the access log line", timeout=10)
    finally:
        stop(web)

    log = access_log.read_text()
    for secret in ("app-secret-1234", "IGQW-live-token-5678", "auth-code-9012", "lyr_live_key_3456", "s3ss10n"):
        assert secret not in log
    for state in (pending, UNKNOWN_STATE):
        assert state not in log and state not in output.read_text()
    assert "csrftoken=" not in log  # the Set-Cookie of the sign-in page
    # the lines are still there, readable: what was asked, and where
    assert "access_token=[redacted]" in log and "client_secret=[redacted]" in log
    assert "/oauth/tiktok/callback?code=[redacted]&state=[redacted]" in log
    # oauth-status by the short state the admin lists (its search finds the session by it)
    assert log.count(f"/v1/social/oauth-status/{pending[:10]}") == 2
    assert f"Not Found: /v1/social/oauth-status/{UNKNOWN_STATE[:10]}" in output.read_text()


def test_gunicorns_own_error_lines_blank_codes_and_states():
    """gunicorn's error log names the request it failed on ("Error handling request <uri>"), query included."""
    from gunicorn.config import Config

    from config.gunicornlog import RedactingLogger

    logger, written = RedactingLogger(Config()), io.StringIO()
    for handler in logger.error_log.handlers:
        handler.setStream(written)
    logger.error("Error handling request %s", f"/oauth/tiktok/callback?code=auth-code-9012&state={UNKNOWN_STATE}")
    logger.error("Error handling request %s", f"/v1/social/oauth-status/{UNKNOWN_STATE}")
    logger.error("Error handling request %s", f"/v1/social/oauth-status%2F{UNKNOWN_STATE}")  # a client's encoding

    log = written.getvalue()
    assert "auth-code-9012" not in log and UNKNOWN_STATE not in log
    assert "request /oauth/tiktok/callback?code=[redacted]&state=[redacted]\n" in log
    assert f"request /v1/social/oauth-status/{UNKNOWN_STATE[:10]}[redacted]\n" in log
    assert f"request /v1/social/oauth-status%2F{UNKNOWN_STATE[:10]}[redacted]\n" in log


def test_runservers_request_lines_name_a_state_only_by_its_short_form(tmp_path, owner):
    """`manage.py runserver` (the README's development server) logs each request line itself (django.server),
    query string included, and a 4xx as a warning."""
    pending = start_connect(owner, "tiktok")["state"]
    port, output = free_port(), tmp_path / "runserver.log"
    argv = manage("runserver", "--noreload", "--skip-checks", f"127.0.0.1:{port}")
    web = start(argv, env=django_env(application_name="runserver-log-test"), log=output)
    try:
        wait_for(lambda: _get(port, "/healthz") == 200, what="runserver", timeout=60)
        assert _get(port, f"/v1/social/oauth-status/{pending}") == 401
        _get(port, f"/oauth/tiktok/callback?code=auth-code-9012&state={pending}")
        wait_for(lambda: "/oauth/tiktok/callback" in output.read_text(), what="the request line", timeout=10)
    finally:
        stop(web)

    log = output.read_text()
    assert pending not in log and "auth-code-9012" not in log
    assert f"GET /v1/social/oauth-status/{pending[:10]}" in log
    assert "/oauth/tiktok/callback?code=[redacted]&state=[redacted]" in log


def _get(port: int, path: str, auth: str | None = None, cookie: str | None = None) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if auth:
        request.add_header("Authorization", auth)
    if cookie:
        request.add_header("Cookie", cookie)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        time.sleep(0.1)
        return 0
