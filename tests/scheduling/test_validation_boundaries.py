"""Boundaries of the content and schedule validation that a partner meets exactly at the documented limits."""

from datetime import timedelta

from django.utils import timezone

from scheduling.models import ManagedProvider
from tests.conftest import assert_error
from tests.factories import make_account

VIDEO = {"mediaType": "video", "mediaUrls": ["https://cdn.acme.test/clip.mp4"], "caption": "hello"}


def iso(dt) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def create_container(tenant, body):
    return tenant.client.post(f"/v1/projects/{tenant.project.id}/content", body, format="json")


def schedule(tenant, container_id, targets, scheduled_for=None):
    body = {"targets": targets, "scheduledFor": scheduled_for or iso(timezone.now() + timedelta(hours=1))}
    return tenant.client.post(f"/v1/content/{container_id}/schedule", body, format="json")


def test_a_carousel_takes_up_to_35_urls_and_not_36(owner):
    # A carousel is 2 to 35 images (TikTok's photo post takes 35): exactly 35 is accepted, 36 is a 422.
    urls = [f"https://cdn.acme.test/{n}.jpg" for n in range(36)]
    response = create_container(owner, {"mediaType": "carousel", "mediaUrls": urls[:35]})
    assert response.status_code == 201, response.content
    assert len(response.json()["mediaUrls"]) == 35
    error = assert_error(create_container(owner, {"mediaType": "carousel", "mediaUrls": urls}), 422, "VALIDATION")
    assert "mediaUrls" in error["details"]["fields"], error


def test_scheduled_for_more_than_five_minutes_in_the_past_is_refused(owner):
    # "at most 5 minutes in the past": 5.5 minutes ago is already too far (the edge, not 6 minutes).
    created = create_container(owner, VIDEO).json()
    account = make_account(owner)
    when = iso(timezone.now() - timedelta(minutes=5, seconds=30))
    error = assert_error(
        schedule(owner, created["id"], [{"socialAccountId": account.pk, "mode": "publish"}], when), 422, "VALIDATION"
    )
    assert list(error["details"]["fields"]) == ["scheduledFor"], error


def test_more_than_100_targets_are_refused_as_a_whole(owner):
    # At most 100 targets per schedule: 101 is refused on `targets` itself, before any account is looked up.
    created = create_container(owner, VIDEO).json()
    targets = [{"socialAccountId": f"sa_{n:032x}", "mode": "publish"} for n in range(101)]
    error = assert_error(schedule(owner, created["id"], targets), 422, "VALIDATION")
    assert list(error["details"]["fields"]) == ["targets"], error


def test_a_managed_tiktok_photo_post_is_not_held_to_tiktoks_caption_limit(owner):
    # Managed posts go to the provider as they are: an emoji caption of 2100 characters (4200 UTF-16 units,
    # over TikTok's 4000 for a photo description) is refused for a TikTok publish target but accepted managed.
    ManagedProvider.objects.create(project=owner.project, name="Acme Boost", endpoint_url="https://boost.test/in")
    body = {"mediaType": "image", "mediaUrls": ["https://cdn.acme.test/1.jpg"], "caption": "\U0001f600" * 2100}
    created = create_container(owner, body)
    assert created.status_code == 201, created.content
    tiktok = make_account(owner, platform="tiktok")
    refused = schedule(owner, created.json()["id"], [{"socialAccountId": tiktok.pk, "mode": "publish"}])
    assert "targets.0.socialAccountId" in assert_error(refused, 422, "VALIDATION")["details"]["fields"]
    response = schedule(owner, created.json()["id"], [{"socialAccountId": tiktok.pk, "mode": "managed"}])
    assert response.status_code == 201, response.content
