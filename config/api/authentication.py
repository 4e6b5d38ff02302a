"""`Authorization: Bearer <api key>` → the key's organization. Keys are stored as prefix + SHA-256:
the prefix finds the row, a constant-time comparison of the hash decides."""

from dataclasses import dataclass

from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed


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
            raise AuthenticationFailed("Use 'Authorization: Bearer <api key>'.")
        from accounts.services import api_key_authenticate

        key = api_key_authenticate(raw=raw.strip())
        if key is None:
            raise AuthenticationFailed("Unknown or revoked API key.")
        return ApiClient(organization=key.organization, api_key=key), key

    def authenticate_header(self, request):
        # Makes DRF answer 401 (not 403) when credentials are missing.
        return 'Bearer realm="layers"'
