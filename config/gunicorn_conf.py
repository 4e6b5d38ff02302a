"""gunicorn settings of `make run` (and of anyone running the web process the README's way):
`gunicorn config.wsgi -c config/gunicorn_conf.py --bind HOST:PORT`.

The access log writes each request line as received, query string included. Instagram's token endpoints
(the sandbox serves them in this same process) take the access token and the app secret in the query
string, the OAuth callback carries the platform's authorization code and the state, and oauth-status the
pending state (a bearer secret) in its path: the stock access log wrote them into every log line.
RedactingLogger blanks them, a state down to the short form the admin lists (config.logfilters, the filter
the HTTP clients' loggers and Django's request lines use; gunicorn's own error lines too), and never writes
credential headers, whatever access_log_format says.

A deploy stops or reloads the web process (SIGTERM or SIGHUP to the master): each worker stops accepting,
finishes the requests in flight within graceful_timeout, and then drops their connections. Some requests wait
on TikTok or Instagram (the OAuth callback's code exchange and profile, a disconnect's revoke), so the grace
is derived from how long those may take (accounts.platforms.http.web_request_deadline, from
LAYERS_PLATFORM_TIMEOUT as the settings read it): gunicorn's default 30 s cut the customer's callback
mid-exchange, after the platform had used up the code, with a reset connection instead of the way back to
the partner's app. A worker with nothing in flight still exits at once."""

import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Asked of a separate interpreter, never imported here: this file runs in the master, whose modules the
# workers inherit when they are forked, and a SIGHUP reload re-imports nothing already loaded. Importing the
# settings and the platform code here made every reloaded worker run the old code and the old settings.
_ASK = (
    "from config import envfile; envfile.load(); "
    "from accounts.platforms.http import web_request_deadline; print(web_request_deadline())"
)


def _web_request_deadline() -> float:
    """accounts.platforms.http.web_request_deadline as the workers' settings make it (a bad setting stops
    the master here, naming it, as it would stop each worker)."""
    answer = subprocess.run(  # noqa: S603 - our own interpreter and fixed code
        [sys.executable, "-c", _ASK], cwd=ROOT, capture_output=True, text=True
    )
    if answer.returncode:
        sys.stderr.write(answer.stderr)
        raise SystemExit("config/gunicorn_conf.py: the settings refused to load (above)")
    try:
        return float(answer.stdout.split()[-1])
    except (IndexError, ValueError):
        sys.stderr.write(answer.stdout + answer.stderr)
        raise SystemExit("config/gunicorn_conf.py: the settings gave no platform deadline (above)") from None


worker_class = "gthread"
workers = 2
threads = 8
accesslog = "-"
logger_class = "config.gunicornlog.RedactingLogger"
# gunicorn 27 opens a control socket at one fixed path per user: a second instance on the host (another
# checkout's `make run`, a test) would take it over. Nothing here uses it.
control_socket_disable = True
# The platform calls' deadlines, and a little more for the database work around them and writing the answer.
# A process manager stopping the web process (systemd's TimeoutStopSec, Kubernetes'
# terminationGracePeriodSeconds) must wait at least this long before it kills it (README, Configuration).
# gunicorn's `timeout` is left at its default: a gthread worker's heartbeat is its main loop, which goes on
# while requests run on its threads, so it never ends a request, only a worker whose loop is stuck.
GRACE_SPARE_SECONDS = 10
graceful_timeout = math.ceil(_web_request_deadline()) + GRACE_SPARE_SECONDS
