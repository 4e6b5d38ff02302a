"""The access log of the web process, without credentials (see config/gunicorn_conf.py for why)."""

from gunicorn.glogging import Logger

from config.logfilters import redact_parameters

# Request headers whose values are credentials: written "-" even by an access_log_format that names them.
CREDENTIAL_HEADERS = ("{authorization}i", "{cookie}i", "{x-csrftoken}i", "{proxy-authorization}i")


class RedactingLogger(Logger):
    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        for name, value in atoms.items():
            if name in CREDENTIAL_HEADERS:
                atoms[name] = "-"
            elif isinstance(value, str):
                atoms[name] = redact_parameters(value)
        return atoms
