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
    ],
)
def test_beat_runs_the_periodic_job_often_enough(name, at_most_every):
    assert settings.CELERY_BEAT_SCHEDULE[name]["schedule"] <= at_most_every
