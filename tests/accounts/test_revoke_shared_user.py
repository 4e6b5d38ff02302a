"""Revoking one binding of a platform user that other bindings share. TikTok's /v2/oauth/revoke/ and
Instagram's DELETE /me/permissions withdraw the app's authorization for the whole user, not one token: a
revoke in one organization (or project) must not kill the same user's bindings elsewhere, a leased account or
Layers' pool account of that user; the grant is revoked only when the last live binding goes."""

import threading

import pytest
from django.utils import timezone

from accounts import services
from accounts.models import SocialAccount
from accounts.platforms.base import TokenInvalid
from accounts.platforms.clients import get_client
from leasing import services as leasing
from leasing.models import PoolAccount
from tests.accounts.oauth_helpers import connected_account
from tests.concurrency import run_in_threads
from tests.leasing.helpers import add_pool, get_request, request_accounts
from tests.scheduling.publish_helpers import iso, post, run_dispatcher, schedule_now

pytestmark = pytest.mark.django_db(transaction=True)


def token_of(account_id: str) -> str:
    return SocialAccount.objects.get(pk=account_id).access_token


def works_at_platform(platform: str, token: str) -> bool:
    try:
        get_client(platform).get_profile(access_token=token)
    except TokenInvalid:
        return False
    return True


@pytest.mark.parametrize("platform", ["tiktok", "instagram"])
def test_revoke_in_one_org_leaves_the_same_handle_in_another_org_working(owner, sibling, platform):
    mine = connected_account(owner, platform, "shared.creator")
    theirs = connected_account(sibling, platform, "shared.creator")
    assert owner.client.delete(f"/v1/social-accounts/{mine['id']}").status_code == 200
    scheduled = schedule_now(sibling, theirs["id"])
    run_dispatcher()
    after = post(sibling, scheduled["id"])
    assert after["status"] == "published", after
    assert sibling.client.get(f"/v1/social-accounts/{theirs['id']}").json()["status"] == "connected"


@pytest.mark.parametrize("platform", ["tiktok", "instagram"])
def test_revoke_in_one_project_leaves_the_other_projects_binding_working(owner, platform):
    first = connected_account(owner, platform, "shared.creator2")
    second = connected_account(owner, platform, "shared.creator2", project=owner.projects[1])
    assert first["id"] != second["id"]
    assert owner.client.delete(f"/v1/social-accounts/{first['id']}").status_code == 200
    container = owner.client.post(
        f"/v1/projects/{owner.projects[1].id}/content",
        {"mediaType": "video", "mediaUrls": ["https://cdn.acme.test/clip.mp4"], "caption": "x"},
        format="json",
    ).json()
    r = owner.client.post(
        f"/v1/content/{container['id']}/schedule",
        {"targets": [{"socialAccountId": second["id"], "mode": "publish"}], "scheduledFor": iso(timezone.now())},
        format="json",
    )
    assert r.status_code == 201, r.content
    run_dispatcher()
    after = post(owner, r.json()["scheduledPosts"][0]["id"])
    assert after["status"] == "published", after


@pytest.mark.parametrize("platform", ["tiktok", "instagram"])
def test_revoking_the_last_live_binding_revokes_the_grant_at_the_platform(owner, sibling, platform):
    mine = connected_account(owner, platform, "shared.leaver")
    theirs = connected_account(sibling, platform, "shared.leaver")
    my_token, their_token = token_of(mine["id"]), token_of(theirs["id"])

    owner.client.delete(f"/v1/social-accounts/{mine['id']}")
    assert works_at_platform(platform, their_token)  # the sibling still binds the user: grant kept

    sibling.client.delete(f"/v1/social-accounts/{theirs['id']}")
    # The last binding is gone: the app's authorization is withdrawn, every token of it refused.
    assert not works_at_platform(platform, their_token)
    assert not works_at_platform(platform, my_token)
    assert token_of(mine["id"]) is None and token_of(theirs["id"]) is None


def test_revoking_a_connected_account_leaves_a_leased_account_of_the_same_user_working(owner, sibling):
    (pool_id,) = add_pool(1)
    accepted = request_accounts(sibling, 1)
    leasing.lease_assign(request_id=accepted["requestId"], auto=True)
    leased_id = get_request(sibling, accepted["requestId"])["socialAccountIds"][0]
    handle = PoolAccount.objects.get(pk=pool_id).handle
    mine = connected_account(owner, "tiktok", handle)  # the pool account's owner also connected it to Acme

    assert owner.client.delete(f"/v1/social-accounts/{mine['id']}").status_code == 200

    scheduled = schedule_now(sibling, leased_id)
    run_dispatcher()
    assert post(sibling, scheduled["id"])["status"] == "published"
    assert sibling.client.get(f"/v1/social-accounts/{leased_id}").json()["status"] == "connected"


def test_revoking_a_connected_account_leaves_the_pool_accounts_token_of_the_same_user_working(owner):
    (pool_id,) = add_pool(1)
    pool = PoolAccount.objects.get(pk=pool_id)
    mine = connected_account(owner, "tiktok", pool.handle)

    owner.client.delete(f"/v1/social-accounts/{mine['id']}")

    assert works_at_platform("tiktok", PoolAccount.objects.get(pk=pool_id).access_token)


def test_a_pool_account_retired_without_a_token_does_not_keep_the_grant(owner):
    (pool_id,) = add_pool(1)
    pool = PoolAccount.objects.get(pk=pool_id)
    PoolAccount.objects.filter(pk=pool_id).update(status="retired", access_token_enc="", refresh_token_enc="")
    mine = connected_account(owner, "tiktok", pool.handle)
    token = token_of(mine["id"])

    owner.client.delete(f"/v1/social-accounts/{mine['id']}")

    assert not works_at_platform("tiktok", token)


@pytest.mark.parametrize("platform", ["tiktok", "instagram"])
def test_two_orgs_revoking_the_same_user_at_once_still_revoke_the_grant(owner, sibling, platform, monkeypatch):
    """Both revokes are held inside their transactions until both got there: each has marked its own binding
    disconnected and still sees the other's as live. Had the decision been taken there, neither would revoke
    at the platform and the user's grant would outlive every binding."""
    mine = connected_account(owner, platform, "shared.racer")
    theirs = connected_account(sibling, platform, "shared.racer")
    my_token, their_token = token_of(mine["id"]), token_of(theirs["id"])
    both_inside = threading.Barrier(2, timeout=20)
    original = services._disconnect_effects

    def held(**kwargs):
        result = original(**kwargs)
        both_inside.wait()
        return result

    monkeypatch.setattr(services, "_disconnect_effects", held)

    run_in_threads(
        lambda: services.social_account_revoke(account_id=mine["id"]),
        lambda: services.social_account_revoke(account_id=theirs["id"]),
    )

    assert not works_at_platform(platform, my_token)
    assert not works_at_platform(platform, their_token)
