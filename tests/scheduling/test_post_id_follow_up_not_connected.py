"""TikTok gives a post's public id only after moderation, and the metrics sync asks for it later (the post id
follow-up). A post published moments before its account was revoked, released or flagged for a reauth must
still get its externalId / externalUrl (API.md: published posts "stay in the history with their
externalUrl") when another holder of the same TikTok user (another binding, a lease, Layers' pool) kept the
app's grant alive: that holder's token reads how the post stands, as the resolver does for a post still
publishing (scheduling.services._resolve). No holder left: nothing can be asked, and the post is not asked
about at every run either. Through the real dispatcher, clients and sandbox."""

from datetime import timedelta
from unittest import mock

import pytest
import time_machine
from django.utils import timezone

from accounts import services as account_services
from accounts.models import SocialAccount
from accounts.platforms.sandbox.identities import token_digest
from accounts.platforms.sandbox.models import Token as SandboxToken
from accounts.platforms.tiktok import TikTokClient
from scheduling import services
from tests.accounts.oauth_helpers import connected_account
from tests.platform_helpers import intercepted, platform_down
from tests.scheduling.publish_helpers import later, post, run_dispatcher, sandbox_posts, schedule_now

pytestmark = pytest.mark.django_db(transaction=True)


def published_before_its_id(tenant, account_id: str, settings) -> str:
    """A post TikTok completed before moderation: `published`, no public id yet."""
    settings.LAYERS_SANDBOX_TIKTOK_MODERATION_SECONDS = 30 * 60
    post_id = schedule_now(tenant, account_id)["id"]
    run_dispatcher()
    body = post(tenant, post_id)
    assert body["status"] == "published" and body["externalId"] is None, body
    return post_id


def assert_has_its_url(tenant, post_id: str, handle: str) -> None:
    (on_tiktok,) = sandbox_posts("tiktok", handle)
    body = post(tenant, post_id)
    assert body["externalId"] == on_tiktok.external_id, body
    assert body["externalUrl"] == f"https://www.tiktok.com/@{handle}/video/{on_tiktok.external_id}"


def listed_metrics(tenant, post_id: str, project=None) -> dict:
    project = project or tenant.project
    listed = tenant.client.get(f"/v1/projects/{project.id}/posts").json()["data"]
    return next(p["metrics"] for p in listed if p["id"] == post_id)


def test_a_leased_accounts_post_released_before_tiktok_gave_its_id_gets_its_url_from_the_pools_token(owner, settings):
    from leasing import services as leasing
    from tests.leasing.helpers import add_pool, get_request, request_accounts

    add_pool(1)
    accepted = request_accounts(owner, 1)
    leasing.lease_assign(request_id=accepted["requestId"], auto=True)
    account_id = get_request(owner, accepted["requestId"])["socialAccountIds"][0]
    handle = owner.client.get(f"/v1/social-accounts/{account_id}").json()["handle"]
    post_id = published_before_its_id(owner, account_id, settings)

    # Released seconds later: the token goes back to Layers' pool, which keeps the app's grant.
    assert owner.client.delete(f"/v1/leased-accounts/{account_id}").status_code == 200
    with time_machine.travel(later(hours=1)):
        services.posts_sync_metrics()

    assert_has_its_url(owner, post_id, handle)
    # The account is gone: its posts keep their URL, but no metrics sync starts for them (API.md).
    with time_machine.travel(later(hours=3)):
        services.posts_sync_metrics()
    assert listed_metrics(owner, post_id)["syncedAt"] is None


def _another_project(owner, sibling, handle: str) -> None:
    connected_account(owner, "tiktok", handle, project=owner.projects[1])


def _another_organization(owner, sibling, handle: str) -> None:
    connected_account(sibling, "tiktok", handle)


@pytest.mark.parametrize("held_elsewhere", [_another_project, _another_organization], ids=["project", "organization"])
def test_a_revoked_accounts_post_gets_its_url_when_another_binding_kept_the_grant(
    owner, sibling, settings, held_elsewhere
):
    held_elsewhere(owner, sibling, "kept.grant")
    account = connected_account(owner, "tiktok", "kept.grant")
    post_id = published_before_its_id(owner, account["id"], settings)

    assert owner.client.delete(f"/v1/social-accounts/{account['id']}").status_code == 200  # grant kept
    with time_machine.travel(later(hours=1)):
        services.posts_sync_metrics()

    assert_has_its_url(owner, post_id, "kept.grant")
    with time_machine.travel(later(hours=3)):
        services.posts_sync_metrics()
    assert listed_metrics(owner, post_id)["syncedAt"] is None


def test_a_reauth_required_accounts_post_gets_its_url_from_a_live_holder_not_its_dead_token(owner, settings):
    connected_account(owner, "tiktok", "needs.reauth", project=owner.projects[1])
    account = connected_account(owner, "tiktok", "needs.reauth")
    post_id = published_before_its_id(owner, account["id"], settings)
    # Its own token dies (TikTok refuses it from now on) and Layers asks for a reauth; the other project's
    # binding of the same user still holds a live token.
    own = SocialAccount.objects.get(pk=account["id"]).access_token
    SandboxToken.objects.filter(digest=token_digest(own)).update(
        revoked_at=timezone.now(), revoked_reason="invalidated"
    )
    assert account_services.social_account_mark_reauth_required(
        account_id=account["id"], reason="refused", source="test"
    )

    with time_machine.travel(later(hours=1)):
        services.posts_sync_metrics()

    assert_has_its_url(owner, post_id, "needs.reauth")
    assert SocialAccount.objects.get(pk=account["id"]).status == "reauth_required"


def test_a_revoked_accounts_post_with_no_holder_left_keeps_no_url_and_is_not_asked_at_every_run(owner, settings):
    account = connected_account(owner, "tiktok", "last.holder")
    post_id = published_before_its_id(owner, account["id"], settings)
    # Its only holder: the revoke withdraws the app's grant, no token of that user is left anywhere.
    assert owner.client.delete(f"/v1/social-accounts/{account['id']}").status_code == 200

    real_status = TikTokClient.publish_status
    asked: list = []

    def status(self, **kwargs):
        asked.append(kwargs["publish_id"])
        return real_status(self, **kwargs)

    looked_up = mock.Mock(wraps=services.platform_user_token_kept)
    with (
        mock.patch.object(TikTokClient, "publish_status", status),
        mock.patch.object(services, "platform_user_token_kept", looked_up),
    ):
        for minutes in (60, 75, 90, 105, 125, 140):  # the beat, every 15 minutes
            with time_machine.travel(later(minutes=minutes)):
                services.posts_sync_metrics()

    assert asked == []  # no token can ask
    assert looked_up.call_count <= 2  # looked for a holder once an hour at most, not at every run
    body = post(owner, post_id)
    assert body["status"] == "published" and body["externalId"] is None and body["externalUrl"] is None


def test_a_revoked_accounts_posts_asked_on_a_holders_throttled_token_wait_for_tiktoks_retry_after(owner, settings):
    connected_account(owner, "tiktok", "kept.busy", project=owner.projects[1])
    account = connected_account(owner, "tiktok", "kept.busy")
    post_ids = [published_before_its_id(owner, account["id"], settings) for _ in range(2)]
    assert owner.client.delete(f"/v1/social-accounts/{account['id']}").status_code == 200  # grant kept
    now, calls = timezone.now(), []

    # TikTok throttles the holder's token for an hour (30 status calls a minute per token).
    with intercepted(platform_down("tiktok", calls, status=429, retry_after=3600, until=now + timedelta(hours=2))):
        for minutes in (60, 75, 90, 105):  # the beat, every 15 minutes
            with time_machine.travel(now + timedelta(minutes=minutes), tick=False):
                services.posts_sync_metrics()
        assert len(calls) == 1  # refused once, then left alone as TikTok said: not the other post, not each beat
        with time_machine.travel(now + timedelta(minutes=121), tick=False):
            services.posts_sync_metrics()

    assert len(calls) == 1
    for post_id in post_ids:
        body = post(owner, post_id)
        assert body["externalId"] and body["externalUrl"].startswith("https://www.tiktok.com/@kept.busy/video/"), body


def test_a_revoked_accounts_post_is_not_asked_at_every_run_on_a_holders_token_tiktok_refuses(owner, settings):
    holder = connected_account(owner, "tiktok", "kept.dead", project=owner.projects[1])
    account = connected_account(owner, "tiktok", "kept.dead")
    post_id = published_before_its_id(owner, account["id"], settings)
    assert owner.client.delete(f"/v1/social-accounts/{account['id']}").status_code == 200  # grant kept
    # The holder's token dies (TikTok refuses it), and no call of the holder's own has found out yet.
    holders_token = SocialAccount.objects.get(pk=holder["id"]).access_token
    SandboxToken.objects.filter(digest=token_digest(holders_token)).update(
        revoked_at=timezone.now(), revoked_reason="invalidated"
    )
    now, asked = timezone.now(), []

    def counted(request, sandbox):
        asked.append(request)
        return sandbox.handle_request(request)

    with intercepted({"/v2/post/publish/status/fetch/": counted}):
        for minutes in range(60, 180, 15):  # two hours of beats
            with time_machine.travel(now + timedelta(minutes=minutes), tick=False):
                services.posts_sync_metrics()

    assert 1 <= len(asked) <= 2  # once an hour, not at every beat
    assert post(owner, post_id)["externalId"] is None
    # The holder is left as it is: its own calls find its token dead.
    assert SocialAccount.objects.get(pk=holder["id"]).status == "connected"
