"""Instagram posts get their container made ahead of their time, so that Instagram's processing of the
media (minutes for a reel) does not make them late; everything else about the post stays as it was."""

from datetime import timedelta

import pytest
import time_machine

from accounts import services as account_services
from accounts.models import Event, SocialAccount
from accounts.platforms.sandbox.models import Container
from accounts.platforms.tiktok import TikTokClient
from scheduling import services, tasks
from tests.accounts.oauth_helpers import connected_account, reauthorize
from tests.scheduling.publish_helpers import later, post, run_dispatcher, sandbox_posts, schedule_now
from tests.scheduling.test_publishing import sandbox_control

pytestmark = pytest.mark.django_db(transaction=True)


def containers(username: str) -> list[Container]:
    return list(Container.objects.filter(username=username).order_by("created_at", "pk"))


@pytest.fixture
def slow_processing(settings):
    """Instagram takes two minutes to fetch and process a reel before it can be published."""
    settings.LAYERS_SANDBOX_PUBLISH_DELAY_SECONDS = 120


def test_a_reel_prepared_ahead_goes_out_at_its_time_despite_processing(owner, slow_processing):
    account = connected_account(owner, "instagram", "prep.reel")
    scheduled = schedule_now(owner, account["id"], caption="On the hour", when=later(minutes=10))

    run_dispatcher()  # ten minutes ahead: the container is made, nothing is published

    assert post(owner, scheduled["id"])["status"] == "queued"
    made = containers("prep.reel")
    assert [c.caption for c in made] == ["On the hour"]
    assert sandbox_posts("instagram", "prep.reel") == []

    with time_machine.travel(later(minutes=10, seconds=1)):
        run_dispatcher()  # one tick at its time publishes it: Instagram finished processing long ago

    body = post(owner, scheduled["id"])
    assert body["status"] == "published", body
    published = sandbox_posts("instagram", "prep.reel")
    assert len(published) == 1 and published[0].publish_id == made[0].ig_id
    assert body["externalUrl"] == published[0].permalink
    assert len(containers("prep.reel")) == 1  # no second container at publish time

    # Without the head start, the same reel due now is still processing after the tick that takes it.
    late = schedule_now(owner, account["id"], caption="Right now")
    run_dispatcher()
    assert post(owner, late["id"])["status"] == "publishing"


@pytest.mark.parametrize("media_type", ["image", "carousel"])
def test_images_and_carousels_are_prepared_and_published_once(owner, media_type):
    username = f"prep.{media_type}"
    account = connected_account(owner, "instagram", username)
    scheduled = schedule_now(owner, account["id"], media_type=media_type, when=later(minutes=5))
    run_dispatcher()
    made = len(containers(username))
    assert made == (1 if media_type == "image" else 4)  # a carousel: one per item and the parent

    with time_machine.travel(later(minutes=5, seconds=1)):
        run_dispatcher()
        run_dispatcher()

    assert post(owner, scheduled["id"])["status"] == "published"
    assert len(sandbox_posts("instagram", username)) == 1
    assert len(containers(username)) == made


def test_posts_outside_the_window_tiktok_posts_and_drafts_are_not_touched_early(owner):
    instagram = connected_account(owner, "instagram", "prep.none")
    tiktok = connected_account(owner, "tiktok", "prep.tt")
    schedule_now(owner, instagram["id"], when=later(hours=2))  # beyond LAYERS_PREPARE_AHEAD (15 min)
    schedule_now(owner, instagram["id"], mode="draft", when=later(minutes=5))
    schedule_now(owner, tiktok["id"], when=later(minutes=5))

    run_dispatcher()

    assert containers("prep.none") == []
    assert sandbox_posts("instagram", "prep.none") == [] and sandbox_posts("tiktok", "prep.tt") == []


def test_preparing_anything_but_an_instagram_post_to_publish_does_nothing(owner):
    # TikTok's init call would be the post itself: a stray preparation must never reach it.
    tiktok = connected_account(owner, "tiktok", "prep.stray")
    instagram = connected_account(owner, "instagram", "prep.stray.ig")
    stray = [
        schedule_now(owner, tiktok["id"], when=later(minutes=5)),
        schedule_now(owner, instagram["id"], mode="draft", when=later(minutes=5)),
    ]
    assert [services.post_prepare(post_id=p["id"]) for p in stray] == ["skipped", "skipped"]
    assert sandbox_posts("tiktok", "prep.stray") == [] and containers("prep.stray.ig") == []
    assert sandbox_posts("instagram", "prep.stray.ig") == []


def test_preparation_waits_while_due_posts_wait_for_workers(owner, monkeypatch):
    monkeypatch.setattr(tasks, "WAITING_PER_TASK", 1)  # "a burst" is one waiting post here
    due = schedule_now(owner, connected_account(owner, "tiktok", "prep.busy")["id"])
    ahead = schedule_now(owner, connected_account(owner, "instagram", "prep.later")["id"], when=later(minutes=5))
    assert services.posts_claim_due() == [due["id"]]  # claimed; no worker has started it yet

    run_dispatcher()
    assert containers("prep.later") == []  # the due post comes first

    services.posts_publish(post_ids=[due["id"]])  # the workers catch up
    run_dispatcher()
    assert len(containers("prep.later")) == 1 and post(owner, ahead["id"])["status"] == "queued"


def test_preparations_handed_out_at_once_are_bounded(owner, monkeypatch):
    monkeypatch.setattr(services, "PREPARE_IN_FLIGHT_MAX", 2)
    account = connected_account(owner, "instagram", "prep.bounded")

    def scheduled(*captions):
        return [schedule_now(owner, account["id"], caption=c, when=later(minutes=5))["id"] for c in captions]

    a, b, c = scheduled("a", "b", "c")
    assert sorted(services.posts_claim_for_preparation()) == sorted([a, b])
    assert services.posts_claim_for_preparation() == []  # two handed out, not finished: no more
    assert [services.post_prepare(post_id=i) for i in (a, b)] == ["prepared", "prepared"]
    assert services.posts_claim_for_preparation() == [c]  # finished ones no longer count

    scheduled("d", "e")
    assert len(services.posts_claim_for_preparation()) == 1  # c (its worker died, say) and one of d, e
    with time_machine.travel(later(minutes=2, seconds=30)):  # unfinished for too long: they stop counting
        assert len(services.posts_claim_for_preparation()) == 1  # the other of d, e
    assert len(containers("prep.bounded")) == 2


def test_preparation_can_be_turned_off(owner, settings, slow_processing):
    settings.LAYERS_PREPARE_AHEAD = timedelta(0)
    account = connected_account(owner, "instagram", "prep.off")
    scheduled = schedule_now(owner, account["id"], when=later(minutes=5))
    run_dispatcher()
    assert containers("prep.off") == []

    with time_machine.travel(later(minutes=5, seconds=1)):
        run_dispatcher()
    assert post(owner, scheduled["id"])["status"] == "publishing"  # the container is only being processed


def test_a_prepared_post_canceled_before_its_time_never_appears(owner):
    account = connected_account(owner, "instagram", "prep.cancel")
    scheduled = schedule_now(owner, account["id"], when=later(minutes=5))
    run_dispatcher()
    assert len(containers("prep.cancel")) == 1

    assert owner.client.delete(f"/v1/scheduled-posts/{scheduled['id']}").status_code == 200
    with time_machine.travel(later(minutes=5, seconds=1)):
        run_dispatcher()

    assert post(owner, scheduled["id"])["status"] == "canceled"
    assert sandbox_posts("instagram", "prep.cancel") == []


def test_a_post_taken_for_publishing_first_is_not_prepared_as_well(owner):
    account = connected_account(owner, "instagram", "prep.race")
    scheduled = schedule_now(owner, account["id"], when=later(minutes=5))
    # The tick took it for preparation, but its preparer only runs once the post is due and claimed.
    assert services.posts_claim_for_preparation() == [scheduled["id"]]
    with time_machine.travel(later(minutes=5, seconds=1)):
        assert services.posts_claim_due() == [scheduled["id"]]
        assert services.post_prepare(post_id=scheduled["id"]) == "skipped"
        assert containers("prep.race") == []
        assert services.posts_publish(post_ids=[scheduled["id"]]) == {scheduled["id"]: "published"}
    assert len(containers("prep.race")) == 1 and len(sandbox_posts("instagram", "prep.race")) == 1


def test_a_container_prepared_a_day_before_is_made_again(owner):
    account = connected_account(owner, "instagram", "prep.stale")
    scheduled = schedule_now(owner, account["id"], when=later(minutes=5))
    run_dispatcher()
    first = containers("prep.stale")[0]

    # The workers were down for a day: Instagram has dropped the unpublished container meanwhile.
    with time_machine.travel(later(hours=25)):
        run_dispatcher()

    assert post(owner, scheduled["id"])["status"] == "published"
    published = sandbox_posts("instagram", "prep.stale")
    assert len(published) == 1 and published[0].publish_id != first.ig_id


def test_broken_media_found_by_the_prepared_container_fails_at_its_time_with_media_invalid(owner):
    account = connected_account(owner, "instagram", "prep.broken")
    scheduled = schedule_now(
        owner, account["id"], media_urls=["https://cdn.acme.test/invalid/clip.mp4"], when=later(minutes=5)
    )
    run_dispatcher()
    assert post(owner, scheduled["id"])["status"] == "queued"  # nothing is reported before its time

    with time_machine.travel(later(minutes=5, seconds=1)):
        run_dispatcher()

    body = post(owner, scheduled["id"])
    assert body["status"] == "failed" and body["error"]["code"] == "MEDIA_INVALID"
    assert sandbox_posts("instagram", "prep.broken") == []


def test_a_dead_token_found_while_preparing_asks_for_a_reauth_in_time(owner):
    account = connected_account(owner, "instagram", "prep.lapsed")
    scheduled = schedule_now(owner, account["id"], when=later(minutes=10))
    sandbox_control("instagram", "invalidate-tokens", {"username": "prep.lapsed"})

    run_dispatcher()

    # Ten minutes before the post is due, the partner hears that the account needs a reauth.
    assert SocialAccount.objects.get(pk=account["id"]).status == "reauth_required"
    assert Event.objects.filter(type="social_account.needs_reauth").count() == 1
    assert post(owner, scheduled["id"])["status"] == "queued"
    reauthorize(owner, account["id"], "instagram", "prep.lapsed")
    assert SocialAccount.objects.get(pk=account["id"]).status == "connected"

    with time_machine.travel(later(minutes=10, seconds=1)):
        run_dispatcher()

    assert post(owner, scheduled["id"])["status"] == "published"
    assert len(sandbox_posts("instagram", "prep.lapsed")) == 1


def test_a_refused_preparation_leaves_the_post_to_its_time(owner):
    account = connected_account(owner, "instagram", "prep.flaky")
    scheduled = schedule_now(owner, account["id"], when=later(minutes=5))
    sandbox_control("instagram", "faults", {"username": "prep.flaky", "kind": "server_error", "count": 1})

    run_dispatcher()  # the container call fails once: the post is not prepared, nor retried early

    assert containers("prep.flaky") == []
    assert SocialAccount.objects.get(pk=account["id"]).status == "connected"
    run_dispatcher()
    assert containers("prep.flaky") == []

    with time_machine.travel(later(minutes=5, seconds=1)):
        run_dispatcher()
    assert post(owner, scheduled["id"])["status"] == "published"
    assert len(sandbox_posts("instagram", "prep.flaky")) == 1


def test_a_prepared_container_that_failed_on_instagrams_side_is_made_again_not_polled_again(owner):
    account = connected_account(owner, "instagram", "prep.hiccup")
    scheduled = schedule_now(owner, account["id"], when=later(minutes=5))
    sandbox_control("instagram", "faults", {"username": "prep.hiccup", "kind": "container_error", "count": 1})
    run_dispatcher()
    [errored] = containers("prep.hiccup")  # prepared ahead; Instagram's processing of it failed

    with time_machine.travel(later(minutes=5, seconds=1)):
        run_dispatcher()
        assert post(owner, scheduled["id"])["status"] == "queued"  # retried, with a new container
    with time_machine.travel(later(minutes=10)):
        run_dispatcher()

    body = post(owner, scheduled["id"])
    assert body["status"] == "published" and body["attempts"] == 2, body
    published = sandbox_posts("instagram", "prep.hiccup")
    assert len(published) == 1 and published[0].publish_id != errored.ig_id


@pytest.mark.parametrize("ahead", [True, False], ids=["prepared-ahead", "made-at-its-time"])
def test_an_instagram_post_whose_account_is_revoked_while_its_batch_publishes_is_not_published(
    owner, settings, monkeypatch, ahead
):
    if not ahead:
        settings.LAYERS_PREPARE_AHEAD = timedelta(0)
    revoked = connected_account(owner, "instagram", "prep.revoked")
    # The same Instagram user stays connected in the other project, so the revoke keeps the grant at
    # Instagram (README): the token this post was read with still works there.
    connected_account(owner, "instagram", "prep.revoked", project=owner.projects[1])
    other = connected_account(owner, "tiktok", "prep.first")
    scheduled = schedule_now(owner, revoked["id"], caption="Not after the revoke", when=later(minutes=10))
    run_dispatcher()
    assert len(containers("prep.revoked")) == (1 if ahead else 0)

    with time_machine.travel(later(minutes=10, seconds=1)):
        first = schedule_now(owner, other["id"], caption="First in the batch")
        publish, revokes = TikTokClient.publish, []

        def revoke_then_publish(self, **kwargs):
            if not revokes:  # the partner revokes while the batch's first post is being published
                revokes.append(account_services.social_account_revoke(account_id=revoked["id"], api_key=owner.key))
            return publish(self, **kwargs)

        monkeypatch.setattr(TikTokClient, "publish", revoke_then_publish)
        assert set(services.posts_claim_due()) == {first["id"], scheduled["id"]}
        # One dispatcher batch: both posts, and the Instagram account as it was, are read before the revoke.
        outcomes = services.posts_publish(post_ids=[first["id"], scheduled["id"]])

    assert len(revokes) == 1
    assert outcomes == {first["id"]: "published", scheduled["id"]: "failed"}
    assert sandbox_posts("instagram", "prep.revoked") == []
    body = post(owner, scheduled["id"])
    assert body["status"] == "failed" and body["error"]["code"] == "ACCOUNT_DISCONNECTED"
