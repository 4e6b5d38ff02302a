"""Partner API of scheduling: content containers, schedules, scheduled posts, published posts."""

from urllib.parse import urlsplit

from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response

from accounts import selectors as account_selectors
from accounts.platforms.instagram import CAPTION_MAX as INSTAGRAM_CAPTION_MAX
from accounts.platforms.tiktok import PHOTO_DESCRIPTION_MAX, VIDEO_TITLE_MAX
from config.api.errors import Validation
from config.api.fields import AwareDateTimeField, StrictSerializer
from config.api.ids import is_valid
from config.api.pagination import paginate, parse_filters
from config.api.returnurl import url_shape_problem
from config.api.schema import IDEMPOTENCY_PARAMETER, errors, list_schema
from config.api.views import ApiView
from scheduling import selectors, services
from scheduling.serializers import ContainerOutput, PublishedPostOutput, ScheduledPostOutput

MEDIA_COUNTS = {"video": (1, 1), "image": (1, 1), "carousel": (2, 35)}
# The longest caption any target takes (TikTok's photo descriptions); each target is held to its own
# platform's limit when it is scheduled (services._caption_problem).
MAX_CAPTION = max(PHOTO_DESCRIPTION_MAX, VIDEO_TITLE_MAX, INSTAGRAM_CAPTION_MAX)
MAX_TARGETS = 100
# A URL whose path ends so is a video, or an image, whatever it serves. A container's mediaType picks the
# platform call (a video init or a photo post on TikTok; a reel or an image on Instagram; a carousel's items
# are images on both), so a URL of the other kind would only fail at the post's time, as MEDIA_INVALID.
# A path with no such extension (a CDN id) is taken as it is.
VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".webm")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".heic", ".heif")
# mediaType → (the extensions it cannot take, what a URL with one is told)
WRONG_KIND = {
    "video": (
        IMAGE_EXTENSIONS,
        "A video container takes a video, and this URL is an image: post it as a container of mediaType image.",
    ),
    "image": (
        VIDEO_EXTENSIONS,
        "An image container takes an image, and this URL is a video: post it as a container of mediaType video.",
    ),
    "carousel": (
        VIDEO_EXTENSIONS,
        "A carousel takes images only (a photo post on TikTok, image items on Instagram), and this URL is a "
        "video: post a video as a container of mediaType video.",
    ),
}


class HttpsUrlField(serializers.URLField):
    """An absolute https URL a platform can fetch as it is. Django's URL validator lets through URLs that no
    one can fetch or that parsers read differently (port 99999, `https://cdn.test\\@evil.test/`, a
    `user:secret@` that would be stored and handed to every platform): those are refused here, by their shape
    only (url_shape_problem; nothing is fetched or resolved)."""

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not value.lower().startswith("https://"):
            raise serializers.ValidationError("Media URLs must use https.")
        problem = url_shape_problem(value)
        if problem:
            raise serializers.ValidationError(problem)
        return value


class ContainerInput(StrictSerializer):
    mediaType = serializers.ChoiceField(choices=list(MEDIA_COUNTS))
    mediaUrls = serializers.ListField(
        child=HttpsUrlField(max_length=2048),
        min_length=1,
        max_length=35,
        help_text="Absolute https URLs, without user information (credentials), spaces, control characters or "
        "backslashes, on a valid port. video and image: exactly one URL; carousel: 2 to 35 images (Instagram "
        "takes at most 10). "
        "A carousel is a photo carousel on both platforms (TikTok's photo post; each Instagram item is sent as "
        "an image): do not put videos in one. A URL whose path ends in an extension of the other kind (in any "
        "case; the query string does not count) → 422 on `mediaUrls.<i>`: a video extension (.mp4, .mov, .m4v, "
        ".webm) in an image or a carousel, an image extension (.jpg, .jpeg, .png, .webp, .gif, .heic, .heif) in "
        "a video. A path with neither is taken as it is.",
    )
    # Kept exactly as sent: DRF trims by default, and a caption's leading or trailing line breaks are the
    # partner's layout, not noise.
    caption = serializers.CharField(
        max_length=MAX_CAPTION,
        required=False,
        allow_blank=True,
        default="",
        trim_whitespace=False,
        help_text="At most 4000 characters, the longest any target takes; each target is held to its "
        "platform's limit when it is scheduled (422 on `targets.<i>.socialAccountId`): TikTok counts UTF-16 "
        "code units (an emoji counts two), at most 2200 in a video's title and 4000 in a photo post's "
        "description; Instagram takes at most 2200 characters, and in mode publish at most 30 hashtags and "
        "20 @mentions.",
    )

    def validate(self, data):
        media_type = data["mediaType"]
        low, high = MEDIA_COUNTS[media_type]
        if not low <= len(data["mediaUrls"]) <= high:
            # Said as a person would: "An image takes exactly 1 URL.", "A carousel takes 2 to 35 URLs."
            expected = f"exactly {low}" if low == high else f"{low} to {high}"
            article = "An" if media_type[0] in "aeiou" else "A"
            urls = "URL" if high == 1 else "URLs"
            raise serializers.ValidationError({"mediaUrls": [f"{article} {media_type} takes {expected} {urls}."]})
        wrong, message = WRONG_KIND[media_type]
        mismatched = {
            index: [message]
            for index, url in enumerate(data["mediaUrls"])
            if urlsplit(url).path.lower().endswith(wrong)
        }
        if mismatched:
            raise serializers.ValidationError({"mediaUrls": mismatched})
        return data


_PLACEMENT_REASON = (
    "Not a field: Instagram's placement follows the container's mediaType (video → reels, image → feed, "
    "carousel), and TikTok has none."
)


class TargetInput(StrictSerializer):
    rejected_fields = {"placement": _PLACEMENT_REASON, "feed": _PLACEMENT_REASON, "reels": _PLACEMENT_REASON}
    socialAccountId = serializers.CharField(max_length=64)
    mode = serializers.ChoiceField(
        choices=["publish", "draft", "managed"],
        help_text="publish: auto-post at scheduledFor; draft: send to the creator's app (TikTok inbox; on "
        "Instagram, delivered to the creator for manual posting by Layers' draft delivery service — Instagram "
        "has no draft API — so 422 where none is configured); managed: the project's managed-distribution "
        "provider (422 if none is configured; at most 2 calls in flight per provider and none for 1 minute after "
        "5 calls in a row without an answer: a post held back is sent seconds later, without counting an "
        "attempt).",
    )


class ScheduleInput(StrictSerializer):
    rejected_fields = TargetInput.rejected_fields
    targets = TargetInput(many=True, allow_empty=False, max_length=MAX_TARGETS)
    scheduledFor = AwareDateTimeField(
        help_text="RFC 3339 with a timezone: `2026-04-20T17:00:00Z` or an offset (`2026-04-20T19:00:00+02:00`); "
        "seconds required, a fraction allowed (`17:00:00.250Z`), a space or a lower-case `t`/`z` accepted. "
        "At most 5 minutes in the past, at most 365 days ahead."
    )


class ContainerCreateApi(ApiView):
    @extend_schema(
        request=ContainerInput,
        responses={201: ContainerOutput, **errors(400, 422)},
        parameters=[IDEMPOTENCY_PARAMETER],
        operation_id="content_create",
        tags=["content and scheduling"],
        description=(
            "Create a content container: the media and caption that scheduled posts publish. Layers never "
            "downloads the `mediaUrls`: it hands them to the platform at publish time and the platform "
            "fetches them (TikTok pulls the video from the URL, Instagram's servers fetch each item). So they "
            "must stay publicly reachable over https until the posts are published; a URL the platform "
            "cannot fetch fails the post with `MEDIA_INVALID`. No size or type check happens here beyond the "
            "URL's shape (absolute https, a valid port, no user information, no spaces, control characters or "
            "backslashes: 422 on `mediaUrls.<i>`), the number of URLs per mediaType, and the URLs' extensions "
            "against the mediaType: a path ending in a video extension in an image or a carousel (a carousel is "
            "images only), or in an image extension in a video, is 422 on `mediaUrls.<i>`."
        ),
    )
    def post(self, request, projectId: str):
        project = account_selectors.project_get(organization=self.organization, project_id=projectId)
        data = ContainerInput(data=request.data)
        data.is_valid(raise_exception=True)
        container = services.container_create(
            project=project,
            media_type=data.validated_data["mediaType"],
            media_urls=data.validated_data["mediaUrls"],
            caption=data.validated_data["caption"],
        )
        return Response(ContainerOutput(container).data, status=201)


class ContainerDetailApi(ApiView):
    @extend_schema(
        responses={200: ContainerOutput, **errors()}, operation_id="content_get", tags=["content and scheduling"]
    )
    def get(self, request, containerId: str):
        container = selectors.container_get(organization=self.organization, container_id=containerId)
        return Response(ContainerOutput(container).data)


class ScheduleApi(ApiView):
    @extend_schema(
        request=ScheduleInput,
        responses={
            201: inline_serializer("ScheduleResult", {"scheduledPosts": ScheduledPostOutput(many=True)}),
            **errors(400, 422),
        },
        parameters=[IDEMPOTENCY_PARAMETER],
        operation_id="content_schedule",
        tags=["content and scheduling"],
        description=(
            "Schedule the container to every target: all are created or none (422 names the failing target, "
            "e.g. `targets.1.socialAccountId`). Targets must be accounts of the container's project that are "
            "not disconnected (reauth_required is accepted: the post publishes if the customer reauthorizes "
            "in time, and fails with CREDENTIAL_INVALID otherwise). Any `placement`, `feed` or `reels` field "
            "is rejected: Instagram placement follows the mediaType. Unknown fields are rejected. An Instagram "
            "target in `draft` mode is refused (422 on `targets.<i>.mode`) where no draft delivery service is "
            "configured: Instagram has no draft API, and such a post could never be delivered. A target on a "
            "connected TikTok account whose grant lacks the scope of its mode (video.publish for `publish`, "
            "video.upload for `draft`; the customer unticked it, or a reauth asked for fewer scopes) is refused "
            "(422 on `targets.<i>.mode`, naming the scope: a reauth granting it lifts the refusal); an account "
            "whose granted scopes are unknown is accepted. A TikTok target "
            "is refused (422 on `targets.<i>.socialAccountId`) when the caption is too long for TikTok, which "
            "counts UTF-16 code units (an emoji counts two): at most 2200 in a video's title (mode publish; "
            "an inbox video takes no caption), 4000 in a photo post's description; a `managed` post is held to "
            "the same numbers in characters. An Instagram target is "
            "refused (422 on `targets.<i>.socialAccountId`) when the container is a carousel of more than 10 "
            "items: Instagram takes at most 10, when the caption is over 2200 characters (any mode: the post "
            "ends on Instagram), and in `publish` mode when the caption has more than 30 "
            "hashtags (`#` and a word, not only digits) or more than 20 @mentions (`@` and a handle; an e-mail "
            "address is none): Instagram refuses such a post. One account holds at most "
            f"{services.MAX_QUEUED_POSTS_PER_ACCOUNT} queued posts: a target on an account with that many waiting "
            "is refused (422 on `targets.<i>.socialAccountId`) until some are published or canceled. Instagram "
            "posts in `publish` mode have their media sent to Instagram up to 15 minutes before scheduledFor, "
            "so that Instagram has processed it when the post is due; the post stays `queued` and cancelable "
            "until then, and a canceled post never appears."
        ),
    )
    def post(self, request, containerId: str):
        container = selectors.container_get(organization=self.organization, container_id=containerId)
        data = ScheduleInput(data=request.data)
        data.is_valid(raise_exception=True)
        posts = services.posts_schedule(
            container=container,
            targets=[services.Target(t["socialAccountId"], t["mode"]) for t in data.validated_data["targets"]],
            scheduled_for=data.validated_data["scheduledFor"],
        )
        return Response({"scheduledPosts": ScheduledPostOutput(posts, many=True).data}, status=201)


NOT_AN_ACCOUNT_OF_THE_PROJECT = "No social account with this id in this project."


class ScheduledPostFilters(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=["queued", "publishing", "published", "failed", "canceled"], required=False
    )
    socialAccountId = serializers.CharField(max_length=64, required=False)

    def validate_socialAccountId(self, value):  # noqa: N802
        # A value that can name no account (another type's id, upper case) would list nothing: a dashboard
        # then shows "no posts" for the partner's typo. Refused as every unknown filter value is.
        if not is_valid("sa", value):
            raise serializers.ValidationError(NOT_AN_ACCOUNT_OF_THE_PROJECT)
        return value


class ScheduledPostListApi(ApiView):
    @list_schema(
        ScheduledPostOutput,
        "ScheduledPostPage",
        operation_id="scheduled_posts_list",
        tags=["content and scheduling"],
        parameters=[
            OpenApiParameter("status", str, enum=["queued", "publishing", "published", "failed", "canceled"]),
            OpenApiParameter(
                "socialAccountId",
                str,
                description="Only the posts to this account (`sa_…`) of the project, disconnected ones included. "
                "An id that is no account of this project (another project's, another organization's, unknown, "
                "malformed) is 422, as an unknown value of any filter is.",
            ),
        ],
    )
    def get(self, request, projectId: str):
        filters = parse_filters(request, ScheduledPostFilters)
        account_id = filters.get("socialAccountId")
        qs = selectors.scheduled_post_list(
            organization=self.organization,
            project_id=projectId,
            status=filters.get("status"),
            social_account_id=account_id,
        )

        def parent_check():
            # Rows prove the project and the account are the organization's: only an empty page reads them.
            self.check_project(projectId)
            if account_id and not account_selectors.social_account_in_project(
                organization=self.organization, project=projectId, account_id=account_id
            ):
                raise Validation({"socialAccountId": [NOT_AN_ACCOUNT_OF_THE_PROJECT]})

        return paginate(request, qs, lambda rows: ScheduledPostOutput(rows, many=True).data, parent_check=parent_check)


class ScheduledPostDetailApi(ApiView):
    @extend_schema(
        responses={200: ScheduledPostOutput, **errors()},
        operation_id="scheduled_posts_get",
        tags=["content and scheduling"],
    )
    def get(self, request, postId: str):
        post = selectors.scheduled_post_get(organization=self.organization, post_id=postId)
        return Response(ScheduledPostOutput(post).data)

    @extend_schema(
        responses={200: ScheduledPostOutput, **errors(r409="POST_NOT_CANCELABLE: the post is not queued")},
        operation_id="scheduled_posts_cancel",
        tags=["content and scheduling"],
        description="Cancel a queued post. Any other status → 409 POST_NOT_CANCELABLE.",
    )
    def delete(self, request, postId: str):
        post = selectors.scheduled_post_get(organization=self.organization, post_id=postId)
        post = services.post_cancel(post_id=post.pk, api_key=request.auth)
        return Response(ScheduledPostOutput(post).data)


class PublishedPostListApi(ApiView):
    @list_schema(
        PublishedPostOutput,
        "PublishedPostPage",
        operation_id="posts_list",
        tags=["content and scheduling"],
        description=(
            "Published posts, newest first, including those of accounts disconnected since (their metrics are "
            "no longer synced). Metrics are refreshed by the periodic globalPlatformPostsSync for posts in mode "
            "`publish`, hourly within the metrics window (30 days from publishing by default) and daily after "
            "it (`syncedAt` says when they were read): a `managed` post's externalId is its provider's and a draft has "
            "none, so their metrics stay null. A TikTok account whose token lacks video.list gets none (it "
            "stays connected and keeps posting). A figure is null while it is unknown: never synced, or never "
            "given by the platform (Instagram's insights can be up to 48 h late, and a token without "
            "instagram_business_manage_insights reads only the like and comment counts). A figure the platform "
            "does not give at a later sync keeps its last value, never 0; syncedAt is the last sync that got any."
        ),
    )
    def get(self, request, projectId: str):
        qs = selectors.published_post_list(organization=self.organization, project_id=projectId)
        return paginate(
            request,
            qs,
            lambda rows: PublishedPostOutput(rows, many=True).data,
            time_field="published_at",
            parent_check=lambda: self.check_project(projectId),
        )
