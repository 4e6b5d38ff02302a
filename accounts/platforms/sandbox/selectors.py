"""Reads of what the sandbox received, for the control endpoint and for tests."""

from .models import Post


def posts(*, platform: str, username: str | None = None) -> list[Post]:
    """Every post, draft and delivery the sandbox received for that platform (and handle), oldest first."""
    rows = Post.objects.filter(platform=platform)
    if username is not None:
        rows = rows.filter(username=username.strip().lstrip("@").lower())
    return list(rows.order_by("created_at", "id"))


def post_as_dict(post: Post) -> dict:
    return {
        "platform": post.platform,
        "username": post.username,
        "kind": post.kind,
        "mediaType": post.media_type,
        "media": post.media,
        "caption": post.caption,
        "privacyLevel": post.privacy_level or None,
        "publishId": post.publish_id,
        "status": post.status,
        "failReason": post.fail_reason or None,
        "externalId": post.external_id or None,
        "permalink": post.permalink or None,
        "createdAt": post.created_at.isoformat(),
        "publishedAt": post.published_at.isoformat() if post.published_at else None,
    }
