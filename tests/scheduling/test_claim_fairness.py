"""One organization's campaign must not hold back another's posts in the dispatcher's other two claims: the
status check of posts the platform accepted (which makes them `published`, and sends `post.published`) and
Instagram's preparation ahead of time (which makes them go out on the minute). The claim of due posts shares
its turns between organizations (test_dispatch_concurrency, test_claim_cost); these did not."""

from datetime import timedelta

import pytest
from django.utils import timezone

from scheduling import services, tasks
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


def instagram_campaign(tenant, *, start, count: int) -> list[ScheduledPost]:
    return a_burst(tenant, make_account(tenant, platform="instagram").pk, start=start, count=count)


def test_another_organizations_reel_is_prepared_in_the_first_tick_behind_a_campaign(owner, sibling):
    """A partner's campaign of 300 Instagram posts due in the next minutes took the preparation's first 100
    and then every one of its 200 slots in flight: another partner's reel due a few minutes later was prepared
    after the whole campaign, or not at all, and then waited at its time for Instagram to process the media
    (minutes for a reel). Each organization's soonest post now goes first."""
    start = timezone.now() + timedelta(minutes=1)
    campaign = instagram_campaign(owner, start=start, count=300)
    other = instagram_campaign(sibling, start=start + timedelta(minutes=5), count=0)[0]

    first = services.posts_claim_for_preparation(limit=tasks.PREPARE_PER_TICK)

    assert other.pk in first
    assert [p for p in first if p != other.pk] == [p.pk for p in campaign[: tasks.PREPARE_PER_TICK - 1]]


def test_the_slots_freed_in_flight_are_shared_with_the_organization_still_waiting(owner, sibling):
    """The campaign holds all 200 preparations in flight; of the slots that free by the next tick, the other
    organization's post takes one, the campaign's next posts the others. (Each claim shares out its own turns:
    a claim of a single slot goes to the soonest post, as the publisher's claim of one does.)"""
    start = timezone.now() + timedelta(minutes=1)
    campaign = instagram_campaign(owner, start=start, count=300)
    assert len(services.posts_claim_for_preparation(limit=services.PREPARE_IN_FLIGHT_MAX)) == 200
    other = instagram_campaign(sibling, start=start + timedelta(minutes=5), count=0)[0]
    assert services.posts_claim_for_preparation(limit=tasks.PREPARE_PER_TICK) == []  # all 200 in flight

    ScheduledPost.objects.filter(pk__in=[p.pk for p in campaign[:3]]).update(prepared_publish_id="17890000000000001")

    claimed = services.posts_claim_for_preparation(limit=tasks.PREPARE_PER_TICK)

    assert claimed == [campaign[200].pk, other.pk, campaign[201].pk]


def test_past_the_window_each_organizations_soonest_unprepared_post_is_prepared(owner, sibling, monkeypatch):
    """More posts to prepare than the window: each organization is read on its own, past its posts already
    prepared or claimed, and past its TikTok posts and drafts (not prepared)."""
    start = timezone.now() + timedelta(minutes=1)
    campaign = instagram_campaign(owner, start=start, count=30)
    services.posts_claim_for_preparation(limit=10)
    tiktok = a_burst(sibling, make_account(sibling).pk, start=start, count=3)
    other = instagram_campaign(sibling, start=start + timedelta(minutes=5), count=0)[0]
    monkeypatch.setattr(services, "FAIR_CLAIM_WINDOW_BATCHES", 1)  # a window of 3, 21 to prepare

    claimed = services.posts_claim_for_preparation(limit=3)

    assert claimed == [campaign[10].pk, other.pk, campaign[11].pk]
    assert not ScheduledPost.objects.filter(pk__in=[p.pk for p in tiktok], prepare_claimed_at__isnull=False)


@pytest.mark.django_db(transaction=True)
def test_three_dispatchers_at_once_check_each_post_once_and_prepare_each_once(owner, sibling, monkeypatch):
    """The fair claims keep the claims' lease: a post handed to one dispatcher is not handed to another."""
    from tests.concurrency import run_in_threads

    start = timezone.now() - timedelta(minutes=1)
    checks = sent_awaiting_check(a_burst(owner, make_account(owner).pk, start=start, count=29))
    checks += sent_awaiting_check(a_burst(sibling, make_account(sibling).pk, start=start, count=29))
    soon = timezone.now() + timedelta(minutes=1)
    to_prepare = instagram_campaign(owner, start=soon, count=29) + instagram_campaign(sibling, start=soon, count=29)
    monkeypatch.setattr(services, "FAIR_CLAIM_WINDOW_BATCHES", 1)  # past the window: read per organization

    def dispatcher() -> tuple[list[str], list[str]]:
        checked, prepared = [], []
        while ids := services.posts_claim_for_resolution(limit=4):
            checked.extend(ids)
        while ids := services.posts_claim_for_preparation(limit=4):
            prepared.extend(ids)
        return checked, prepared

    results = run_in_threads(dispatcher, dispatcher, dispatcher)

    checked = [p for c, _ in results for p in c]
    prepared = [p for _, p in results for p in p]
    assert sorted(checked) == sorted(p.pk for p in checks)
    assert sorted(prepared) == sorted(p.pk for p in to_prepare)
