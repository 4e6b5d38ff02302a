"""One account holds at most 1,000 queued posts: a partner's loop scheduling the same post again and again (or
a year of content at once) cannot queue without end. Past the cap the schedule is refused, all targets of it."""

from datetime import timedelta

import pytest
from django.utils import timezone

from scheduling.models import ScheduledPost
from tests.conftest import assert_error
from tests.factories import make_account
from tests.scheduling.test_validation_boundaries import VIDEO, create_container, schedule


def _queue(account, container_id: str, count: int, status: str = "queued") -> None:
    when = timezone.now() + timedelta(days=30)
    ScheduledPost.objects.bulk_create(
        ScheduledPost(
            organization_id=account.organization_id,
            project_id=account.project_id,
            container_id=container_id,
            social_account_id=account.pk,
            mode="publish",
            status=status,
            placement="video",
            scheduled_for=when,
            due_at=when,
            **({"published_at": when} if status == "published" else {}),
        )
        for _ in range(count)
    )


def test_an_account_with_1000_queued_posts_takes_no_more_and_the_whole_schedule_is_refused(owner):
    container = create_container(owner, VIDEO).json()["id"]
    full, other = make_account(owner), make_account(owner)
    _queue(full, container, 999)
    _queue(full, container, 50, status="published")  # only the posts waiting count
    _queue(full, container, 50, status="canceled")

    accepted = schedule(owner, container, [{"socialAccountId": full.pk, "mode": "publish"}])
    assert accepted.status_code == 201, accepted.content

    targets = [{"socialAccountId": other.pk, "mode": "publish"}, {"socialAccountId": full.pk, "mode": "publish"}]
    error = assert_error(schedule(owner, container, targets), 422, "VALIDATION")
    assert list(error["details"]["fields"]) == ["targets.1.socialAccountId"], error
    assert "1000 posts queued" in error["details"]["fields"]["targets.1.socialAccountId"][0], error
    assert ScheduledPost.objects.filter(social_account=other).count() == 0  # all targets or none
    assert ScheduledPost.objects.filter(social_account=full, status="queued").count() == 1000


def test_a_canceled_post_makes_room_again(owner):
    container = create_container(owner, VIDEO).json()["id"]
    account = make_account(owner)
    _queue(account, container, 1000)
    target = [{"socialAccountId": account.pk, "mode": "publish"}]
    assert_error(schedule(owner, container, target), 422, "VALIDATION")

    post = ScheduledPost.objects.filter(social_account=account).first()
    assert owner.client.delete(f"/v1/scheduled-posts/{post.pk}").status_code == 200

    assert schedule(owner, container, target).status_code == 201


@pytest.mark.django_db(transaction=True)
def test_two_schedules_of_an_account_one_post_short_of_the_cap_at_once_queue_one(owner):
    """The count is taken under the account's row lock: the second schedule waits for the first to commit and
    then counts its post, rather than both counting 999 and queueing 1,001."""
    import threading

    from django.db import connection

    from config.api.errors import Validation
    from scheduling import services
    from scheduling.models import ContentContainer
    from tests.concurrency import held_open, wait_until_waiting

    container = ContentContainer.objects.get(pk=create_container(owner, VIDEO).json()["id"])
    account = make_account(owner)
    _queue(account, container.pk, 999)
    when = timezone.now() + timedelta(hours=1)
    target = [services.Target(account.pk, "publish")]
    outcome = {}

    def second():
        try:
            services.posts_schedule(container=container, targets=target, scheduled_for=when)
            outcome["second"] = "queued"
        except Validation:
            outcome["second"] = "refused"
        finally:
            connection.close()

    with held_open(lambda: services.posts_schedule(container=container, targets=target, scheduled_for=when)):
        thread = threading.Thread(target=second)
        thread.start()
        wait_until_waiting("FOR UPDATE")
    thread.join(30)

    assert outcome == {"second": "refused"}
    assert ScheduledPost.objects.filter(social_account=account, status="queued").count() == 1000
