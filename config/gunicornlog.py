"""The access log of the web process, without credentials (see config/gunicorn_conf.py for why)."""

from gunicorn.glogging import Logger

from config.logfilters import RedactSecrets, redact_secrets

# Headers whose values are credentials (an API key, a session, a CSRF token).
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie", "x-csrftoken"})


def names_a_credential(atom: str) -> bool:
    """Whether an access-log atom is a credential header's value, under any of the names gunicorn gives it:
    `{authorization}i` (request header), `{set-cookie}o` (response header), `{http_authorization}e` (the
    WSGI environ's copy of a request header)."""
    if not (atom.startswith("{") and atom[-2:] in ("}i", "}o", "}e")):
        return False
    name = atom[1:-2].lower()
    if atom.endswith("}e"):
        if not name.startswith("http_"):
            return False
        name = name.removeprefix("http_").replace("_", "-")
    return name in CREDENTIAL_HEADERS


class RedactingLogger(Logger):
    def setup(self, cfg):
        super().setup(cfg)
        # gunicorn's own error log names the request it failed on ("Error handling request /oauth/…?code=…"):
        # blanked as the access log's lines are.
        if not any(isinstance(f, RedactSecrets) for f in self.error_log.filters):
            self.error_log.addFilter(RedactSecrets())

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        for name, value in atoms.items():
            if names_a_credential(name):
                atoms[name] = "-"
            elif isinstance(value, str):
                atoms[name] = redact_secrets(value)
        return atoms
