"""The baseline of `bench_publish`: the textbook design this project does not use — one Celery task per
post, queued at scheduling time with `eta=scheduledFor`. Loaded only into bench workers (`celery worker
-I scheduling.bench.baseline_tasks`).

The task claims its one post with the same conditional update as the dispatcher and then runs the same
publish service, so the comparison is between the two ways of getting due posts to the publisher, on the
same publish code. (The real reasons against ETAs are in DESIGN.md: brokers lose or repeat long ETAs,
and every scheduled post would sit in worker memory until it is due.)"""

from celery import shared_task
from django.utils import timezone

from scheduling import services
from scheduling.models import ScheduledPost


@shared_task(name="bench.publish_at_eta")
def publish_at_eta(post_id: str) -> str:
    now = timezone.now()
    claimed = ScheduledPost.objects.filter(pk=post_id, status=ScheduledPost.Status.QUEUED, due_at__lte=now).update(
        **services.publishing_claim(now)
    )
    if not claimed:
        return "skipped"
    outcome = services.post_publish(post_id=post_id)
    if outcome == "processing":
        resolve_later.apply_async((post_id,), countdown=services.STATUS_POLL_FIRST.total_seconds())
    return outcome


@shared_task(name="bench.resolve_later")
def resolve_later(post_id: str) -> str:
    outcome = services.post_resolve(post_id=post_id)
    if outcome == "processing":
        resolve_later.apply_async((post_id,), countdown=services.STATUS_POLL_FIRST.total_seconds())
    return outcome
