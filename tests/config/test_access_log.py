"""The web process's access log, as `make run` starts it (config/gunicorn_conf.py), writes no credential:
Instagram's token endpoints (the sandbox serves them in the same process) carry the access token and the app
secret in the query string, the OAuth callback the platform's authorization code."""

import time
import urllib.error
import urllib.request

import pytest

from tests.reliability.processes import django_env, free_port, manage, start, stop, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_access_log_blanks_tokens_secrets_and_codes(tmp_path):
    port, access_log = free_port(), tmp_path / "access.log"
    argv = manage()[:1] + ["-m", "gunicorn", "config.wsgi", "-c", "config/gunicorn_conf.py"]
    argv += ["--bind", f"127.0.0.1:{port}", "--workers", "1", "--access-logfile", str(access_log)]
    # gunicorn's default line, plus the credential headers a deployment might add to it, under each of the
    # names gunicorn gives them (request header, WSGI environ, response header)
    credentials = "%({authorization}i)s %({http_authorization}e)s %({http_cookie}e)s %({set-cookie}o)s"
    argv += ["--access-logformat", f'%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" {credentials}']
    web = start(argv, env=django_env(application_name="access-log-test"), log=tmp_path / "gunicorn.log")
    try:
        wait_for(lambda: _get(port, "/healthz") == 200, what="gunicorn", timeout=60)
        _get(
            port,
            "/sandbox/instagram/graph/access_token?grant_type=ig_exchange_token"
            "&client_secret=app-secret-1234&access_token=IGQW-live-token-5678",
        )
        _get(port, "/oauth/tiktok/callback?code=auth-code-9012&state=st_unknown", auth="Bearer lyr_live_key_3456")
        _get(port, "/staff/login/", cookie="sessionid=s3ss10n-secret")  # its answer sets a CSRF cookie
        wait_for(lambda: "/staff/login/" in access_log.read_text(), what="the access log line", timeout=10)
    finally:
        stop(web)

    log = access_log.read_text()
    for secret in ("app-secret-1234", "IGQW-live-token-5678", "auth-code-9012", "lyr_live_key_3456", "s3ss10n"):
        assert secret not in log
    assert "csrftoken=" not in log  # the Set-Cookie of the sign-in page
    # the lines are still there, readable: what was asked, and where
    assert "access_token=[redacted]" in log and "client_secret=[redacted]" in log
    assert "/oauth/tiktok/callback?code=[redacted]&state=st_unknown" in log


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
