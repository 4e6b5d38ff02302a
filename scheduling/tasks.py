"""Celery tasks of scheduling: ids in, one service call, retry policy only. The periodic tick is the
trigger; the rows are the work (a lost message is found again by the next tick)."""

from collections.abc import Iterator

from celery import shared_task
from django.conf import settings

from config import clock
from config.batches import batches
from scheduling import services

# The tick hands claimed posts to workers a few per message when many are waiting: one message per post
# made the broker round trips a visible share of a publish, while many posts per message would leave
# threads idle at the end of a burst. With few posts waiting, each goes out alone, so all start at once.
POSTS_PER_TASK_MAX = 5
WAITING_PER_TASK = 64
# Posts taken for preparation per tick (every 2 s), up to services.PREPARE_IN_FLIGHT_MAX unfinished at once.
PREPARE_PER_TICK = 100


def _chunks(ids: list[str], *, waiting: int) -> Iterator[list[str]]:
    return batches(ids, max(1, min(POSTS_PER_TASK_MAX, waiting // WAITING_PER_TASK)))


@shared_task
def dispatch_due_posts(batch: int = 500) -> int:
    """Periodic tick: claim due posts and posts whose status check is due, hand their ids to workers.

    A burst larger than LAYERS_DISPATCH_MAX_WAITING is handed out over several ticks, as workers take
    posts: a claimed post's lease runs from its claim, and it must not expire while the post waits in the
    broker (the resolver would then queue it again while it is still on its way to a worker).

    Nothing on a worker whose clock is off from the database's (config/clock.py, services.CLOCK_OFF_CLAIMS):
    beat sends the next tick to any worker, and the others claim the posts."""
    if not clock.clock_trustworthy(refusing=services.CLOCK_OFF_CLAIMS):
        return 0
    claimed = 0
    waiting = services.posts_claimed_waiting()
    while waiting < settings.LAYERS_DISPATCH_MAX_WAITING:
        limit = min(batch, settings.LAYERS_DISPATCH_MAX_WAITING - waiting)
        ids = services.posts_claim_due(limit=limit)
        waiting += len(ids)
        for chunk in _chunks(ids, waiting=waiting):
            publish_posts.delay(chunk)
        claimed += len(ids)
        if len(ids) < limit:
            break
    # Bounded by the checks already handed out and not finished (services.posts_claim_for_resolution); each
    # message carries its claim, so one that waited past it asks the platform nothing (post_resolve).
    for post_id, claim in services.posts_claim_checks(limit=batch):
        resolve_post.delay(post_id, claim)
        claimed += 1
    # Last, and only while workers keep up: posts due now come before containers for posts due later.
    if waiting < WAITING_PER_TASK:
        for post_id in services.posts_claim_for_preparation(limit=PREPARE_PER_TICK):
            prepare_post.delay(post_id)
            claimed += 1
    return claimed


@shared_task
def publish_posts(post_ids: list[str]) -> dict[str, str]:
    """Publish a share of one tick's claim."""
    return services.posts_publish(post_ids=post_ids)


@shared_task
def publish_post(post_id: str) -> str:
    return services.post_publish(post_id=post_id)


@shared_task
def prepare_post(post_id: str) -> str:
    return services.post_prepare(post_id=post_id)


@shared_task
def resolve_post(post_id: str, claim: str | None = None) -> str:
    """Check a post handed out by the tick. `claim`: its claim's token; none in a message of the previous
    release."""
    return services.post_resolve(post_id=post_id, claim=claim)


@shared_task(name="globalPlatformPostsSync")
def global_platform_posts_sync() -> int:
    """Refresh metrics of published posts of connected accounts that have their distribution layers."""
    return services.posts_sync_metrics()


@shared_task(bind=True)
def posts_retry_by_staff(
    self, post_ids: list[str], staff_user_id: int, mark, description: str, checked_on_platform: bool = False
) -> dict:
    """The rest of a staff retry of many posts (admin: more than one web request does), a batch at a time."""
    from accounts.admin_bulk import by_a_worker
    from scheduling.models import ScheduledPost

    def retry(ids, actor, mark):
        return services.posts_retry(
            post_ids=ids, actor=actor, checked_on_platform=checked_on_platform, attempted_after=mark
        )

    return by_a_worker(
        model=ScheduledPost,
        ids=post_ids,
        staff_user_id=staff_user_id,
        mark=mark,
        description=description,
        service=retry,
        task=self,
        task_args=(checked_on_platform,),
    )


@shared_task(bind=True)
def posts_cancel_by_staff(self, post_ids: list[str], staff_user_id: int, mark, description: str) -> dict:
    """The rest of a staff cancel of many posts (admin: more than one web request does), a batch at a time."""
    from accounts.admin_bulk import by_a_worker
    from scheduling.models import ScheduledPost

    return by_a_worker(
        model=ScheduledPost,
        ids=post_ids,
        staff_user_id=staff_user_id,
        mark=mark,
        description=description,
        service=lambda ids, actor, mark: services.posts_cancel(post_ids=ids, actor=actor),
        task=self,
    )
