"""A status check the platform throttled counts one attempt, however many runs saw that same check: a resolve
message delivered twice must not spend two of the post's attempts and fail it RATE_LIMITED early."""

import copy
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.platforms.base import PublishStatus
from scheduling import services
from scheduling.models import ScheduledPost
from tests.factories import make_account
from tests.scheduling.publish_helpers import schedule_now

pytestmark = pytest.mark.django_db


def test_two_runs_throttled_on_the_same_check_count_one_attempt(owner):
    # two runs (a redelivered resolve message) reading the same publishing post and both told
    # "throttled" spend one of its MAX_ATTEMPTS, not two: otherwise the post fails RATE_LIMITED early.
    account = make_account(owner, platform="instagram")
    scheduled = schedule_now(owner, account.pk)
    now = timezone.now()
    ScheduledPost.objects.filter(pk=scheduled["id"]).update(
        status="publishing",
        publish_id="ig-container-1",
        publish_attempted_at=now,
        attempts=2,
        next_check_at=now,
        claimed_until=now + timedelta(minutes=5),
    )
    first = ScheduledPost.objects.select_related("container", "social_account__identity").get(pk=scheduled["id"])
    second = copy.copy(first)  # the other run read the same row
    throttled = PublishStatus(state="throttled", fail_reason="Application request limit reached")

    assert services._publish_throttled(first, throttled, now) == "retrying"
    assert services._publish_throttled(second, throttled, now) == "skipped"

    assert ScheduledPost.objects.get(pk=scheduled["id"]).attempts == 3
