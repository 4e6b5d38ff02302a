"""The platform timing out, answering 5xx and 429: a batch of posts published over real HTTP (the sandbox
served by the live server; the client's own timeout, shortened, really expires) with faults sprinkled on
every account, plus answers that arrive only after the client gave up although the platform did the work.
The dispatcher runs tick after tick (the clock moved past every backoff) until nothing is in flight.
Every post ends published exactly once, or failed with one of API.md's codes; none is posted twice."""

from collections import Counter
from datetime import timedelta

import pytest
import time_machine
from django.test import Client
from django.utils import timezone

from accounts.platforms.sandbox.models import Fault, Stall
from scheduling.models import ScheduledPost
from scheduling.tasks import dispatch_due_posts
from tests.accounts.oauth_helpers import connected_account
from tests.reliability.outcomes import tally
from tests.scheduling.publish_helpers import schedule_now
from tests.scheduling.test_crash import stall

pytestmark = pytest.mark.django_db(transaction=True)

# Per account, in the order the platform serves them (a fault is taken by the next call of that user).
FAULTS = [("server_error", 2), ("timeout", 1), ("rate_limited", 2), ("server_error", 1), ("timeout", 1)]
MEDIA = {"tiktok": ["video", "image"], "instagram": ["video", "image", "carousel"]}


def inject(platform: str, username: str, kind: str, count: int) -> None:
    response = Client().post(
        f"/sandbox/{platform}/_control/faults",
        {"username": username, "kind": kind, "count": count},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content


def test_every_post_is_published_once_or_failed_with_a_code_when_the_platform_times_out_and_fails(
    owner, live, settings, figures
):
    # given three TikTok and three Instagram accounts with five posts each, due now
    accounts = [connected_account(owner, "tiktok", f"flaky.tt{i}") for i in range(3)]
    accounts += [connected_account(owner, "instagram", f"flaky.ig{i}") for i in range(3)]
    post_ids = []
    for i in range(5):
        for a in accounts:
            media = MEDIA[a["platform"]][i % len(MEDIA[a["platform"]])]
            post_ids.append(schedule_now(owner, a["id"], media_type=media, caption=f"flaky {a['handle']} #{i}")["id"])
    # and a platform that fails, on every account, calls of every kind (rotated so that each account's
    # publishes meet them at different steps)
    settings.LAYERS_PLATFORM_TIMEOUT = 0.5  # the client gives up after 0.5 s; a "timeout" answers at 1.5 s
    planned: Counter = Counter()
    for k, a in enumerate(accounts):
        for kind, count in FAULTS[k % len(FAULTS) :] + FAULTS[: k % len(FAULTS)]:
            inject(a["platform"], a["handle"], kind, count)
            planned[kind] += count
    # and answers that come after the client's timeout although the platform did the work: a TikTok post
    # created, an Instagram media published
    stall("tiktok", "/init/", seconds=1.0)
    stall("instagram", "/media_publish", seconds=1.0)

    # when the dispatcher ticks until nothing is left in flight, the clock passing every backoff between ticks
    ticks = 0
    with time_machine.travel(timezone.now(), tick=True) as clock:
        while ScheduledPost.objects.filter(
            pk__in=post_ids, status__in=[ScheduledPost.Status.QUEUED, ScheduledPost.Status.PUBLISHING]
        ).exists():
            assert ticks < 40, "posts still in flight after 40 ticks (10 hours)"
            dispatch_due_posts()
            ticks += 1
            clock.shift(timedelta(minutes=16))

    out = tally(post_ids)
    injected = Counter()
    for kind, count in planned.items():
        remaining = sum(Fault.objects.filter(kind=kind).values_list("remaining", flat=True))
        injected[kind] = count - remaining
    injected["late_answer"] = Stall.objects.filter(remaining=0).count()
    codes = Counter(ScheduledPost.objects.filter(pk__in=post_ids, status="failed").values_list("error_code", flat=True))
    figures(
        "platform_faults",
        cases=out.posts,
        faults_injected=sum(injected.values()),
        losses=out.losses,
        **out.as_figures(),
        faultsByKind=dict(sorted(injected.items())),
        failureCodes=dict(sorted(codes.items())),
        ticks=ticks,
    )
    # then every kind of fault was met, and every post is published once or failed with a code
    assert all(injected[kind] > 0 for kind in [*planned, "late_answer"]), injected
    assert out.losses == 0, out
    assert out.published_once + out.failed_with_code == len(post_ids), out
    # the post TikTok created while our client had given up is not posted again: it fails, with a code
    assert codes["PLATFORM_UNAVAILABLE"] >= 1
