"""Celery tasks of scheduling: ids in, one service call, retry policy only. The periodic tick is the
trigger; the rows are the work (a lost message is found again by the next tick)."""

from celery import shared_task

from scheduling import services


@shared_task
def dispatch_due_posts(batch: int = 500) -> int:
    """Periodic tick: claim due posts and posts whose status check is due, hand their ids to workers."""
    claimed = 0
    while True:
        ids = services.posts_claim_due(limit=batch)
        for post_id in ids:
            publish_post.delay(post_id)
        claimed += len(ids)
        if len(ids) < batch:
            break
    for post_id in services.posts_claim_for_resolution(limit=batch):
        resolve_post.delay(post_id)
        claimed += 1
    return claimed


@shared_task
def publish_post(post_id: str) -> str:
    return services.post_publish(post_id=post_id)


@shared_task
def resolve_post(post_id: str) -> str:
    return services.post_resolve(post_id=post_id)


@shared_task(name="globalPlatformPostsSync")
def global_platform_posts_sync() -> int:
    """Refresh metrics of published posts of connected accounts that have their distribution layers."""
    return services.posts_sync_metrics()
