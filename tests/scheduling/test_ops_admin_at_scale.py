"""Ops after a platform outage: the failed posts of the day (tens of thousands, across hundreds of
organizations) are listed with a filter, "Select all" ticked and Go pressed, once, from one web request.

The request does the first LAYERS_ADMIN_ACTION_ROWS rows itself, in batches (one transaction each, not one
per post), and hands the rest to a worker, a few thousand ids per task; it then says, in a few messages,
how many it did, how many it left alone and why, and how many the worker does. Retrying 2,000 posts one by
one took 15 s (7.7 ms a post: 40,000 would take five minutes, past any proxy's timeout and a deploy's grace)
and the next page carried one message per post (7 MB for 40,000)."""

import re
from datetime import timedelta
from html import unescape

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.models import LogEntry
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.admin_bulk import ROW_MESSAGES
from accounts.models import SocialAccount
from scheduling import services
from scheduling.models import ScheduledPost, ScheduledPostAttempt
from tests.concurrency import run_in_threads
from tests.factories import make_account
from tests.platform_helpers import held_tasks
from tests.staff import messages_of, staff_login, staff_member, superuser

POSTS = "/admin/scheduling/scheduledpost/"


@pytest.fixture
def ops(db):
    return staff_login(Client(), superuser())


def seed(tenant, count: int, *, accounts: int = 10, **fields) -> list[str]:
    """`count` posts of `tenant` spread over `accounts` connected accounts, written in bulk (ids in order)."""
    container = services.container_create(
        project=tenant.project, media_type="video", media_urls=["https://cdn.acme.test/c.mp4"], caption=""
    )
    owners = [make_account(tenant) for _ in range(accounts)]
    now = timezone.now() - timedelta(hours=1)
    rows = [
        ScheduledPost(
            organization=tenant.org,
            project=tenant.project,
            container=container,
            social_account=owners[n % accounts],
            mode="publish",
            scheduled_for=now,
            due_at=now,
            **fields,
        )
        for n in range(count)
    ]
    return [post.pk for post in ScheduledPost.objects.bulk_create(rows, batch_size=5000)]


def select_all(client: Client, action: str, query: str, **extra):
    """Tick one row, "Select all" the filtered list and press Go with `action`, as the list's form posts it."""
    first = ScheduledPost.objects.order_by("pk").values_list("pk", flat=True).first()
    data = {"action": action, ACTION_CHECKBOX_NAME: [first], "select_across": "1", "index": "0", **extra}
    return client.post(POSTS + query, data, follow=True)


def retried_count(messages: list[str]) -> int:
    """How many posts the messages say were queued again: counted in one message, or one message each."""
    text = " ".join(messages)
    counted = re.search(r"Scheduled posts: ([\d,]+) queued again", text)
    if counted:
        return int(counted.group(1).replace(",", ""))
    return len(re.findall(r"Scheduled post sp_\w+: queued again", text))


def run_worker(held) -> None:
    """Run what the request queued, as a worker would (held_tasks kept it)."""
    for task, args in held:
        task.run(*args)


def test_retrying_a_whole_outage_does_the_first_rows_in_the_request_and_hands_the_rest_to_a_worker(
    owner, sibling, ops, settings
):
    settings.LAYERS_ADMIN_ACTION_ROWS = 300
    retryable = seed(owner, 1_000, status="failed", error_code="PLATFORM_REJECTED", attempts=1)
    unknown = seed(
        sibling,
        40,
        status="failed",
        error_code="PLATFORM_UNAVAILABLE",
        publish_attempted_at=timezone.now() - timedelta(hours=1),
    )

    with held_tasks() as held, CaptureQueriesContext(connection) as statements:
        done = select_all(ops, "retry_posts", "?status__exact=failed")

    assert done.status_code == 200
    # The request did what its budget allows, in a few statements per batch, not several per post.
    assert ScheduledPost.objects.filter(status="queued").count() <= settings.LAYERS_ADMIN_ACTION_ROWS
    assert len(statements.captured_queries) < 120, len(statements.captured_queries)
    told = messages_of(done)
    assert len(told) <= 3 + ROW_MESSAGES, told  # the few left alone in the request may be named, one each
    in_request = ScheduledPost.objects.filter(status="queued").count()
    assert f"Scheduled posts: {in_request:,} queued again" in " ".join(told), told
    handed = len(retryable) + len(unknown) - settings.LAYERS_ADMIN_ACTION_ROWS
    assert any(f"{handed:,} more" in m and "worker" in m for m in told), told

    run_worker(held)

    assert ScheduledPost.objects.filter(pk__in=retryable, status="queued").count() == len(retryable)
    # The ones that may already be on the platform stay failed, whoever retried them.
    assert ScheduledPost.objects.filter(pk__in=unknown, status="failed").count() == len(unknown)
    # Each post was queued again once, by the staff member, and its history says so.
    staff_retries = ScheduledPostAttempt.objects.filter(outcome="staff_retry")
    assert staff_retries.count() == len(retryable)
    assert staff_retries.values("post_id").distinct().count() == len(retryable)
    assert LogEntry.objects.filter(object_id__in=retryable).count() == len(retryable)
    assert not LogEntry.objects.filter(object_id__in=unknown).exists()


def test_the_left_alone_are_counted_by_reason_not_listed_one_message_each(owner, ops, settings):
    settings.LAYERS_ADMIN_ACTION_ROWS = 2_000
    seed(owner, 30, status="failed", error_code="PLATFORM_REJECTED")
    seed(owner, 60, status="failed", error_code="CREDENTIAL_INVALID", publish_id="v_pub_1")
    gone = make_account(owner, status="disconnected")
    orphans = seed(owner, 25, status="failed", error_code="PLATFORM_REJECTED")
    ScheduledPost.objects.filter(pk__in=orphans).update(social_account=gone)

    with held_tasks():
        done = select_all(ops, "retry_posts", "?status__exact=failed")

    told = messages_of(done)
    assert len(told) <= 4, told
    text = " ".join(told)
    assert "Scheduled posts: 30 queued again" in text
    assert "60 left alone" in text and "may already be on the platform" in text
    assert "25 left alone" in text and "disconnected" in text


def test_canceling_every_queued_post_of_the_day_hands_the_rest_to_a_worker(owner, ops, settings):
    settings.LAYERS_ADMIN_ACTION_ROWS = 300
    queued = seed(owner, 1_000, status="queued")

    with held_tasks() as held:
        done = select_all(ops, "cancel_posts", "?status__exact=queued")

    assert ScheduledPost.objects.filter(status="canceled").count() == settings.LAYERS_ADMIN_ACTION_ROWS
    told = messages_of(done)
    assert len(told) <= 3, told
    assert "Scheduled posts: 300 canceled" in " ".join(told), told

    run_worker(held)

    assert ScheduledPost.objects.filter(pk__in=queued, status="canceled").count() == len(queued)
    assert set(ScheduledPost.objects.values_list("canceled_by", flat=True)) == {"staff ops"}


def test_a_worker_running_late_never_retries_anyway_a_post_that_failed_again_after_the_click(owner, ops, settings):
    """'Retry anyway' is staff's word that the posts they looked at are not on the platform. The worker doing the
    rest may run minutes later (a busy queue after an outage): a post retried meanwhile by someone else and
    failed again, maybe after reaching the platform this time, is not what they checked. It is left alone."""
    settings.LAYERS_ADMIN_ACTION_ROWS = 10
    posts = seed(
        owner,
        30,
        status="failed",
        error_code="PLATFORM_UNAVAILABLE",
        publish_attempted_at=timezone.now() - timedelta(hours=1),
    )

    with held_tasks() as held:
        select_all(ops, "retry_posts_checked", "?status__exact=failed", post="yes")  # confirmed
    later_one = ScheduledPost.objects.filter(pk__in=posts, status="failed").order_by("pk").first()
    # A colleague retries it anyway too, and it fails again having reached the platform: it may be live.
    services.post_retry(post_id=later_one.pk, checked_on_platform=True)
    ScheduledPost.objects.filter(pk=later_one.pk).update(
        status="failed", error_code="PLATFORM_UNAVAILABLE", publish_attempted_at=timezone.now(), publish_id="v_2"
    )
    ScheduledPostAttempt.objects.create(
        post=later_one, number=1, started_at=timezone.now(), finished_at=timezone.now(), outcome="failed"
    )

    run_worker(held)

    assert ScheduledPost.objects.get(pk=later_one.pk).status == "failed"
    assert ScheduledPost.objects.filter(pk__in=posts, status="queued").count() == len(posts) - 1


@pytest.mark.django_db(transaction=True)
def test_two_staff_retrying_the_same_outage_at_once_retry_each_post_once_and_say_so(owner):
    from django.test import override_settings

    seed(owner, 400, accounts=20, status="failed", error_code="PLATFORM_REJECTED")
    first, second = superuser("ops"), superuser("oncall")

    def click(user):
        # Nothing is handed to a worker here (the budget covers the list), so no task is queued.
        return lambda: messages_of(select_all(staff_login(Client(), user), "retry_posts", "?status__exact=failed"))

    with override_settings(LAYERS_ADMIN_ACTION_ROWS=2_000):
        told = run_in_threads(click(first), click(second))

    assert ScheduledPost.objects.filter(status="queued").count() == 400
    assert ScheduledPostAttempt.objects.filter(outcome="staff_retry").count() == 400
    # Each is told what they did, and the two add up to what was done.
    assert sum(retried_count(messages) for messages in told) == 400, told
    assert SocialAccount.objects.filter(status="connected").count() == 20


def test_retrying_anyway_a_whole_list_asks_first_counting_the_posts_that_may_be_live(owner, ops):
    """'Retry anyway' sends again posts that may already be on the platform: a creator's account would show them
    twice, for good. Go on "Select all" of a long list retried every one of them at once; it now answers a page
    first, as the other irreversible actions do, saying how many of the selected may be live."""
    reached = timezone.now() - timedelta(hours=1)
    live = seed(owner, 15, status="failed", error_code="PLATFORM_UNAVAILABLE", publish_attempted_at=reached)
    seed(owner, 5, status="failed", error_code="PLATFORM_REJECTED")

    page = select_all(ops, "retry_posts_checked", "?status__exact=failed")

    assert page.status_code == 200
    assert not ScheduledPost.objects.filter(status="queued").exists()  # nothing happened yet
    text = re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", page.content.decode())))
    assert "15 of the 20 selected reached the platform" in text, text[:2000]

    first = ScheduledPost.objects.order_by("pk").values_list("pk", flat=True).first()
    data = {"action": "retry_posts_checked", ACTION_CHECKBOX_NAME: [first], "select_across": "1", "index": "0"}
    ops.post(POSTS + "?status__exact=failed", {**data, "post": "yes"})

    assert ScheduledPost.objects.filter(status="queued").count() == 20
    assert ScheduledPost.objects.filter(pk__in=live, status="queued").count() == 15


def test_with_the_task_queue_down_the_rest_are_left_as_they_are_and_staff_are_told_to_run_it_again(
    owner, ops, settings
):
    from unittest import mock

    from tests.outages import broker_down

    settings.LAYERS_ADMIN_ACTION_ROWS = 100
    posts = seed(owner, 250, status="failed", error_code="PLATFORM_REJECTED")

    with mock.patch("scheduling.tasks.posts_retry_by_staff.delay", broker_down):
        told = messages_of(select_all(ops, "retry_posts", "?status__exact=failed"))

    assert ScheduledPost.objects.filter(status="queued").count() == 100
    assert any("150 more" in m and "task queue did not take them" in m for m in told), told

    with held_tasks() as held:  # the queue is back: the same action, run again, does the rest and nothing twice
        told = messages_of(select_all(ops, "retry_posts", "?status__exact=failed"))
    run_worker(held)

    assert ScheduledPost.objects.filter(pk__in=posts, status="queued").count() == 250
    assert ScheduledPostAttempt.objects.filter(outcome="staff_retry").count() == 250


@pytest.mark.parametrize("removed", ["deactivated", "permission", "deleted"])
def test_a_worker_does_nothing_for_a_staff_member_who_may_no_longer_act(owner, ops, settings, removed):
    """The worker acts minutes later as the staff member who pressed Go. If that person was deactivated, lost
    the permission the action needs, or was deleted meanwhile (ops removing a leaver's access during an outage),
    the worker must not go on in their name: the rest stay as they are, and no history row is written."""
    from django.contrib.auth.models import User

    settings.LAYERS_ADMIN_ACTION_ROWS = 10
    posts = seed(owner, 30, status="failed", error_code="PLATFORM_REJECTED", attempts=1)
    staffer = staff_member("leaver", "scheduling.change_scheduledpost", "scheduling.view_scheduledpost")
    client = staff_login(Client(), staffer)

    with held_tasks() as held:
        select_all(client, "retry_posts", "?status__exact=failed")
    assert ScheduledPost.objects.filter(pk__in=posts, status="queued").count() == 10
    user = User.objects.get(pk=staffer.pk)
    if removed == "deactivated":
        user.is_active = False
        user.save()
    elif removed == "permission":
        user.user_permissions.clear()
    else:
        LogEntry.objects.filter(user=user).delete()
        user.delete()

    run_worker(held)

    assert ScheduledPost.objects.filter(pk__in=posts, status="queued").count() == 10
    assert not ScheduledPostAttempt.objects.filter(outcome="staff_retry", message="Queued again.").exists()


def test_retrying_anyway_leaves_alone_a_post_that_failed_after_staff_were_shown_the_confirmation_page(owner, ops):
    """The confirmation page counts the selected posts that may be live, and staff confirm from it, maybe minutes
    later. A post that failed after reaching the platform meanwhile (it may be live) was not on the page staff
    read, yet the confirm, re-reading the list, sent it again with the others: the mark was read at the confirm.
    It is now read with the page, and carried by it."""
    reached = timezone.now() - timedelta(hours=1)
    seen = seed(owner, 5, status="failed", error_code="PLATFORM_UNAVAILABLE", publish_attempted_at=reached)

    page = select_all(ops, "retry_posts_checked", "?status__exact=failed")
    assert "5 of the 5 selected reached the platform" in re.sub(r"\s+", " ", unescape(page.content.decode()))
    # Meanwhile a post being published loses its answer: failed, and it may be on the creator's account.
    (late,) = seed(owner, 1, status="failed", error_code="PLATFORM_UNAVAILABLE", publish_attempted_at=timezone.now())
    ScheduledPostAttempt.objects.create(
        post_id=late, number=1, started_at=timezone.now(), finished_at=timezone.now(), outcome="failed"
    )
    # Staff confirm: the page posts back what it carries.
    carried = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.content.decode()))
    confirmed = ops.post(POSTS + "?status__exact=failed", {k: unescape(v) for k, v in carried.items()}, follow=True)

    assert ScheduledPost.objects.filter(pk__in=seen, status="queued").count() == 5
    assert ScheduledPost.objects.get(pk=late).status == "failed"
    assert any(late in m and "recorded after this retry was asked for" in m for m in messages_of(confirmed))


def test_a_confirmation_carrying_a_mangled_mark_still_retries_with_a_mark_of_its_own(owner, ops):
    posts = seed(owner, 3, status="failed", error_code="PLATFORM_REJECTED")

    confirmed = select_all(ops, "retry_posts_checked", "?status__exact=failed", post="yes", attempts_mark='{"newest":')

    assert confirmed.status_code == 200
    assert ScheduledPost.objects.filter(pk__in=posts, status="queued").count() == 3
