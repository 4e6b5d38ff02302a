"""Logging filters. Instagram's Graph API takes the access token (and the token endpoints the app secret) in
the query string, and httpx logs every request's URL at INFO: a logger turned up to debug platform calls
would write live tokens into the logs. The filter blanks those parameters in what such loggers print.

A pending OAuth state (`st_` and 40 hex digits) is a bearer secret too, until a callback uses it: whoever has
it can finish the partner's connect with a platform account of their own. The callback carries it as
`state=`, and oauth-status in its path, polled for as long as the customer is on the consent page: the access
logs and Django's own request lines ("Not Found: /v1/social/oauth-status/st_…") wrote it whole. A state is
cut to the short form the admin's OAuth sessions list shows and searches (`st_` and 7 characters, as the
oauth log lines name it), so a line still says which session it was about."""

import logging
import re

# Query and form parameters whose values are credentials.
SECRET_PARAMETERS = re.compile(
    r"(?P<name>\b(?:access_token|refresh_token|client_secret|fb_exchange_token|input_token|code|state)=)"
    r"[^&\s\"'#]+",
    re.IGNORECASE,
)
# An OAuth state anywhere else (a path): its first 10 characters are kept. No word boundary before it: a
# percent-encoded path (`…%2Fst_…`) puts a letter right before.
OAUTH_STATE = re.compile(r"(?P<short>st_[0-9a-f]{7})[0-9a-f]{33}", re.IGNORECASE)


def redact_secrets(text: str) -> str:
    return OAUTH_STATE.sub(r"\g<short>[redacted]", SECRET_PARAMETERS.sub(r"\g<name>[redacted]", text))


class RedactSecrets(logging.Filter):
    """Rewrites a record's message with credentials blanked and OAuth states cut short. Attached to the
    loggers that print URLs or request paths (httpx, httpcore, Django's request lines), so it runs before any
    handler, test capture included, sees the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_secrets(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def logged_path(request) -> str:
    """`request.path` as a log line may name it: oauth-status's carries the state."""
    return redact_secrets(request.path)
