"""DELETE /v1/social-accounts/{id} revokes the app's authorization at the platform (README), best-effort. A
TikTok access token lives 24 h (or 2 h) and its refresh token a year (or 180 days): an account disconnected
after its access token expired (the health check renews it hours ahead, but a check that fell behind, or an
account idle past its expiry, leave it so) sent that expired token to TikTok's revoke, which refused it, and
the refusal read as "already revoked": the customer's grant stayed alive, its refresh token working for up to
a year. The expired token is now renewed first, once, and the revoke made with the new one."""

import logging
from datetime import timedelta

import httpx
import pytest
import time_machine
from django.test import Client
from django.utils import timezone

from accounts.models import SocialAccount, SocialAccountStatusChange
from accounts.platforms.sandbox.models import Token
from tests.accounts.oauth_helpers import connected_account
from tests.platform_helpers import intercepted, invalidate_tokens, platform_down

pytestmark = pytest.mark.django_db(transaction=True)


def refresh_works(refresh_token: str) -> bool:
    """Whether TikTok (the sandbox) still renews tokens with this refresh token: the grant is alive."""
    answer = Client().post(
        "/sandbox/tiktok/v2/oauth/token/",
        {
            "client_key": "sandbox-tiktok-client",
            "client_secret": "sandbox-tiktok-secret",
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
        },
    )
    return "access_token" in answer.json()


def live_tokens(platform: str, username: str) -> int:
    """The user's tokens the platform (the sandbox) would still accept now."""
    return Token.objects.filter(
        platform=platform, username=username, revoked_at__isnull=True, expires_at__gt=timezone.now()
    ).count()


def disconnect(tenant, account_id: str) -> dict:
    response = tenant.client.delete(f"/v1/social-accounts/{account_id}")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "disconnected"
    return response.json()


def test_disconnecting_a_tiktok_account_whose_access_token_expired_revokes_the_grant(owner):
    account = connected_account(owner, "tiktok", "expired_then_gone")
    refresh_token = SocialAccount.objects.get(pk=account["id"]).refresh_token

    with time_machine.travel(timezone.now() + timedelta(hours=25)):
        assert live_tokens("tiktok", "expired_then_gone") == 1  # the access token expired, the refresh token lives
        disconnect(owner, account["id"])

        assert live_tokens("tiktok", "expired_then_gone") == 0, "the TikTok grant survived the disconnect"
        assert not refresh_works(refresh_token)


def test_a_revoke_tiktok_refuses_for_a_token_it_holds_expired_renews_it_and_revokes_the_grant(owner):
    """Our clock and TikTok's disagree (or the stored expiry is off): the revoke's refusal of the token is
    not taken as "already revoked" while a refresh token may still hold the grant."""
    account = connected_account(owner, "tiktok", "clock_skew")
    with time_machine.travel(timezone.now() + timedelta(hours=25)):
        SocialAccount.objects.filter(pk=account["id"]).update(token_expires_at=timezone.now() + timedelta(hours=5))
        disconnect(owner, account["id"])

        assert live_tokens("tiktok", "clock_skew") == 0


def test_disconnecting_a_tiktok_account_whose_grant_the_user_removed_ends_quietly(owner):
    account = connected_account(owner, "tiktok", "removed_app")
    invalidate_tokens("tiktok", "removed_app")
    with time_machine.travel(timezone.now() + timedelta(hours=25)):
        disconnect(owner, account["id"])  # revoke refused, refresh refused: nothing left to withdraw
    assert SocialAccount.objects.get(pk=account["id"]).status == "disconnected"


def test_a_tiktok_outage_while_renewing_the_token_to_revoke_does_not_fail_the_disconnect(owner, caplog):
    caplog.set_level(logging.INFO, logger="accounts.services")
    account = connected_account(owner, "tiktok", "outage_at_revoke")
    calls = []
    with time_machine.travel(timezone.now() + timedelta(hours=25)), intercepted(platform_down("tiktok", calls)):
        disconnect(owner, account["id"])
    assert calls, "the renewal was not even tried"
    row = SocialAccount.objects.get(pk=account["id"])
    assert row.status == "disconnected" and row.access_token_enc == row.refresh_token_enc == ""
    # Logged for support: the grant may still be alive at TikTok.
    assert f"revoke of {account['id']} at tiktok failed (PlatformUnavailable)" in caplog.text


def test_a_revoke_tiktok_fails_is_a_warning_with_its_code_and_a_line_in_the_accounts_history(owner, caplog):
    # Before, an INFO line without TikTok's code, and nothing on the account: the customer's grant stays alive
    # at TikTok and nothing retries the revoke, so support must be able to find that.
    caplog.set_level(logging.INFO, logger="accounts.services")
    account = connected_account(owner, "tiktok", "revoke.outage")
    with intercepted(platform_down("tiktok", status=503)):
        disconnect(owner, account["id"])
    assert live_tokens("tiktok", "revoke.outage") >= 1  # the grant is still alive at TikTok

    [line] = [r for r in caplog.records if f"revoke of {account['id']} at tiktok failed" in r.getMessage()]
    assert line.levelname == "WARNING" and "internal_error" in line.getMessage(), line.getMessage()
    last = SocialAccountStatusChange.objects.filter(social_account_id=account["id"]).last()
    assert (last.from_status, last.to_status) == ("disconnected", "disconnected")
    assert last.source == "revoke at tiktok"
    assert "failed (internal_error)" in last.reason and "grant may still be alive" in last.reason, last.reason


def revoke_answered(platform: str, status: int, content: bytes, content_type: str) -> dict:
    """Overrides of the platform's revoke call (for `intercepted`) answering `content`: nothing is revoked."""
    path = "/tiktok/v2/oauth/revoke/" if platform == "tiktok" else "/me/permissions"
    headers = {"content-type": content_type}
    return {path: lambda request, sandbox: httpx.Response(status, content=content, headers=headers)}


@pytest.mark.parametrize(
    ("platform", "content", "content_type", "code"),
    [
        ("tiktok", b"<html>Service temporarily unavailable</html>", "text/html", "bad_response"),  # a proxy's page
        ("instagram", b'{"success": false}', "application/json", "not_revoked"),
    ],
)
def test_a_revoke_the_platform_did_not_do_is_a_warning_and_a_line_in_the_accounts_history(
    owner, caplog, platform, content, content_type, code
):
    # Before, a proxy's 200 page at TikTok's revoke, or Instagram's {"success": false}, read as revoked: no
    # warning, nothing on the account, while the customer's grant stayed alive at the platform.
    caplog.set_level(logging.INFO, logger="accounts.services")
    account = connected_account(owner, platform, "revoke.not_done")
    with intercepted(revoke_answered(platform, 200, content, content_type)):
        disconnect(owner, account["id"])
    assert live_tokens(platform, "revoke.not_done") >= 1  # the grant is still alive at the platform

    [line] = [r for r in caplog.records if f"revoke of {account['id']} at {platform} failed" in r.getMessage()]
    assert line.levelname == "WARNING" and code in line.getMessage(), line.getMessage()
    last = SocialAccountStatusChange.objects.filter(social_account_id=account["id"]).last()
    assert (last.from_status, last.to_status, last.source) == ("disconnected", "disconnected", f"revoke at {platform}")
    assert f"failed ({code})" in last.reason and "grant may still be alive" in last.reason, last.reason


def test_disconnecting_an_instagram_account_whose_token_expired_ends_quietly(owner):
    """Instagram has no refresh token and an expired token cannot be refreshed: nothing can revoke with it
    (no usable token of the grant is left); the disconnect still succeeds."""
    account = connected_account(owner, "instagram", "ig_expired")
    with time_machine.travel(timezone.now() + timedelta(days=61)):
        disconnect(owner, account["id"])
    row = SocialAccount.objects.get(pk=account["id"])
    assert row.status == "disconnected" and row.access_token_enc == ""
