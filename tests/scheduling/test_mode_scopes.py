"""A TikTok grant may hold one publishing scope only: video.publish posts in mode `publish`, video.upload in
mode `draft`. A target whose mode the account's grant cannot post is refused when it is scheduled, and a post
queued before the grant narrowed fails alone at its time: the account keeps posting in the mode it can."""

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import Event, SocialAccount
from scheduling.models import ScheduledPost
from tests.accounts.oauth_helpers import connected_account, consent_and_return, start, status
from tests.accounts.test_oauth_grants import granting, reauth_link
from tests.conftest import assert_error
from tests.scheduling.publish_helpers import iso, post, run_dispatcher, sandbox_posts, schedule_now

pytestmark = pytest.mark.django_db(transaction=True)

# What a grant holds with one of the two publishing scopes unticked, and which mode it can then not post in.
ONE_SCOPE = {
    "video.upload": ("user.info.basic,user.info.profile,video.upload", "publish", "video.publish"),
    "video.publish": ("user.info.basic,user.info.profile,video.publish", "draft", "video.upload"),
}


def tiktok_granting(owner, scopes: str, username: str) -> str:
    link = start(owner, "tiktok")
    consent_and_return("tiktok", granting(link["authorizeUrl"], scopes), username)
    body = status(owner, link["state"])
    assert body["status"] == "completed", body
    return body["socialAccountId"]


def schedule(owner, account_id: str, mode: str):
    container = owner.client.post(
        f"/v1/projects/{owner.project.id}/content",
        {"mediaType": "video", "mediaUrls": ["https://cdn.acme.test/clip.mp4"], "caption": "hi"},
        format="json",
    ).json()
    return owner.client.post(
        f"/v1/content/{container['id']}/schedule",
        {
            "targets": [{"socialAccountId": account_id, "mode": mode}],
            "scheduledFor": iso(timezone.now() + timedelta(hours=3)),
        },
        format="json",
    )


@pytest.mark.parametrize("kept", ["video.upload", "video.publish"])
def test_a_target_whose_mode_the_tiktok_grant_cannot_post_is_refused_at_schedule(owner, kept):
    scopes, refused_mode, missing = ONE_SCOPE[kept]
    account_id = tiktok_granting(owner, scopes, f"only.{kept}")

    error = assert_error(schedule(owner, account_id, refused_mode), 422, "VALIDATION")

    [message] = error["details"]["fields"]["targets.0.mode"]
    assert missing in message and "reauth" in message, message
    assert not ScheduledPost.objects.exists()
    # The mode the grant can post in is scheduled as usual.
    other_mode = "draft" if refused_mode == "publish" else "publish"
    assert schedule(owner, account_id, other_mode).status_code == 201


def test_an_account_whose_granted_scopes_are_unknown_is_scheduled_in_any_mode(owner):
    account_id = tiktok_granting(owner, "user.info.basic,video.upload", "old.account")
    SocialAccount.objects.filter(pk=account_id).update(scopes="")  # connected before scopes were stored

    assert schedule(owner, account_id, "publish").status_code == 201
    assert schedule(owner, account_id, "draft").status_code == 201


@pytest.mark.parametrize("kept", ["video.upload", "video.publish"])
def test_a_post_queued_before_a_reauth_narrowed_the_grant_fails_alone_and_the_account_keeps_posting(owner, kept):
    _, lost_mode, missing = ONE_SCOPE[kept]
    kept_mode = "draft" if lost_mode == "publish" else "publish"
    username = f"narrowed.{kept}"
    account_id = connected_account(owner, "tiktok", username)["id"]
    # Scheduled while the grant held both publishing scopes.
    lost = schedule(owner, account_id, lost_mode).json()["scheduledPosts"][0]
    # The partner then reauthorizes with only one of them.
    link = reauth_link(owner, account_id, scopes=[kept])
    consent_and_return("tiktok", link["authorizeUrl"], username)
    assert status(owner, link["state"])["status"] == "completed"
    kept_post = schedule(owner, account_id, kept_mode).json()["scheduledPosts"][0]
    ScheduledPost.objects.filter(pk__in=[lost["id"], kept_post["id"]]).update(due_at=timezone.now())

    run_dispatcher()

    failed = post(owner, lost["id"])
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "PLATFORM_REJECTED"
    assert missing in failed["error"]["message"] and "reauth" in failed["error"]["message"], failed["error"]
    assert post(owner, kept_post["id"])["status"] == "published"
    assert SocialAccount.objects.get(pk=account_id).status == "connected"
    assert not Event.objects.filter(type="social_account.needs_reauth").exists()
    assert len(sandbox_posts("tiktok", username)) == 1
    # And it goes on posting in the mode its grant has.
    again = schedule_now(owner, account_id, mode=kept_mode)
    run_dispatcher()
    assert post(owner, again["id"])["status"] == "published"
