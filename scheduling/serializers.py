"""Public representations of containers and scheduled posts (API output and event data)."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from config.api.fields import Int64Field, TimestampField, datetime_output
from scheduling.models import CancelReason

# What a canceled post tells the partner, by its cancel_reason (models.CancelReason). Plain sentences: the
# post's canceled_by, which names the staff member or the API key, is support's and never shown.
CANCELED_ERRORS = {
    CancelReason.ACCOUNT_REVOKED: {
        "code": "ACCOUNT_DISCONNECTED",
        "message": "The post was canceled because its account was disconnected.",
    },
    CancelReason.LEASE_RELEASED: {
        "code": "ACCOUNT_DISCONNECTED",
        "message": "The post was canceled because its leased account was released.",
    },
    CancelReason.OFFBOARDED: {
        "code": "ACCOUNT_DISCONNECTED",
        "message": "The post was canceled because the organization was off-boarded and its accounts disconnected.",
    },
    CancelReason.STAFF: {"code": "CANCELED_BY_LAYERS", "message": "Canceled by Layers support."},
}


def post_error(post) -> dict | None:
    """The failure of a `failed` post, or why a `canceled` post was canceled when the partner did not cancel it
    (CANCELED_ERRORS, by its cancel_reason: null for the partner's own DELETE, and for posts canceled before the
    reason was recorded). A post waiting to retry a transient error keeps that error for ops (admin) but shows
    none, nor does a `publishing` post keeping the platform's last refusal of its status checks ("Checking: …"):
    API.md's codes (RATE_LIMITED, PLATFORM_UNAVAILABLE "after retries") are outcomes, and a partner reading
    `queued` or `publishing` with an error would take the post for failed."""
    if post.status == "canceled":
        error = CANCELED_ERRORS.get(post.cancel_reason)
        return dict(error) if error else None
    if post.status != "failed" or not post.error_code:
        return None
    return {"code": post.error_code, "message": post.error_message}


class ContainerOutput(serializers.Serializer):
    id = serializers.CharField(help_text="cnt_…")
    projectId = serializers.CharField(source="project_id")
    mediaType = serializers.ChoiceField(source="media_type", choices=["video", "image", "carousel"])
    mediaUrls = serializers.ListField(source="media_urls", child=serializers.CharField())
    caption = serializers.CharField()
    createdAt = TimestampField(source="created_at")


class PostErrorOutput(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()


class ScheduledPostOutput(serializers.Serializer):
    id = serializers.CharField(help_text="sp_…")
    containerId = serializers.CharField(source="container_id")
    socialAccountId = serializers.CharField(source="social_account_id")
    mode = serializers.ChoiceField(choices=["publish", "draft", "managed"])
    status = serializers.ChoiceField(choices=["queued", "publishing", "published", "failed", "canceled"])
    scheduledFor = TimestampField(source="scheduled_for")
    placement = serializers.SerializerMethodField(
        help_text="Instagram: reels (video), feed (image), carousel — derived from the container's mediaType; "
        "TikTok: video or photo."
    )
    attempts = serializers.IntegerField(
        help_text="How many times Layers has tried to publish the post, counting a try whose worker stopped before "
        "it reached the platform (a deploy, a crash), and each throttled Instagram publish call. The platform's "
        "refusals for now (rate limits, outages, 5xx, timeouts before anything was created) are retried with "
        "backoff (30 s, doubling, then every 5 minutes, or later if the platform asks) for the retry window: "
        "until 60 minutes after scheduledFor (or after the first try, if that was later). When the next try "
        "would fall past it, the post fails (RATE_LIMITED or PLATFORM_UNAVAILABLE, "
        "saying how many attempts over how long). Tries that stopped before reaching the platform are given up "
        "after 5 of them (PLATFORM_UNAVAILABLE). An ops retry of a failed post starts again from 0, with a "
        "window of its own."
    )
    publishedAt = TimestampField(source="published_at", allow_null=True)
    externalId = serializers.SerializerMethodField(
        help_text="The post's id on the platform once published; null for drafts. TikTok gives it only after "
        "moderation: a TikTok post can be published with null here, filled by a later metrics sync (asked "
        "hourly for up to 7 days; posts that are not public never get one). A post of an account revoked, "
        "released or needing a reauth since is filled too while another account of the same TikTok user (or "
        "Layers' pool) keeps the app's authorization; otherwise it stays null. No webhook is sent when it "
        "appears."
    )
    externalUrl = serializers.SerializerMethodField(
        help_text="The post's public URL once published and known (see externalId for when it comes later)."
    )
    error = serializers.SerializerMethodField()

    def get_placement(self, post) -> str | None:
        return post.placement or None

    def get_externalId(self, post) -> str | None:  # noqa: N802
        return post.external_id or None

    def get_externalUrl(self, post) -> str | None:  # noqa: N802
        return post.external_url or None

    @extend_schema_field(
        PostErrorOutput(
            allow_null=True,
            help_text="Why the post failed, or why it was canceled when the partner did not cancel it itself; "
            "null otherwise (queued, publishing, published, and canceled by the partner's own DELETE). "
            "A `failed` post's `code`: CREDENTIAL_INVALID (the token is dead "
            "or lacks the publishing permission; the account is now reauth_required, and the post is not kept "
            "for after the reauth: schedule it again then. Except when the message says the platform had "
            "accepted the post before the token died: it may be live, so check the account first), "
            "ACCOUNT_DISCONNECTED (revoked or released while a worker had the post), "
            "PLATFORM_REJECTED (the platform refused the content or the account; for a managed post, also the "
            "managed provider refusing it or not set up for the project, which the message says Layers staff must "
            "fix), MEDIA_INVALID (the platform "
            "could not fetch or use the media: TikTok's file_format_check_failed, video_pull_failed, "
            "photo_pull_failed, duration_check_failed, frame_rate_check_failed, picture_size_check_failed, "
            "url_ownership_unverified; Instagram's subcodes 2207004 too large, 2207005 "
            "format, 2207009 aspect ratio, 2207023 unknown media type, 2207026 video format, 2207052 not "
            "fetchable, 2207057 thumbnail offset, and codes 36000, 36001, 36003; a caption too long, 36004, is "
            "PLATFORM_REJECTED), RATE_LIMITED "
            "(retried for the retry window, 60 minutes, then `Gave up after N attempts over M minutes (retry "
            "window: 60 minutes): …`; or the creator's daily posting cap, at once: reschedule), "
            "PLATFORM_UNAVAILABLE (retried for the retry window in the same way; or the answer to the publishing "
            "request was lost, and the post was not sent again so that it cannot appear twice: check the account "
            "before retrying; or Layers' database was restored from a backup and the post may have been published "
            "since, which the message says: the same). `message` says why, with the "
            "platform's own words and code where it gave them, the code in parentheses when the words do not name "
            "it: `The platform could not publish the post: TikTok refused the caption. (spam_risk_text)`. "
            "A `canceled` post's `code`: ACCOUNT_DISCONNECTED when its account left the project while the post "
            "was queued (revoked by DELETE /v1/social-accounts/{id} or by Layers, its lease released, the "
            "organization off-boarded: the message says which), CANCELED_BY_LAYERS when Layers support canceled "
            "it (`Canceled by Layers support.`); null when the partner canceled it, and for posts canceled "
            "before these two codes were introduced, whose reason was not recorded. A canceled post is never "
            "queued again: schedule it anew.",
        )
    )
    def get_error(self, post):
        return post_error(post)

    def to_representation(self, post):
        # The fields above describe the output (and the OpenAPI schema); this writes it out directly,
        # because DRF's field-by-field walk was most of the time of a 50-row page and of a publish's event.
        # tests/perf/test_output_equivalence.py checks that both give the same output.
        return {
            "id": str(post.pk),
            "containerId": str(post.container_id),
            "socialAccountId": str(post.social_account_id),
            "mode": str(post.mode),
            "status": str(post.status),
            "scheduledFor": datetime_output(post.scheduled_for),
            "placement": post.placement or None,
            "attempts": int(post.attempts),
            "publishedAt": datetime_output(post.published_at),
            "externalId": post.external_id or None,
            "externalUrl": post.external_url or None,
            "error": post_error(post),
        }


class MetricsOutput(serializers.Serializer):
    views = Int64Field(allow_null=True)
    likes = Int64Field(allow_null=True)
    comments = Int64Field(allow_null=True)
    shares = Int64Field(allow_null=True)
    syncedAt = TimestampField(source="metrics_synced_at", allow_null=True)


class PublishedPostOutput(ScheduledPostOutput):
    platform = serializers.ChoiceField(choices=["tiktok", "instagram"], source="social_account.platform")
    metrics = MetricsOutput(source="*")

    def to_representation(self, post):
        return {
            **super().to_representation(post),
            "platform": str(post.social_account.platform),
            "metrics": {
                "views": _int_or_none(post.views),
                "likes": _int_or_none(post.likes),
                "comments": _int_or_none(post.comments),
                "shares": _int_or_none(post.shares),
                "syncedAt": datetime_output(post.metrics_synced_at),
            },
        }


def _int_or_none(value) -> int | None:
    return None if value is None else int(value)


def scheduled_post_data(post) -> dict:
    return dict(ScheduledPostOutput(post).data)
