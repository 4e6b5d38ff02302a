"""A post whose run raises (or whose worker dies) before anything went out is queued again by the resolver;
each claim is an attempt, so an error that repeats fails the post after MAX_ATTEMPTS instead of sending it
round (to a managed provider, each time) forever."""

import pytest
import time_machine
from django.db import DataError

from scheduling import services
from scheduling.models import ManagedProvider
from tests.accounts.oauth_helpers import connected_account
from tests.receivers import receiver
from tests.scheduling.publish_helpers import later, post, run_dispatcher, sandbox_posts, schedule_now

pytestmark = pytest.mark.django_db(transaction=True)


def ticks_for_an_hour():
    for minutes in range(5, 65, 5):
        with time_machine.travel(later(minutes=minutes)):
            run_dispatcher()


def test_a_managed_dispatch_that_raises_every_time_fails_once_its_attempts_are_spent(owner, monkeypatch):
    # Whatever makes settling the provider's answer raise (a database error, a bug).
    def broken(*args, **kwargs):
        raise DataError("value too long for type character varying(128)")

    monkeypatch.setattr(services, "_published", broken)
    account = connected_account(owner, "tiktok", "managed.raises")
    with receiver(lambda r: (200, {"id": "mp-3"}, {})) as (url, received):
        ManagedProvider.objects.create(project=owner.project, name="Boost", endpoint_url=url)
        scheduled = schedule_now(owner, account["id"], mode="managed")
        run_dispatcher()
        ticks_for_an_hour()
    body = post(owner, scheduled["id"])
    assert body["status"] == "failed" and body["error"]["code"] == "PLATFORM_UNAVAILABLE", body
    assert len(received) == services.MAX_ATTEMPTS == body["attempts"]


def test_a_publish_that_raises_before_the_platform_call_fails_once_its_attempts_are_spent(owner, monkeypatch):
    def broken(*, account):
        raise RuntimeError("a bug before the platform call")

    monkeypatch.setattr(services, "social_account_with_fresh_token", broken)
    account = connected_account(owner, "tiktok", "publish.raises")
    scheduled = schedule_now(owner, account["id"])
    run_dispatcher()
    ticks_for_an_hour()
    body = post(owner, scheduled["id"])
    assert (body["status"], body["error"]["code"], body["attempts"]) == ("failed", "PLATFORM_UNAVAILABLE", 5), body
    assert sandbox_posts("tiktok", "publish.raises") == []
