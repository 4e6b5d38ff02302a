from allauth.account.adapter import DefaultAccountAdapter
from allauth.mfa.adapter import DefaultMFAAdapter

from accounts import crypto


class StaffOnlyAccountAdapter(DefaultAccountAdapter):
    """Staff accounts are created by Layers (createsuperuser / admin); nobody signs up."""

    def is_open_for_signup(self, request):
        return False

    def get_client_ip(self, request):
        """The address the staff sign-in and MFA attempt limits count: read as every per-IP limit here reads
        it (LAYERS_NUM_PROXIES trusted proxies), not per REMOTE_ADDR (behind a load balancer, anyone's wrong
        passwords locked every staff member out) and never a 500 on a short X-Forwarded-For."""
        from config.ratelimit import client_ip

        return client_ip(request)


class StaffMFAAdapter(DefaultMFAAdapter):
    """Staff TOTP secrets and recovery-code seeds are encrypted at rest like platform tokens (same keys,
    rotated by `manage.py rotate_token_keys`), so a database dump holds no second factor either."""

    def encrypt(self, text: str) -> str:
        return crypto.encrypt(text)

    def decrypt(self, encrypted_text: str) -> str:
        if not crypto.looks_encrypted(encrypted_text):
            return encrypted_text  # stored in clear before this adapter was configured
        return crypto.decrypt(encrypted_text) or ""  # a removed key: the factor no longer verifies
