"""Who holds what in the back-office is not a password-only decision. Staff who can add or change users or
groups (and so hand out permissions) must have MFA activated like those who assign accounts or move money."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.cache import cache
from django.urls import reverse

from tests.reliability.test_staff import SETUP, admin_urls, signed_in, staff_member

pytestmark = pytest.mark.django_db

User = get_user_model()

# Each of these can, through the admin, give someone (themselves included) any permission.
GRANTING = ("auth.change_user", "auth.add_user", "auth.change_group", "auth.add_group", "auth.change_permission")


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    cache.clear()  # allauth's login rate limits live in the cache
    yield
    cache.clear()


def permission(name: str) -> Permission:
    app, codename = name.split(".")
    return Permission.objects.get(content_type__app_label=app, codename=codename)


def change_url(user) -> str:
    return reverse("admin:auth_user_change", args=[user.pk])


def user_form(user, **changes) -> dict:
    """The user change form as the admin page posts it, with `changes` on top."""
    form = {
        "username": user.username,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "email": user.email,
        "is_active": "on",
        "is_staff": "on",
        "last_login_0": "",
        "last_login_1": "",
        "date_joined_0": "2026-01-01",
        "date_joined_1": "00:00:00",
        "initial-date_joined_0": "2026-01-01",
        "initial-date_joined_1": "00:00:00",
    }
    form.update(changes)
    return form


def test_staff_who_can_manage_users_or_groups_reach_no_admin_page_before_setting_up_mfa():
    urls = admin_urls()
    reached = []
    for granting in GRANTING:
        user = staff_member(granting.replace(".", "-"), granting, "auth.view_user", "auth.view_group")
        client = signed_in(user)  # password only
        for url in [*urls, change_url(user), reverse("admin:auth_user_password_change", args=[user.pk])]:
            response = client.get(url)
            if response.status_code != 302 or response["Location"] != SETUP:
                reached.append((granting, url, response.status_code))

        # the audit's self-promotion: the post never reaches the admin
        response = client.post(change_url(user), user_form(user, is_superuser="on"))
        assert response["Location"] == SETUP
        user.refresh_from_db()
        assert not user.is_superuser, "a password-only staff member made themselves superuser"
    assert len(urls) > 20
    assert reached == []
