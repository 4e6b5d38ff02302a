"""`Authorization: Bearer <api key>` → the key's organization. Keys are stored as prefix + SHA-256:
the prefix finds the row, a constant-time comparison of the hash decides.

Wrong keys are counted per client IP (LAYERS_AUTH_FAILURE_RATE, default 60/min): past the budget that
address gets 429 RATE_LIMITED with Retry-After instead of 401 until the next window. Keys are far too long
to guess, so this is about load and noise — a client hammering with a revoked or mistyped key, or someone
trying keys — and it never touches requests with a valid key, whoever shares the address."""

from dataclasses import dataclass

from django.conf import settings
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed, Throttled

from config import ratelimit


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
            return None  # → NotAuthenticated → 401 UNAUTHENTICATED
        scheme, _, raw = header.partition(" ")
        if scheme.lower() != "bearer" or not raw.strip():
            raise _refused(request, "Use 'Authorization: Bearer <api key>'.")
        from accounts.services import api_key_authenticate

        key = api_key_authenticate(raw=raw.strip())
        if key is None:
            raise _refused(request, "Unknown or revoked API key.")
        return ApiClient(organization=key.organization, api_key=key), key

    def authenticate_header(self, request):
        # Makes DRF answer 401 (not 403) when credentials are missing.
        return 'Bearer realm="layers"'


def _refused(request, message: str) -> Exception:
    """The error for a wrong key: 401, or 429 once the client's address is past its budget of failures."""
    retry_after = ratelimit.hit("api-auth-failure", ratelimit.client_ip(request), settings.LAYERS_AUTH_FAILURE_RATE)
    return AuthenticationFailed(message) if retry_after is None else Throttled(wait=retry_after)
