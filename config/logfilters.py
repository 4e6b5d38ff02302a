"""Logging filters. Instagram's Graph API takes the access token (and the token endpoints the app secret) in
the query string, and httpx logs every request's URL at INFO: a logger turned up to debug platform calls
would write live tokens into the logs. The filter blanks those parameters in what such loggers print."""

import logging
import re

# Query and form parameters whose values are credentials.
SECRET_PARAMETERS = re.compile(
    r"(?P<name>\b(?:access_token|refresh_token|client_secret|fb_exchange_token|input_token|code)=)[^&\s\"'#]+",
    re.IGNORECASE,
)


def redact_parameters(text: str) -> str:
    return SECRET_PARAMETERS.sub(r"\g<name>[redacted]", text)


class RedactSecretParameters(logging.Filter):
    """Rewrites a record's message with credential parameters blanked. Attached to the loggers that print
    URLs (httpx, httpcore), so it runs before any handler, test capture included, sees the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_parameters(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True
