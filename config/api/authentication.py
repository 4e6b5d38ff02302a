"""`Authorization: Bearer <api key>` → the key's organization. Keys are stored as prefix + SHA-256:
the prefix finds the row, a constant-time comparison of the hash decides.

Wrong keys are counted per client IP (LAYERS_AUTH_FAILURE_RATE, default 60/min): past the budget that
address gets 429 RATE_LIMITED with Retry-After instead of 401 until the next window. Keys are far too long
to guess, so this is about load and noise — a client hammering with a revoked or mistyped key, or someone
trying keys — and it never touches requests with a valid key, whoever shares the address.

Each refused call is logged, one line naming the key refused (its id, prefix and organization, or the start
of an unknown prefix: accounts.services.api_key_refused_label), never the key: Django's own line
("Unauthorized: /v1/projects") does not say which key, and support must tell the partner."""

import logging
from dataclasses import dataclass

from django.conf import settings
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed, Throttled

from config import ratelimit
from config.logfilters import logged_path

log = logging.getLogger(__name__)

# The WWW-Authenticate challenge of every 401 (RFC 9110 11.6.1 requires one; RFC 6750 names the scheme): the
# same whether the key is missing, malformed, unknown or revoked. config.api.errors puts it on the response.
CHALLENGE = 'Bearer realm="layers"'
# What a 401 tells the partner to send: the same header whether none came or another scheme did.
BEARER = "'Authorization: Bearer <api key>'"
NO_KEY = f"No API key: send it as {BEARER}."


@dataclass(frozen=True)
class ApiClient:
    """What `request.user` is for API calls: the organization a key acts for, and the key itself."""

    organization: object
    api_key: object
    is_authenticated: bool = True

    @property
    def organization_id(self) -> str:
        return self.organization.id


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request):
        header = request.headers.get("Authorization", "")
        if not header:
            return None  # → NotAuthenticated → 401 UNAUTHENTICATED (logged by config.api.errors)
        scheme, _, raw = header.partition(" ")
        if scheme.lower() != "bearer" or not raw.strip():
            # Nothing of the header is logged: it may be another scheme's credentials (Basic's password).
            raise _refused(request, f"Use {BEARER}.", "a header that is not Bearer <api key>")
        from accounts.services import api_key_authenticate, api_key_refused_label

        key = api_key_authenticate(raw=raw.strip())
        if key is None:
            raise _refused(request, "Unknown or revoked API key.", api_key_refused_label(raw=raw.strip()))
        return ApiClient(organization=key.organization, api_key=key), key

    def authenticate_header(self, request):
        # Makes DRF answer 401 (not 403) when credentials are missing, and is the 401's WWW-Authenticate.
        return CHALLENGE


def _refused(request, message: str, who: str) -> Exception:
    """The error for a wrong key: 401, or 429 once the client's address is past its budget of failures.
    Logged, naming `who` (never the key)."""
    client = ratelimit.client_ip(request)
    retry_after = ratelimit.hit("api-auth-failure", client, settings.LAYERS_AUTH_FAILURE_RATE)
    if retry_after is None:
        log.warning("API call refused (401): %s %s from %s with %s", request.method, logged_path(request), client, who)
        return AuthenticationFailed(message)
    log.warning(
        "API call throttled (429, too many refused keys from this address; retry in %s s): %s %s from %s with %s",
        retry_after,
        request.method,
        logged_path(request),
        client,
        who,
    )
    return Throttled(wait=retry_after)
