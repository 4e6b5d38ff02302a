"""Reads for the partner API, scoped to the caller's organization: a foreign id is a 404."""

from config.api.errors import NotFound
from scheduling.models import ContentContainer, ScheduledPost


def container_get(*, organization, container_id: str) -> ContentContainer:
    container = ContentContainer.objects.filter(organization=organization, pk=container_id).first()
    if container is None:
        raise NotFound()
    return container


# What a listed post's representation reads (and the pagination's created_at): the dispatcher's
# bookkeeping columns stay in the table, which makes a 50-row page markedly cheaper to read.
POST_FIELDS = (
    "id",
    "container_id",
    "social_account_id",
    "mode",
    "status",
    "scheduled_for",
    "placement",
    "attempts",
    "published_at",
    "external_id",
    "external_url",
    "error_code",
    "error_message",
    "cancel_reason",
    "created_at",
)
METRIC_FIELDS = ("views", "likes", "comments", "shares", "metrics_synced_at")


def scheduled_post_list(*, organization, project_id: str, status=None, social_account_id=None):
    qs = ScheduledPost.objects.filter(organization=organization, project_id=project_id).only(*POST_FIELDS)
    if status:
        qs = qs.filter(status=status)
    if social_account_id:
        qs = qs.filter(social_account_id=social_account_id)
    return qs


def scheduled_post_get(*, organization, post_id: str) -> ScheduledPost:
    post = ScheduledPost.objects.filter(organization=organization, pk=post_id).first()
    if post is None:
        raise NotFound()
    return post


def published_post_list(*, organization, project_id: str):
    """Published posts of the project, including those of accounts disconnected since."""
    return (
        ScheduledPost.objects.filter(
            organization=organization, project_id=project_id, status=ScheduledPost.Status.PUBLISHED
        )
        .select_related("social_account")
        .only(*POST_FIELDS, *METRIC_FIELDS, "social_account", "social_account__platform")
    )
