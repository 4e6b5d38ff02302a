"""What the sandbox does with content: TikTok's publish state machine, Instagram's containers and media,
draft deliveries, quotas and deterministic metrics.

State advances lazily, when someone looks (status fetch, container read, media_publish), from timestamps
stored at creation; nothing runs in the background, and a moved clock (time-machine) moves everything.
"""

import hashlib
import math
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from .identities import new_numeric_id, new_tiktok_post_id
from .models import Container, Platform, Post

DAY = timedelta(hours=24)
CONTAINER_TTL = timedelta(hours=24)

# TikTok statuses
PROCESSING = "PROCESSING_DOWNLOAD"
COMPLETE = "PUBLISH_COMPLETE"
INBOX = "SEND_TO_USER_INBOX"
FAILED = "FAILED"
# Instagram
PUBLISHED = "PUBLISHED"
DELIVERED = "DELIVERED"


def _delay() -> timedelta:
    return timedelta(seconds=float(settings.LAYERS_SANDBOX_PUBLISH_DELAY_SECONDS))


def is_fetchable(url: str) -> bool:
    return urlsplit(url).scheme in ("http", "https") and bool(urlsplit(url).netloc)


def is_broken_media(url: str) -> bool:
    """The sandbox's stand-in for a file the platform cannot use: any URL whose path says "invalid"."""
    return "invalid" in urlsplit(url).path.lower()


# --- TikTok -------------------------------------------------------------------------------------------


def tiktok_posts_today(*, username: str, kind: str) -> int:
    return Post.objects.filter(
        platform=Platform.TIKTOK, username=username, kind=kind, created_at__gte=timezone.now() - DAY
    ).count()


def tiktok_receive(
    *, username: str, kind: str, media_type: str, urls: list[str], caption: str, privacy_level: str, rejected: bool
) -> Post:
    """Record an init call: the post exists from now on, whatever its fate."""
    now = timezone.now()
    fail_reason = ""
    if rejected:
        fail_reason = "spam_risk"
    elif any(is_broken_media(url) for url in urls):
        fail_reason = "file_format_check_failed"
    family = "v" if media_type == "video" else "p"
    route = "inbox" if kind == Post.Kind.DRAFT else "pub"
    return Post.objects.create(
        platform=Platform.TIKTOK,
        username=username,
        kind=kind,
        media_type=media_type,
        media=[{"url": url, "kind": "video" if media_type == "video" else "image"} for url in urls],
        caption=caption,
        privacy_level=privacy_level,
        publish_id=f"{family}_{route}_url~v2-1.{new_tiktok_post_id()}",
        status=PROCESSING,
        fail_reason=fail_reason,
        created_at=now,
        ready_at=now + _delay(),
    )


def tiktok_advance(post: Post) -> Post:
    """PROCESSING_DOWNLOAD → FAILED | SEND_TO_USER_INBOX | PUBLISH_COMPLETE once ready. The conditional
    update makes the transition happen once even when several processes poll at the same moment."""
    if post.status != PROCESSING or timezone.now() < post.ready_at:
        return post
    if post.fail_reason:
        change = {"status": FAILED}
    elif post.kind == Post.Kind.DRAFT:
        change = {"status": INBOX}
    else:
        # published_at is the ready time, not the poll time: metrics do not depend on who polled when.
        change = {"status": COMPLETE, "external_id": new_tiktok_post_id(), "published_at": post.ready_at}
    Post.objects.filter(pk=post.pk, status=PROCESSING).update(**change)
    post.refresh_from_db()
    return post


def tiktok_public_post_id(post: Post) -> str | None:
    """The id TikTok shows in `publicaly_available_post_id`: only once moderation is over (a short while
    after PUBLISH_COMPLETE, LAYERS_SANDBOX_TIKTOK_MODERATION_SECONDS), and never for a post the public
    cannot see (SELF_ONLY)."""
    if post.status != COMPLETE or post.privacy_level == "SELF_ONLY" or post.published_at is None:
        return None
    moderation = timedelta(seconds=float(settings.LAYERS_SANDBOX_TIKTOK_MODERATION_SECONDS))
    return post.external_id if timezone.now() >= post.published_at + moderation else None


# --- Instagram ----------------------------------------------------------------------------------------


def instagram_quota_usage(*, username: str) -> int:
    return Post.objects.filter(
        platform=Platform.INSTAGRAM, username=username, kind=Post.Kind.POST, created_at__gte=timezone.now() - DAY
    ).count()


def create_container(
    *,
    username: str,
    media_type: str,
    url: str = "",
    caption: str = "",
    is_carousel_item: bool = False,
    children: list[str] | None = None,
    server_error: bool = False,
) -> Container:
    now = timezone.now()
    # A failed container's `status`: Meta's IG Container reference documents the error subcode itself, and a
    # sentence around it is what is seen in practice. The sandbox answers both, so clients read both: the bare
    # subcode for unusable media, the sentence for the "container_error" fault. (Refused content is no failed
    # container: Meta refuses it at media_publish, where the "reject" fault is answered.)
    error = ""
    if server_error:
        error = "Error: Media upload has failed with error code 2207001"
    elif url and is_broken_media(url):
        error = "2207052"
    return Container.objects.create(
        ig_id=new_numeric_id(1),
        username=username,
        media_type=media_type,
        is_carousel_item=is_carousel_item,
        url=url,
        caption=caption,
        children=children or [],
        created_at=now,
        ready_at=now + _delay(),
        error=error,
    )


def container_status(container: Container) -> tuple[str, str]:
    """(status_code, status) of a container right now."""
    now = timezone.now()
    if container.published_media_id:
        return PUBLISHED, "Published: Media has been published."
    if now >= container.created_at + CONTAINER_TTL:
        return "EXPIRED", "Expired: The container was not published within 24 hours."
    if now < container.ready_at:
        return "IN_PROGRESS", "In Progress: Media is still being processed."
    if container.error:
        return "ERROR", container.error
    if container.children:
        statuses = [container_status(child) for child in Container.objects.filter(ig_id__in=container.children)]
        for code in ("ERROR", "EXPIRED", "IN_PROGRESS"):
            if code == "ERROR" and (failed := [status for c, status in statuses if c == "ERROR"]):
                return code, failed[0]  # the item's reason, with its error code
            if code in (c for c, _ in statuses):
                return code, f"{code}: a carousel item is {code.lower().replace('_', ' ')}."
    return "FINISHED", "Finished: Media has been uploaded and it is ready to be published."


class PublishRefused(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason  # "unknown" | "carousel_item" | "published" | "not_ready" | "error" | "expired" | "quota"


def media_publish(*, username: str, creation_id: str) -> Post:
    """Make a media of a FINISHED container, at most once per container: the container row is locked,
    and the unique (platform, publish_id) constraint on Post stops a second media even so."""
    with transaction.atomic():
        container = Container.objects.select_for_update().filter(ig_id=creation_id, username=username).first()
        if container is None:
            raise PublishRefused("unknown")
        if container.is_carousel_item:
            raise PublishRefused("carousel_item")
        code, _ = container_status(container)
        if code != "FINISHED":
            raise PublishRefused(
                {"PUBLISHED": "published", "IN_PROGRESS": "not_ready", "ERROR": "error", "EXPIRED": "expired"}[code]
            )
        if instagram_quota_usage(username=username) >= int(settings.LAYERS_SANDBOX_INSTAGRAM_QUOTA_TOTAL):
            raise PublishRefused("quota")
        now = timezone.now()
        media_id = new_numeric_id(1)
        media_type, items = _media_of(container)
        try:
            with transaction.atomic():
                post = Post.objects.create(
                    platform=Platform.INSTAGRAM,
                    username=username,
                    kind=Post.Kind.POST,
                    media_type=media_type,
                    media=items,
                    caption=container.caption,
                    publish_id=container.ig_id,
                    status=PUBLISHED,
                    external_id=media_id,
                    permalink=_permalink(media_id, reel=container.media_type == "REELS"),
                    created_at=now,
                    ready_at=now,
                    published_at=now,
                )
        except IntegrityError:
            raise PublishRefused("published") from None
        container.published_media_id = media_id
        container.save(update_fields=["published_media_id"])
    return post


def _media_of(container: Container) -> tuple[str, list[dict]]:
    if container.media_type == "CAROUSEL":
        children = {c.ig_id: c for c in Container.objects.filter(ig_id__in=container.children)}
        items = [
            {"url": children[i].url, "kind": "video" if children[i].media_type == "VIDEO" else "image"}
            for i in container.children
            if i in children
        ]
        return "carousel", items
    if container.media_type == "REELS":
        return "video", [{"url": container.url, "kind": "video"}]
    return "image", [{"url": container.url, "kind": "image"}]


def _permalink(media_id: str, *, reel: bool) -> str:
    # Instagram shortcodes are the media id in a base64 alphabet.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    number, code = int(media_id), ""
    while number:
        number, rest = divmod(number, 64)
        code = alphabet[rest] + code
    return f"https://www.instagram.com/{'reel' if reel else 'p'}/{code}/"


def deliver_draft(*, username: str, media_type: str, media: list[dict], caption: str) -> Post:
    now = timezone.now()
    return Post.objects.create(
        platform=Platform.INSTAGRAM,
        username=username,
        kind=Post.Kind.DELIVERY,
        media_type=media_type,
        media=media,
        caption=caption,
        publish_id=new_numeric_id(5),
        status=DELIVERED,
        created_at=now,
        ready_at=now,
        published_at=now,
    )


# --- Metrics ------------------------------------------------------------------------------------------

# Meta says a media's insights can be up to 48 h late, and answers an empty data set until they exist. The
# sandbox's Instagram has none in a media's first hour (its like / comment counts are there from the start),
# so clients meet that answer in the normal course of a sync, not only when a test injects it.
INSIGHTS_AFTER = timedelta(hours=1)


def insights_ready(post: Post) -> bool:
    return post.published_at is not None and timezone.now() >= post.published_at + INSIGHTS_AFTER


def engagement(*, external_id: str, published_at: datetime) -> dict[str, int]:
    """Deterministic figures for a published post: a per-post size drawn from its id, growing with its
    age and levelling off after a few days. Same post, same clock → same numbers; never decreasing."""
    seed = int(hashlib.sha256(external_id.encode()).hexdigest()[:12], 16)
    hours = max(0.0, (timezone.now() - published_at).total_seconds() / 3600)
    views = int((1000 + seed % 9000) * (1 - math.exp(-hours / 24)))
    likes = views * (3 + seed % 5) // 100
    return {
        "views": views,
        "likes": likes,
        "comments": likes // (8 + seed % 5),
        "shares": likes // (15 + seed % 7),
        "saved": likes // 10,
        "reach": views * 8 // 10,
    }
