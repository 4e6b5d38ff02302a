"""What becomes of the grant a customer gives on the platform's consent page when Layers cannot use it: a
connect or reauth granted without the publishing permission is refused (access_denied) rather than bound to
an account whose every post would fail, and a grant the callback obtained but bound to nothing (refused for
its scopes, a reauth consented as another user, a reauth of an account the partner disconnected meanwhile)
is withdrawn at the platform — unless the same platform user is still held by a live binding or the pool,
whose tokens the platform's per-user revoke would kill too."""

import json
import re

import httpx
import pytest
from django.utils import timezone

from accounts import services
from accounts.models import Event, OAuthSession, SocialAccount
from accounts.platforms.sandbox.models import AuthCode, Token
from tests.accounts.oauth_helpers import (
    RETURN_URL,
    connected_account,
    consent_and_return,
    sent_back_to,
    start,
    status,
)
from tests.conftest import assert_error
from tests.platform_helpers import intercepted
from tests.scheduling.publish_helpers import iso, post, run_dispatcher, sandbox_posts, schedule_now

pytestmark = pytest.mark.django_db(transaction=True)

# What the customer left ticked on the consent page, publishing permission unticked. The sandbox mints the
# code with the scopes of the authorize URL, as the platform does with what the customer granted.
WITHOUT_PUBLISHING = {
    "tiktok": "user.info.basic,user.info.profile",
    "instagram": "instagram_business_basic",
}
TOKEN_ENDPOINT = {"tiktok": "/v2/oauth/token/", "instagram": "/oauth/access_token"}


def granting(authorize_url: str, scopes: str) -> str:
    return re.sub(r"scope=[^&]*", f"scope={scopes}", authorize_url)


def live_tokens(platform: str, username: str) -> int:
    return Token.objects.filter(platform=platform, username=username, revoked_at__isnull=True).count()


def reauth_link(tenant, account_id: str, **extra) -> dict:
    response = tenant.client.post(
        f"/v1/projects/{tenant.project.id}/social/reauth-url", {"socialAccountId": account_id, **extra}, format="json"
    )
    assert response.status_code == 200, response.content
    return response.json()


def without_reported_scopes(platform: str):
    """An override of the platform's token endpoint whose answer does not say what was granted (TikTok's
    `scope`, Instagram's `permissions` left out), as a live platform may."""

    def answer(request: httpx.Request, sandbox: httpx.WSGITransport) -> httpx.Response:
        response = sandbox.handle_request(request)
        response.read()
        body = json.loads(response.content)
        body.pop("scope", None)
        body.pop("permissions", None)
        return httpx.Response(response.status_code, json=body)

    return answer


# --- A connect granted without the publishing permission -------------------------------------------


@pytest.mark.parametrize("platform", ["tiktok", "instagram"])
def test_a_connect_granted_without_the_publishing_permission_is_refused_and_the_grant_withdrawn(owner, platform):
    link = start(owner, platform)

    response = consent_and_return(platform, granting(link["authorizeUrl"], WITHOUT_PUBLISHING[platform]), "no.publish")

    assert response.status_code == 302
    assert response["Location"] == sent_back_to(platform, f"{RETURN_URL}?layers_oauth_error=access_denied")
    body = status(owner, link["state"])
    assert (body["status"], body["error"], body["socialAccountId"]) == ("failed", {"code": "access_denied"}, None)
    assert owner.client.get(f"/v1/projects/{owner.project.id}/social-accounts").json()["data"] == []
    assert not SocialAccount.objects.exists()
    assert not Event.objects.filter(type="social_account.connected").exists()
    # The app is no longer authorized for that user at the platform: nothing of the grant is left live.
    assert Token.objects.filter(platform=platform, username="no.publish").exists()
    assert live_tokens(platform, "no.publish") == 0


def test_a_refused_connect_keeps_the_grant_of_a_user_still_connected_in_another_project(owner):
    # TikTok's revoke withdraws the app from the whole user: the binding in the first project must keep
    # working, so only the new grant's copy is dropped (the user's grant stays, as for a revoke).
    kept = connected_account(owner, "tiktok", "two.projects")
    link = start(owner, "tiktok", project=owner.projects[1])

    response = consent_and_return(
        "tiktok", granting(link["authorizeUrl"], WITHOUT_PUBLISHING["tiktok"]), "two.projects"
    )

    assert response["Location"] == f"{RETURN_URL}?layers_oauth_error=access_denied"
    assert SocialAccount.objects.get(pk=kept["id"]).status == "connected"
    assert SocialAccount.objects.count() == 1
    scheduled = schedule_now(owner, kept["id"])
    run_dispatcher()
    assert post(owner, scheduled["id"])["status"] == "published"


def test_connecting_again_without_the_publishing_permission_leaves_the_existing_binding_as_it_was(owner):
    account = connected_account(owner, "tiktok", "again.narrow")
    before = SocialAccount.objects.get(pk=account["id"])
    link = start(owner, "tiktok")

    response = consent_and_return(
        "tiktok", granting(link["authorizeUrl"], WITHOUT_PUBLISHING["tiktok"]), "again.narrow"
    )

    assert response["Location"] == f"{RETURN_URL}?layers_oauth_error=access_denied"
    after = SocialAccount.objects.get(pk=account["id"])
    assert (after.status, after.token_version, after.access_token) == (
        "connected",
        before.token_version,
        before.access_token,
    )


def test_a_tiktok_connect_granting_the_draft_upload_only_connects_and_its_direct_posts_say_what_is_missing(owner):
    # video.upload alone posts drafts to the creator's inbox: a grant Layers can use, so it connects. A post
    # in publish mode needs video.publish: it is refused when scheduled, naming what is missing, and the
    # account stays connected, its drafts posting.
    link = start(owner, "tiktok")
    consent_and_return(
        "tiktok", granting(link["authorizeUrl"], "user.info.basic,user.info.profile,video.upload"), "drafts.only"
    )
    body = status(owner, link["state"])
    assert body["status"] == "completed", body
    account_id = body["socialAccountId"]

    draft = schedule_now(owner, account_id, mode="draft")
    run_dispatcher()
    assert post(owner, draft["id"])["status"] == "published"

    container = owner.client.post(
        f"/v1/projects/{owner.project.id}/content",
        {"mediaType": "video", "mediaUrls": ["https://cdn.acme.test/clip.mp4"]},
        format="json",
    ).json()
    response = owner.client.post(
        f"/v1/content/{container['id']}/schedule",
        {"targets": [{"socialAccountId": account_id, "mode": "publish"}], "scheduledFor": iso(timezone.now())},
        format="json",
    )
    error = assert_error(response, 422, "VALIDATION")
    [message] = error["details"]["fields"]["targets.0.mode"]
    assert "video.publish" in message and "reauth" in message, message
    assert SocialAccount.objects.get(pk=account_id).status == "connected"
    assert len(sandbox_posts("tiktok", "drafts.only")) == 1


@pytest.mark.parametrize("platform", ["tiktok", "instagram"])
def test_a_connect_whose_token_answer_names_no_scopes_connects_as_before(owner, platform):
    # A platform that leaves the granted scopes out of its answer is not taken to have refused them: every
    # connect would fail. Such an account's posts are refused at publish time, and say why.
    link = start(owner, platform)
    narrowed = granting(link["authorizeUrl"], WITHOUT_PUBLISHING[platform])

    with intercepted({TOKEN_ENDPOINT[platform]: without_reported_scopes(platform)}):
        consent_and_return(platform, narrowed, "silent.scopes")

    body = status(owner, link["state"])
    assert body["status"] == "completed", body
    scheduled = schedule_now(owner, body["socialAccountId"])
    run_dispatcher()
    failed = post(owner, scheduled["id"])
    assert failed["error"] == {
        "code": "CREDENTIAL_INVALID",
        "message": "The account's token lacks the publishing permission; it needs a reauth.",
    }, failed


# --- A reauth granted without the publishing permission --------------------------------------------


@pytest.mark.parametrize(
    "platform, granted",
    [("tiktok", "user.info.basic,video.list"), ("instagram", "instagram_business_basic")],
)
def test_a_reauth_granted_without_the_publishing_permission_is_refused_and_the_account_left_as_it_was(
    owner, platform, granted
):
    account = connected_account(owner, platform, "reauth.narrow")
    services.social_account_mark_reauth_required(account_id=account["id"], reason="test", source="test")
    before = SocialAccount.objects.get(pk=account["id"])
    link = reauth_link(owner, account["id"])

    response = consent_and_return(platform, granting(link["authorizeUrl"], granted), "reauth.narrow")

    assert response["Location"] == sent_back_to(platform, f"{RETURN_URL}?layers_oauth_error=access_denied")
    assert status(owner, link["state"])["error"] == {"code": "access_denied"}
    after = SocialAccount.objects.get(pk=account["id"])
    assert (after.status, after.token_version) == ("reauth_required", before.token_version)
    assert not Event.objects.filter(type="social_account.reconnected").exists()


def test_a_reauth_granting_one_publishing_scope_reconnects(owner):
    # A reauth may deliberately ask for fewer scopes: only a grant that cannot post at all is refused.
    account = connected_account(owner, "tiktok", "reauth.upload")
    services.social_account_mark_reauth_required(account_id=account["id"], reason="test", source="test")
    link = reauth_link(owner, account["id"], scopes=["video.upload"])

    response = consent_and_return("tiktok", link["authorizeUrl"], "reauth.upload")

    assert response["Location"] == RETURN_URL
    assert SocialAccount.objects.get(pk=account["id"]).status == "connected"


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
