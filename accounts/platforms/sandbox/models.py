"""The sandbox platforms' state. A sandbox user is just a handle (`username`): their platform ids are derived
from it (identities.py), so nothing here stores a user row."""

from django.db import models


class Platform(models.TextChoices):
    TIKTOK = "tiktok"
    INSTAGRAM = "instagram"


class AuthCode(models.Model):
    """An authorization code handed to the redirect_uri: single-use, short-lived, bound to that URI."""

    platform = models.CharField(max_length=16, choices=Platform.choices)
    code = models.CharField(max_length=128, unique=True)
    username = models.CharField(max_length=64)
    client_id = models.CharField(max_length=128)
    redirect_uri = models.TextField()
    scopes = models.CharField(max_length=500)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)


class Token(models.Model):
    """A token the sandbox issued. Only its SHA-256 is kept, as a real platform would."""

    class Kind(models.TextChoices):
        ACCESS = "access"  # TikTok access token
        REFRESH = "refresh"  # TikTok refresh token
        SHORT_LIVED = "short_lived"  # Instagram, 1 h
        LONG_LIVED = "long_lived"  # Instagram, 60 days

    platform = models.CharField(max_length=16, choices=Platform.choices)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    digest = models.CharField(max_length=64, unique=True)
    username = models.CharField(max_length=64)
    scopes = models.CharField(max_length=500)
    issued_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    # "rotated" (TikTok refresh), "revoked" (the app gave it back), "invalidated" (control endpoint)
    revoked_reason = models.CharField(max_length=16, blank=True)

    class Meta:
        indexes = [models.Index(fields=["platform", "username"])]


class Fault(models.Model):
    """The next `remaining` calls attributed to this user fail this way (control endpoint)."""

    class Kind(models.TextChoices):
        RATE_LIMITED = "rate_limited"
        SERVER_ERROR = "server_error"
        TIMEOUT = "timeout"
        REJECT = "reject"
        # Instagram only: the next container is accepted, then fails on Instagram's side (status ERROR,
        # "…with error code 2207001", a server error Meta says to retry with a new container).
        CONTAINER_ERROR = "container_error"

    platform = models.CharField(max_length=16, choices=Platform.choices)
    username = models.CharField(max_length=64)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    remaining = models.PositiveIntegerField()
    created_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["platform", "username", "remaining"])]


class Stall(models.Model):
    """The next `remaining` API calls whose path contains `path_contains` are processed normally, then
    answered only after `seconds`: the window in which crash tests kill a worker that the platform has
    already served (the post exists there) but that has not recorded the answer yet."""

    platform = models.CharField(max_length=16, choices=Platform.choices)
    path_contains = models.CharField(max_length=200)
    seconds = models.FloatField()
    remaining = models.PositiveIntegerField()
    created_at = models.DateTimeField()


class RateWindow(models.Model):
    """Calls counted per (token, endpoint group) in one fixed minute window."""

    platform = models.CharField(max_length=16, choices=Platform.choices)
    key = models.CharField(max_length=128)
    window_start = models.DateTimeField()
    calls = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["platform", "key", "window_start"], name="sandbox_rate_window_unique")
        ]


class Container(models.Model):
    """An Instagram media container: IN_PROGRESS until ready_at, then FINISHED (or ERROR), PUBLISHED once
    media_publish made a post of it, EXPIRED 24 h after creation if never published."""

    ig_id = models.CharField(max_length=32, unique=True)
    username = models.CharField(max_length=64)
    media_type = models.CharField(max_length=16)  # IMAGE | VIDEO | REELS | CAROUSEL
    is_carousel_item = models.BooleanField(default=False)
    url = models.TextField(blank=True)
    caption = models.TextField(blank=True)
    children = models.JSONField(default=list)  # ig_ids of the carousel items
    created_at = models.DateTimeField()
    ready_at = models.DateTimeField()
    error = models.CharField(max_length=200, blank=True)  # set at creation when it will end in ERROR
    published_media_id = models.CharField(max_length=32, blank=True)


class Post(models.Model):
    """Everything the sandbox received for a creator: a TikTok post or inbox draft (one row per init
    call, whatever its fate), an Instagram media (one row per successful media_publish) or an Instagram
    draft delivery. "Published exactly once" is a count of these rows."""

    class Kind(models.TextChoices):
        POST = "post"
        DRAFT = "draft"
        DELIVERY = "delivery"

    platform = models.CharField(max_length=16, choices=Platform.choices)
    username = models.CharField(max_length=64)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    media_type = models.CharField(max_length=16)  # video | image | carousel
    media = models.JSONField(default=list)  # [{"url", "kind"}]
    caption = models.TextField(blank=True)
    privacy_level = models.CharField(max_length=32, blank=True)
    # TikTok publish_id, Instagram container id (one media per container) or delivery id.
    publish_id = models.CharField(max_length=64)
    # TikTok: PROCESSING_DOWNLOAD → PUBLISH_COMPLETE | SEND_TO_USER_INBOX | FAILED; Instagram: PUBLISHED | DELIVERED
    status = models.CharField(max_length=32)
    fail_reason = models.CharField(max_length=64, blank=True)  # TikTok: what FAILED will say once ready
    external_id = models.CharField(max_length=32, blank=True)  # TikTok post id / Instagram media id
    permalink = models.TextField(blank=True)
    created_at = models.DateTimeField()
    ready_at = models.DateTimeField()
    published_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            # The database itself refuses a second media for one Instagram container.
            models.UniqueConstraint(fields=["platform", "publish_id"], name="sandbox_post_publish_id_unique")
        ]
        indexes = [models.Index(fields=["platform", "username", "created_at"])]
