"""Staff users for back-office tests. Staff who can assign accounts, move money or grant permissions, and
superusers, must have MFA activated to use the admin, and their session must have presented it
(accounts/staff_mfa.py), so these helpers give them a real TOTP authenticator whose codes the tests compute,
and sign them in as the sign-in pages would (`staff_login`), instead of switching the requirement off."""

import re
import time
from html import unescape

from allauth.account.internal.flows.login import record_authentication
from allauth.mfa import app_settings as mfa_settings
from allauth.mfa.adapter import get_adapter
from allauth.mfa.models import Authenticator
from allauth.mfa.totp.internal.auth import TOTP, format_hotp_value, generate_totp_secret, hotp_value
from django.contrib.admin.utils import quote
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client, RequestFactory
from django.urls import reverse

PASSWORD = "correct horse battery staple"


def staff_member(username: str, *permissions: str, superuser: bool = False):
    """A staff user (no MFA yet) with the password PASSWORD, holding `permissions` ("app_label.codename")."""
    user = get_user_model().objects.create_user(
        username=username, password=PASSWORD, is_staff=True, is_superuser=superuser
    )
    for permission in permissions:
        app, codename = permission.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app, codename=codename))
    return user


def signed_in(user) -> Client:
    """Signed in through allauth with the password, as a person does (no MFA step)."""
    client = Client()
    response = client.post("/staff/login/", {"login": user.username, "password": PASSWORD})
    assert response.status_code == 302 and "_auth_user_id" in client.session, response
    return client


def signed_in_staff(*permissions: str, mfa: bool = False, username: str = "staffer"):
    """A staff member holding `permissions`, signed in (with the code step if `mfa`): (user, client)."""
    user = staff_member(username, *permissions)
    if mfa:
        with_mfa(user)
    return user, staff_login(Client(), user)


def with_mfa(user):
    """Activate TOTP for `user` (as the allauth setup page does); returns the user."""
    TOTP.activate(user, generate_totp_secret())
    return user


def staff_login(client: Client, user) -> Client:
    """Sign `user` in on `client` as /staff/login/ does: the password step, and, for a user with TOTP, the
    code step too (allauth's "mfa" authentication record in the session, which the back-office requires of
    such users: a bare `force_login` is a session that never presented the code). Returns the client."""
    client.force_login(user)
    authenticator = Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).first()
    if authenticator is not None:
        request = RequestFactory().get("/staff/2fa/authenticate/")
        request.session = client.session  # a new SessionStore on each access: kept, then saved
        record_authentication(request, user, "mfa", id=authenticator.pk, type=authenticator.type)
        request.session.save()
    return client


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


def admin_panel_row(page, row_id: str) -> tuple[str, dict[str, str]]:
    """The text of the admin index panel's row `row_id` (Platforms now, Layers now), and its links by what they
    count (their data-count)."""
    match = re.search(rf'<tr id="{row_id}">(.*?)</tr>', page.content.decode(), re.S)
    assert match, f"no panel row {row_id}"
    row = match.group(1)
    text = " ".join(unescape(re.sub(r"<[^>]+>", " ", row)).split())
    links = {kind: unescape(href) for href, kind in re.findall(r'<a href="([^"]+)" data-count="([a-z_]+)"', row)}
    return text, links


def messages_of(response) -> list[str]:
    """The messages the page shows (read from its HTML: the test client's captured context mixes in pages
    other threads render at the same time)."""
    listed = re.search(r'<ul class="messagelist">(.*?)</ul>', response.content.decode(), re.S)
    if listed is None:
        return []
    return [unescape(item).strip() for item in re.findall(r"<li[^>]*>(.*?)</li>", listed.group(1), re.S)]
