from datetime import timedelta

from django.utils import timezone

from accounts import crypto
from accounts.platforms.sandbox.models import Post as SandboxPost
from scheduling.models import ManagedProvider, ScheduledPost
from scheduling.tasks import dispatch_due_posts

MEDIA = {
    "video": ["https://cdn.acme.test/clip.mp4"],
    "image": ["https://cdn.acme.test/photo.jpg"],
    "carousel": ["https://cdn.acme.test/1.jpg", "https://cdn.acme.test/2.jpg", "https://cdn.acme.test/3.jpg"],
}


def iso(dt) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def schedule_now(
    tenant,
    account_id: str,
    *,
    mode: str = "publish",
    media_type: str = "video",
    caption="Launch day",
    media_urls=None,
    when=None,
) -> dict:
    container = tenant.client.post(
        f"/v1/projects/{tenant.project.id}/content",
        {"mediaType": media_type, "mediaUrls": media_urls or MEDIA[media_type], "caption": caption},
        format="json",
    ).json()
    response = tenant.client.post(
        f"/v1/content/{container['id']}/schedule",
        {"targets": [{"socialAccountId": account_id, "mode": mode}], "scheduledFor": iso(when or timezone.now())},
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()["scheduledPosts"][0]


def managed_provider(**fields) -> ManagedProvider:
    """A project's managed-distribution provider as the admin saves it: with a secret (a provider without one is
    never called, its posts fail). `fields` as for ManagedProvider.objects.create."""
    return ManagedProvider.objects.create(**{"secret_enc": crypto.encrypt("provider-shared-secret"), **fields})


def run_dispatcher() -> int:
    """One dispatcher tick (tasks run eagerly in tests, so the publish happens now)."""
    return dispatch_due_posts()


def post(tenant, post_id: str) -> dict:
    return tenant.client.get(f"/v1/scheduled-posts/{post_id}").json()


def sandbox_posts(platform: str, username: str):
    return list(SandboxPost.objects.filter(platform=platform, username=username))


def later(**kwargs):
    return timezone.now() + timedelta(**kwargs)


def sent_then_processing(tenant, account_id: str) -> str:
    """A post TikTok has accepted (its publish id stored) and is still processing when the dispatcher looks
    (its status read refused): the id of the post, `publishing`, whose outcome Layers has not read yet."""
    from unittest import mock

    from accounts.platforms.base import PlatformUnavailable
    from accounts.platforms.tiktok import TikTokClient

    scheduled = schedule_now(tenant, account_id)
    with mock.patch.object(TikTokClient, "publish_status", side_effect=PlatformUnavailable("tiktok: 503", status=503)):
        run_dispatcher()
    assert post(tenant, scheduled["id"])["status"] == "publishing"
    return scheduled["id"]


def a_burst(tenant, account_id: str, *, start, count: int) -> list:
    """`count` + 1 posts of `tenant`'s account due 1 ms apart from `start`, in due order: the first scheduled
    through the API, the others bulk-created like it (a burst larger than a claim's window, without scheduling
    each one)."""
    template = ScheduledPost.objects.get(pk=schedule_now(tenant, account_id, when=start)["id"])
    return [
        template,
        *ScheduledPost.objects.bulk_create(
            ScheduledPost(
                organization_id=template.organization_id,
                project_id=template.project_id,
                container_id=template.container_id,
                social_account_id=account_id,
                mode="publish",
                placement=template.placement,
                scheduled_for=start + timedelta(milliseconds=n),
                due_at=start + timedelta(milliseconds=n),
            )
            for n in range(1, count + 1)
        ),
    ]


def sent_awaiting_check(posts: list) -> list:
    """`posts` (queued, as a_burst makes them) as the platform's accepted posts whose outcome Layers has not
    read yet: `publishing` with a publish id, their status check due at their due time (their order)."""
    from django.db.models import F

    ScheduledPost.objects.filter(pk__in=[p.pk for p in posts]).update(
        status=ScheduledPost.Status.PUBLISHING,
        attempts=1,
        publish_attempted_at=F("due_at"),
        publish_id=F("id"),
        claimed_until=F("due_at"),
        next_check_at=F("due_at"),
    )
    return posts
