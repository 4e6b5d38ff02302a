"""The outcome rule of every fault-injection test: each scheduled post ends published exactly once on the
platform, or failed with one of API.md's codes; never posted twice, never lost, never left in flight."""

from collections import Counter
from dataclasses import asdict, dataclass

from accounts.platforms.sandbox.models import Post as SandboxPost
from scheduling.models import ScheduledPost

FAILURE_CODES = {
    "CREDENTIAL_INVALID",
    "ACCOUNT_DISCONNECTED",
    "PLATFORM_REJECTED",
    "MEDIA_INVALID",
    "RATE_LIMITED",
    "PLATFORM_UNAVAILABLE",
}


@dataclass
class Outcomes:
    posts: int = 0
    published_once: int = 0
    failed_with_code: int = 0
    duplicates: int = 0  # posts that exist more than once on the platform
    lost: int = 0  # reported published but absent from the platform, failed without a code, or vanished
    stuck: int = 0  # still queued or publishing after recovery

    @property
    def losses(self) -> int:
        return self.duplicates + self.lost + self.stuck

    def as_figures(self) -> dict:
        return {
            "posts": self.posts,
            "publishedOnce": self.published_once,
            "failedWithCode": self.failed_with_code,
            "duplicates": self.duplicates,
            "lost": self.lost,
            "stuck": self.stuck,
        }

    def as_dict(self) -> dict:
        return asdict(self)


def tally(post_ids: list[str]) -> Outcomes:
    """Compare our rows with what the sandbox platform received. Every post of a test has its own caption,
    so the platform's copies of a post are the sandbox rows with that caption."""
    rows = {
        p.pk: p for p in ScheduledPost.objects.select_related("container", "social_account").filter(pk__in=post_ids)
    }
    captions = {p.container.caption for p in rows.values()}
    copies = Counter(
        (platform, caption)
        for platform, caption in SandboxPost.objects.filter(caption__in=captions).values_list("platform", "caption")
    )
    externals = {
        (platform, caption): external_id
        for platform, caption, external_id in SandboxPost.objects.filter(caption__in=captions).values_list(
            "platform", "caption", "external_id"
        )
    }
    out = Outcomes(posts=len(post_ids))
    for post_id in post_ids:
        row = rows.get(post_id)
        if row is None:
            out.lost += 1
            continue
        key = (row.social_account.platform, row.container.caption)
        n = copies[key]
        if n > 1:
            out.duplicates += 1
        elif row.status in (ScheduledPost.Status.QUEUED, ScheduledPost.Status.PUBLISHING):
            out.stuck += 1
        elif row.status == ScheduledPost.Status.PUBLISHED:
            if n == 1 and row.external_id and row.external_id == externals[key]:
                out.published_once += 1
            else:
                out.lost += 1
        elif row.status == ScheduledPost.Status.FAILED and row.error_code in FAILURE_CODES:
            out.failed_with_code += 1
        else:
            out.lost += 1
    return out
