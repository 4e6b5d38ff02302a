"""A worker doing the rest of a staff action over a whole list (accounts/admin_bulk.by_a_worker) meets a database
error on one of its batches: a deadlock with the retention purge, a lock timeout during a migration, a row the
service cannot write. The page had told ops the worker does the rest; the task raised, only a log line said so,
and the batch and every one after it were never done (the task's remaining ids waited for "a second run" no one
knew to make). Now the task is retried from the batch that failed (the ones done before are not done again), a
row that fails for its own reason is left out without holding back the others, and staff read in that row's
history that the action was not done to it, and why. The failures are real PostgreSQL errors, raised by a
trigger on the posts table."""

import pytest
from django.contrib.admin.models import LogEntry
from django.db import connection
from django.test import Client

from scheduling.models import ScheduledPost
from tests.platform_helpers import held_tasks
from tests.scheduling.test_ops_admin_at_scale import seed, select_all
from tests.staff import staff_login, superuser

pytestmark = pytest.mark.django_db

CANCEL = "Admin action: Cancel selected queued posts"


@pytest.fixture
def ops(db):
    return staff_login(Client(), superuser())


def refuse_cancel(post_id: str, *, errcode: str, times: int | None) -> None:
    """A trigger refusing to cancel `post_id` with a PostgreSQL error of `errcode`: its first `times` attempts
    (a sequence counts them: it is not rolled back with the failed transaction), or every one (None)."""
    limit = "NULL" if times is None else str(times)
    with connection.cursor() as cursor:
        cursor.execute("CREATE SEQUENCE test_refusals")
        cursor.execute(
            f"""
            CREATE FUNCTION test_refuse_cancel() RETURNS trigger AS $$
            BEGIN
              IF NEW.id = '{post_id}' AND NEW.status = 'canceled' THEN
                IF {limit} IS NULL OR nextval('test_refusals') <= {limit} THEN
                  RAISE EXCEPTION 'injected failure on %', NEW.id USING ERRCODE = '{errcode}';
                END IF;
              END IF;
              RETURN NEW;
            END $$ LANGUAGE plpgsql
            """
        )
        cursor.execute(
            "CREATE TRIGGER test_refuse_cancel BEFORE UPDATE ON scheduling_scheduledpost "
            "FOR EACH ROW EXECUTE FUNCTION test_refuse_cancel()"
        )


def run_as_a_worker(held) -> list:
    """Run what the request queued, each as a worker would: a raise is the task's failure (logged), not the
    test's. A retry the task asks for runs at once (Celery's eager mode ignores its countdown)."""
    return [task.apply(args=args) for task, args in held]


def history(post_id: str) -> list[str]:
    return list(LogEntry.objects.filter(object_id=post_id).order_by("pk").values_list("change_message", flat=True))


def test_a_deadlock_on_one_batch_is_retried_from_that_batch_and_every_post_is_canceled_once(owner, ops, settings):
    settings.LAYERS_ADMIN_ACTION_ROWS = 100
    posts = sorted(seed(owner, 1_200, status="queued"))  # 100 in the request, 1,100 by the worker: batches of 500
    in_second_batch = posts[100 + 500 + 7]
    refuse_cancel(in_second_batch, errcode="40P01", times=1)  # deadlock_detected, once

    with held_tasks() as held:
        select_all(ops, "cancel_posts", "?status__exact=queued")
    run_as_a_worker(held)

    assert ScheduledPost.objects.filter(pk__in=posts, status="canceled").count() == len(posts)
    # Each post canceled once, with one history line: the first batch was not done again by the retry.
    assert LogEntry.objects.filter(object_id__in=posts).count() == len(posts)
    assert set(LogEntry.objects.filter(object_id__in=posts).values_list("change_message", flat=True)) == {CANCEL}


def test_a_post_that_fails_for_its_own_reason_is_left_out_and_its_history_says_so(owner, ops, settings):
    settings.LAYERS_ADMIN_ACTION_ROWS = 100
    posts = sorted(seed(owner, 1_200, status="queued"))
    stuck = posts[100 + 3]  # in the worker's first batch
    refuse_cancel(stuck, errcode="23514", times=None)  # check_violation, every time

    with held_tasks() as held:
        select_all(ops, "cancel_posts", "?status__exact=queued")
    results = run_as_a_worker(held)

    assert ScheduledPost.objects.get(pk=stuck).status == "queued"
    assert ScheduledPost.objects.filter(pk__in=posts, status="canceled").count() == len(posts) - 1
    (line,) = history(stuck)
    assert line.startswith("Admin action not done: Cancel selected queued posts"), line
    assert "injected failure on" in line and "Run the action again on it" in line, line
    assert all(history(pk) == [CANCEL] for pk in posts if pk != stuck)
    assert [result.result for result in results] == [{"done": 1_099, "leftAlone": 0, "failed": 1}]


def test_a_database_down_for_every_retry_leaves_the_rest_with_a_line_in_their_history(owner, ops, settings):
    settings.LAYERS_ADMIN_ACTION_ROWS = 100
    posts = sorted(seed(owner, 700, status="queued"))
    refuse_cancel(posts[100 + 500 + 1], errcode="57P03", times=None)  # cannot_connect_now, on every retry

    with held_tasks() as held:
        select_all(ops, "cancel_posts", "?status__exact=queued")
    run_as_a_worker(held)

    # The first worker batch done; of the second, every post but the refused one (done one at a time at last).
    assert ScheduledPost.objects.filter(pk__in=posts, status="canceled").count() == len(posts) - 1
    assert history(posts[100 + 500 + 1])[0].startswith("Admin action not done: Cancel selected queued posts")
