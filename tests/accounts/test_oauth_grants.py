"""What becomes of a grant the OAuth callback obtained but bound to nothing (a reauth consented as another
user, a reauth of an account the partner disconnected meanwhile): it is withdrawn at the platform — unless the
same platform user is still held by a live binding or the pool, whose tokens the platform's per-user revoke
would kill too. A reauth link of an account disconnected since is spent before its code is exchanged."""

import httpx
import pytest

from accounts.models import Event, OAuthSession, SocialAccount
from accounts.platforms.sandbox.models import AuthCode, Token
from tests.accounts.oauth_helpers import (
    RETURN_URL,
    connected_account,
    consent_and_return,
    sent_back_to,
    status,
)
from tests.platform_helpers import intercepted
from tests.scheduling.publish_helpers import post, run_dispatcher, schedule_now

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN_ENDPOINT = {"tiktok": "/v2/oauth/token/", "instagram": "/oauth/access_token"}


def live_tokens(platform: str, username: str) -> int:
    return Token.objects.filter(platform=platform, username=username, revoked_at__isnull=True).count()


def reauth_link(tenant, account_id: str, **extra) -> dict:
    response = tenant.client.post(
        f"/v1/projects/{tenant.project.id}/social/reauth-url", {"socialAccountId": account_id, **extra}, format="json"
    )
    assert response.status_code == 200, response.content
    return response.json()


# --- A reauth link used after the partner disconnected the account ---------------------------------


def test_a_reauth_link_used_after_the_partner_disconnected_the_account_is_already_used_and_mints_nothing(owner):
    account = connected_account(owner, "tiktok", "gone.creator")
    link = reauth_link(owner, account["id"])
    assert owner.client.delete(f"/v1/social-accounts/{account['id']}").status_code == 200

    response = consent_and_return("tiktok", link["authorizeUrl"], "gone.creator")

    assert response["Location"] == f"{RETURN_URL}?layers_oauth_error=already_used"
    body = status(owner, link["state"])
    assert (body["status"], body["error"]) == ("failed", {"code": "already_used"})
    assert live_tokens("tiktok", "gone.creator") == 0
    assert AuthCode.objects.filter(username="gone.creator", used_at__isnull=True).exists()  # never exchanged
    assert SocialAccount.objects.get(pk=account["id"]).status == "disconnected"
    assert not Event.objects.filter(type="social_account.reconnected").exists()


def test_an_account_disconnected_while_its_reauth_code_is_exchanged_gets_no_token_and_the_grant_is_withdrawn(owner):
    # The partner's DELETE commits between the claim of the state and the binding, and its own revoke at
    # TikTok fails (best-effort): the tokens just issued are not stored on the disconnected account, the
    # state is spent as when the DELETE came first, and the grant is withdrawn rather than left live.
    account = connected_account(owner, "tiktok", "racing.creator")
    link = reauth_link(owner, account["id"])
    revokes: list[int] = []

    def exchange_then_delete(request: httpx.Request, sandbox: httpx.WSGITransport) -> httpx.Response:
        response = sandbox.handle_request(request)
        assert owner.client.delete(f"/v1/social-accounts/{account['id']}").status_code == 200
        return response

    def first_revoke_fails(request: httpx.Request, sandbox: httpx.WSGITransport) -> httpx.Response:
        revokes.append(1)
        return httpx.Response(503, text="upstream down") if len(revokes) == 1 else sandbox.handle_request(request)

    overrides = {TOKEN_ENDPOINT["tiktok"]: exchange_then_delete, "/v2/oauth/revoke/": first_revoke_fails}
    with intercepted(overrides):
        response = consent_and_return("tiktok", link["authorizeUrl"], "racing.creator")

    assert response["Location"] == f"{RETURN_URL}?layers_oauth_error=already_used"
    assert status(owner, link["state"])["error"] == {"code": "already_used"}
    row = SocialAccount.objects.get(pk=account["id"])
    assert row.status == "disconnected" and not row.access_token
    assert len(revokes) == 2
    assert live_tokens("tiktok", "racing.creator") == 0


# --- A reauth consented as another platform user ---------------------------------------------------


@pytest.mark.parametrize("platform", ["tiktok", "instagram"])
def test_a_reauth_consented_as_another_user_withdraws_that_users_grant(owner, platform):
    account = connected_account(owner, platform, "right.creator")
    before = SocialAccount.objects.get(pk=account["id"])
    link = reauth_link(owner, account["id"])

    response = consent_and_return(platform, link["authorizeUrl"], "wrong.creator")

    assert response["Location"] == sent_back_to(platform, f"{RETURN_URL}?layers_oauth_error=account_mismatch")
    assert live_tokens(platform, "wrong.creator") == 0
    after = SocialAccount.objects.get(pk=account["id"])
    assert (after.status, after.token_version) == ("connected", before.token_version)
    assert live_tokens(platform, "right.creator") > 0


@pytest.mark.parametrize("where", ["same project", "other organization"])
def test_a_reauth_consented_as_a_user_connected_elsewhere_keeps_that_users_grant(owner, sibling, where):
    account = connected_account(owner, "tiktok", "right.creator")
    holder = owner if where == "same project" else sibling
    other = connected_account(holder, "tiktok", "wrong.creator")
    link = reauth_link(owner, account["id"])

    response = consent_and_return("tiktok", link["authorizeUrl"], "wrong.creator")

    assert response["Location"] == f"{RETURN_URL}?layers_oauth_error=account_mismatch"
    assert live_tokens("tiktok", "wrong.creator") > 0
    assert SocialAccount.objects.get(pk=other["id"]).status == "connected"
    scheduled = schedule_now(holder, other["id"])
    run_dispatcher()
    assert post(holder, scheduled["id"])["status"] == "published"


def test_a_refused_grant_whose_revoke_fails_still_sends_the_customer_back_with_the_refusal(owner):
    # The withdrawal is best-effort: the platform failing it must not turn the refusal into platform_error.
    account = connected_account(owner, "tiktok", "right.one")
    link = reauth_link(owner, account["id"])

    def down(request: httpx.Request, sandbox: httpx.WSGITransport) -> httpx.Response:
        return httpx.Response(503, text="upstream down")

    with intercepted({"/v2/oauth/revoke/": down}):
        response = consent_and_return("tiktok", link["authorizeUrl"], "wrong.one")

    assert response["Location"] == f"{RETURN_URL}?layers_oauth_error=account_mismatch"
    assert OAuthSession.objects.get(state=link["state"]).error_code == "account_mismatch"
