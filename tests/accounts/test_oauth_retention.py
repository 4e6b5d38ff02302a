"""OAuth sessions are deleted LAYERS_OAUTH_SESSION_RETENTION (30 days) after their state expired: until then
oauth-status still answers, afterwards the state is unknown (404, and the callback's error page); the accounts
they connected stay."""

from datetime import timedelta

import pytest
import time_machine
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from django.utils import timezone

from accounts import tasks
from accounts.models import OAuthSession, SocialAccount
from config.settings.base import retention_days
from tests.accounts.oauth_helpers import connect, follow_callback, start, status
from tests.conftest import assert_error
from tests.platform_helpers import consent

pytestmark = pytest.mark.django_db(transaction=True)


def test_sessions_go_30_days_after_expiry_whatever_their_outcome_and_accounts_stay(owner, sibling):
    connected_state, _ = connect(owner, "tiktok", "kept.creator")
    account_id = status(owner, connected_state)["socialAccountId"]
    declined = start(owner, "instagram")
    follow_callback(consent("instagram", declined["authorizeUrl"], "shy.user", "deny"))
    abandoned = start(sibling, "tiktok")
    assert status(owner, declined["state"])["status"] == "failed"

    # 29 days after expiry everything still answers, and nothing is deleted.
    with time_machine.travel(timezone.now() + timedelta(days=29, minutes=31)):
        assert tasks.oauth_sessions_purge_expired.apply().result == 0
        assert status(owner, connected_state)["status"] == "completed"
        assert status(sibling, abandoned["state"])["status"] == "expired"
        recent = start(owner, "tiktok")  # a link asked for today: its state expires in 30 minutes

    with time_machine.travel(timezone.now() + timedelta(days=30, minutes=31)):
        assert tasks.oauth_sessions_purge_expired.apply().result == 3
        assert tasks.oauth_sessions_purge_expired.apply().result == 0  # idempotent
        assert_error(owner.client.get(f"/v1/social/oauth-status/{connected_state}"), 404, "NOT_FOUND")
        assert_error(owner.client.get(f"/v1/social/oauth-status/{declined['state']}"), 404, "NOT_FOUND")
        assert_error(sibling.client.get(f"/v1/social/oauth-status/{abandoned['state']}"), 404, "NOT_FOUND")
        assert status(owner, recent["state"])["status"] == "expired"
        account = owner.client.get(f"/v1/social-accounts/{account_id}")
        assert account.status_code == 200 and account.json()["status"] == "connected"
    assert list(OAuthSession.objects.values_list("state", flat=True)) == [recent["state"]]


def test_a_callback_for_a_purged_state_gets_the_error_page_and_connects_nothing(owner):
    link = start(owner, "tiktok")
    location = consent("tiktok", link["authorizeUrl"], "very.late")
    with time_machine.travel(timezone.now() + timedelta(days=31)):
        assert tasks.oauth_sessions_purge_expired.apply().result == 1
        response = follow_callback(location)
    assert response.status_code == 400
    assert "Location" not in response
    assert b"unknown or invalid" in response.content
    assert not SocialAccount.objects.exists()


@override_settings(LAYERS_OAUTH_SESSION_RETENTION=timedelta(0))
def test_retention_zero_keeps_every_session(owner):
    link = start(owner, "tiktok")
    with time_machine.travel(timezone.now() + timedelta(days=400)):
        assert tasks.oauth_sessions_purge_expired.apply().result == 0
        assert status(owner, link["state"])["status"] == "expired"


@pytest.mark.parametrize("value, days", [("7", 7), ("0", 0), (None, 30)])
def test_retention_is_read_in_days_from_the_environment(monkeypatch, value, days):
    if value is None:
        monkeypatch.delenv("LAYERS_OAUTH_SESSION_RETENTION_DAYS", raising=False)
    else:
        monkeypatch.setenv("LAYERS_OAUTH_SESSION_RETENTION_DAYS", value)
    assert retention_days("LAYERS_OAUTH_SESSION_RETENTION_DAYS") == timedelta(days=days)


def test_a_negative_retention_is_refused_at_start_up(monkeypatch):
    monkeypatch.setenv("LAYERS_OAUTH_SESSION_RETENTION_DAYS", "-1")
    with pytest.raises(ImproperlyConfigured, match=r"LAYERS_OAUTH_SESSION_RETENTION_DAYS must be .*from 0 to 3650"):
        retention_days("LAYERS_OAUTH_SESSION_RETENTION_DAYS")
