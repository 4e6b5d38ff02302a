"""gunicorn settings of `make run` (and of anyone running the web process the README's way):
`gunicorn config.wsgi -c config/gunicorn_conf.py --bind HOST:PORT`.

The access log writes each request line as received, query string included. Instagram's token endpoints
(the sandbox serves them in this same process) take the access token and the app secret in the query
string, the OAuth callback carries the platform's authorization code and the state, and oauth-status the
pending state (a bearer secret) in its path: the stock access log wrote them into every log line.
RedactingLogger blanks them, a state down to the short form the admin lists (config.logfilters, the filter
the HTTP clients' loggers and Django's request lines use; gunicorn's own error lines too), and never writes
credential headers, whatever access_log_format says."""

worker_class = "gthread"
workers = 2
threads = 8
accesslog = "-"
logger_class = "config.gunicornlog.RedactingLogger"
# gunicorn 27 opens a control socket at one fixed path per user: a second instance on the host (another
# checkout's `make run`, a test) would take it over. Nothing here uses it.
control_socket_disable = True
