"""Staff users for back-office tests. Staff who can assign accounts, move money or grant permissions, and
superusers, must have MFA activated to use the admin (accounts/staff_mfa.py), so these helpers give them a real
TOTP authenticator whose codes the tests compute, instead of switching the requirement off."""

import time

from allauth.mfa import app_settings as mfa_settings
from allauth.mfa.adapter import get_adapter
from allauth.mfa.models import Authenticator
from allauth.mfa.totp.internal.auth import TOTP, format_hotp_value, generate_totp_secret, hotp_value
from django.contrib.admin.utils import quote
from django.contrib.auth import get_user_model
from django.urls import reverse


def with_mfa(user):
    """Activate TOTP for `user` (as the allauth setup page does); returns the user."""
    TOTP.activate(user, generate_totp_secret())
    return user


def totp_secret(user) -> str:
    authenticator = Authenticator.objects.get(user=user, type=Authenticator.Type.TOTP)
    return get_adapter().decrypt(authenticator.data["secret"])


def totp_code(user_or_secret, *, offset_periods: int = 0) -> str:
    secret = user_or_secret if isinstance(user_or_secret, str) else totp_secret(user_or_secret)
    counter = int(time.time()) // mfa_settings.TOTP_PERIOD + offset_periods
    return format_hotp_value(hotp_value(secret, counter))


def superuser(username: str = "ops", password: str = "pw-ops-12345", **extra):
    """A superuser with MFA activated."""
    user = get_user_model().objects.create_superuser(username, f"{username}@layers.test", password, **extra)
    return with_mfa(user)


def admin_object_url(model, pk, view: str = "change") -> str:
    """The admin page (`change`, `delete`, `history`) of `model`'s row `pk`, the id quoted as the admin's own
    links quote it. The admin unquotes `_XX` escapes, so a raw prefixed id whose hex starts with 22-26 or 40
    (`key_22…`) would reach it as another id (`key"…`) and the page would redirect to the index."""
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=[quote(pk)])
