"""One organization's campaign must not hold back another's posts in the dispatcher's other claims: the status
check of posts the platform accepted (which makes them `published`, and sends `post.published`). The claim of
due posts shares its turns between organizations (test_dispatch_concurrency, test_claim_cost); it did not."""

from datetime import timedelta

import pytest
from django.utils import timezone

from scheduling import services
from scheduling.models import ScheduledPost
from tests.factories import make_account
from tests.scheduling.publish_helpers import a_burst, schedule_now, sent_awaiting_check

# What one tick of the dispatcher claims (tasks.dispatch_due_posts' batch).
STATUS_CHECKS_PER_TICK = 500


def test_another_organizations_post_is_checked_in_the_first_tick_behind_a_campaign_awaiting_checks(owner, sibling):
    """A partner's campaign of 600 posts the platform accepted, all waiting for their status check: the claim
    took the 500 checked longest ago, so another partner's post accepted a second later waited a tick behind
    them (a 5,000-post campaign: ten ticks, and every re-check of the campaign came due again ahead of it), and
    its `published` and `post.published` with it. Each organization's first check now goes first."""
    start = timezone.now() - timedelta(minutes=1)
    campaign = sent_awaiting_check(a_burst(owner, make_account(owner).pk, start=start, count=600))
    other = ScheduledPost.objects.get(pk=schedule_now(sibling, make_account(sibling).pk, when=start)["id"])
    sent_awaiting_check([other])
    ScheduledPost.objects.filter(pk=other.pk).update(next_check_at=start + timedelta(seconds=1))

    first = services.posts_claim_for_resolution(limit=STATUS_CHECKS_PER_TICK)

    assert other.pk in first
    # The campaign's own checks keep their order, and the claim is full.
    assert [p for p in first if p != other.pk] == [p.pk for p in campaign[: STATUS_CHECKS_PER_TICK - 1]]
    assert ScheduledPost.objects.get(pk=other.pk).claimed_until > timezone.now()


def test_past_the_window_a_campaign_awaiting_checks_still_lets_each_organization_in(owner, sibling, outsider):
    """More checks due than the claim's window: each organization's own soonest ones are read."""
    start = timezone.now() - timedelta(minutes=1)
    campaign = sent_awaiting_check(a_burst(owner, make_account(owner).pk, start=start, count=120))
    others = []
    for offset, tenant in enumerate((sibling, outsider), start=1):
        post = ScheduledPost.objects.get(pk=schedule_now(tenant, make_account(tenant).pk, when=start)["id"])
        sent_awaiting_check([post])
        ScheduledPost.objects.filter(pk=post.pk).update(next_check_at=start + timedelta(seconds=offset))
        others.append(post.pk)

    first = services.posts_claim_for_resolution(limit=5)  # a window of 100, 122 due

    assert first == [campaign[0].pk, *others, campaign[1].pk, campaign[2].pk]


@pytest.mark.django_db(transaction=True)
def test_three_dispatchers_at_once_check_each_post_once(owner, sibling, monkeypatch):
    """The fair claim keeps the claim's lease: a post handed to one dispatcher is not handed to another."""
    from tests.concurrency import run_in_threads

    start = timezone.now() - timedelta(minutes=1)
    checks = sent_awaiting_check(a_burst(owner, make_account(owner).pk, start=start, count=29))
    checks += sent_awaiting_check(a_burst(sibling, make_account(sibling).pk, start=start, count=29))
    monkeypatch.setattr(services, "FAIR_CLAIM_WINDOW_BATCHES", 1)  # past the window: read per organization

    def dispatcher() -> list[str]:
        checked = []
        while ids := services.posts_claim_for_resolution(limit=4):
            checked.extend(ids)
        return checked

    results = run_in_threads(dispatcher, dispatcher, dispatcher)

    checked = [p for c in results for p in c]
    assert sorted(checked) == sorted(p.pk for p in checks)
