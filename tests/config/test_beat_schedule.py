"""Every periodic job is declared to beat (installed into django-celery-beat's tables at start-up), names a
task the workers know, and runs at least as often as what it promises needs."""

import pytest
from django.conf import settings

from config.celery import app


def test_every_beat_entry_names_a_registered_task():
    app.loader.import_default_modules()
    unknown = {name: e["task"] for name, e in settings.CELERY_BEAT_SCHEDULE.items() if e["task"] not in app.tasks}
    assert unknown == {}


@pytest.mark.parametrize(
    "name, at_most_every",
    [
        ("dispatch-due-posts", 2),  # the lag of a due post is at most one tick
        ("webhooks-relay", 60),  # a delivery whose message was lost is sent within a minute
        ("billing-lease-renewals", 3600),  # a lease period is charged within the hour it starts
        ("oauth-sessions-retention", 3600),
        ("social-accounts-provisioning", 900),  # a connect whose fan-out was lost gets its layers
        ("social-accounts-health", 900),
        ("pool-accounts-token-refresh", 6 * 3600 - 1),  # within the 6 h margin before a pool token expires
    ],
)
def test_beat_runs_the_periodic_job_often_enough(name, at_most_every):
    assert settings.CELERY_BEAT_SCHEDULE[name]["schedule"] <= at_most_every


@pytest.mark.django_db(transaction=True)
def test_a_pause_in_the_admin_survives_a_beat_restart_and_an_interval_goes_back_to_the_declared_one():
    # What README.md (Production) tells ops about the periodic tasks they manage in the admin.
    from django_celery_beat.models import IntervalSchedule, PeriodicTask
    from django_celery_beat.schedulers import DatabaseScheduler

    DatabaseScheduler(app=app, lazy=False)
    paused = PeriodicTask.objects.get(name="events-retention")
    paused.enabled = False
    paused.save()
    retimed = PeriodicTask.objects.get(name="global-platform-posts-sync")
    retimed.interval, _ = IntervalSchedule.objects.get_or_create(every=3600, period=IntervalSchedule.SECONDS)
    retimed.save()

    DatabaseScheduler(app=app, lazy=False)  # beat restarts (a deploy)

    assert PeriodicTask.objects.get(name="events-retention").enabled is False
    assert PeriodicTask.objects.get(name="global-platform-posts-sync").interval.every == 900


@pytest.mark.django_db(transaction=True)
def test_every_periodic_tick_expires_so_ticks_sent_while_workers_were_down_do_not_all_run_when_they_return():
    # Beat keeps sending while no worker consumes; without an expiry every tick of the outage (1,800 per hour
    # for the 2-second dispatcher) would run back to back once workers are back. A tick expires after about
    # its interval (never under 5 minutes: the dispatcher's tick waits behind a burst's posts in its queue, and
    # dropping it there would pause the dispatcher mid-burst).
    from django_celery_beat.models import PeriodicTask
    from django_celery_beat.schedulers import DatabaseScheduler

    scheduler = DatabaseScheduler(app=app, lazy=False)

    for name, declared in settings.CELERY_BEAT_SCHEDULE.items():
        every = declared["schedule"]
        assert PeriodicTask.objects.get(name=name).expire_seconds == max(int(every), 300), name
        # What beat sends with each message: Celery turns it into the message's expiry time.
        assert scheduler.schedule[name].options["expires"] == max(int(every), 300), name
