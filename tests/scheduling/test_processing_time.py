"""How long a post may stay `publishing` while the platform processes it: a day from its time, wherever it
was scheduled from. Before, the clock for Instagram posts started when the post was scheduled, so a post
scheduled more than a day ahead failed the first time Instagram said "still processing"."""

import pytest
import time_machine

from accounts.tasks import social_accounts_health_tick
from tests.accounts.oauth_helpers import connected_account
from tests.scheduling.publish_helpers import later, post, run_dispatcher, sandbox_posts, schedule_now

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_reel_scheduled_days_ahead_waits_for_instagram_and_is_published(owner, settings):
    settings.LAYERS_SANDBOX_PUBLISH_DELAY_SECONDS = 60  # Instagram takes a minute to process the reel
    account = connected_account(owner, "instagram", "reels.ahead")
    scheduled = schedule_now(owner, account["id"], media_type="video", when=later(days=2))

    with time_machine.travel(later(days=2, seconds=1)):
        run_dispatcher()
        body = post(owner, scheduled["id"])
    assert body["status"] == "publishing", body["error"]

    with time_machine.travel(later(days=2, minutes=3)):
        run_dispatcher()
        body = post(owner, scheduled["id"])
    assert body["status"] == "published", body
    assert len(sandbox_posts("instagram", "reels.ahead")) == 1


def test_a_tiktok_post_never_finished_fails_a_day_after_its_time_not_before(owner, settings):
    # (Instagram decides by itself: a container not published within 24 hours expires, and the post fails
    # with Instagram's reason.)
    settings.LAYERS_SANDBOX_PUBLISH_DELAY_SECONDS = 3 * 24 * 3600  # TikTok never gets there
    account = connected_account(owner, "tiktok", "stuck.upload")
    scheduled = schedule_now(owner, account["id"], media_type="video", when=later(days=3))

    for hours in (0, 1, 12, 23):
        with time_machine.travel(later(days=3, hours=hours, seconds=5)):
            social_accounts_health_tick()  # beat keeps the token fresh meanwhile (TikTok's live a day)
            run_dispatcher()
            assert post(owner, scheduled["id"])["status"] == "publishing", hours

    with time_machine.travel(later(days=4, minutes=5)):
        social_accounts_health_tick()
        run_dispatcher()
        body = post(owner, scheduled["id"])
    assert body["status"] == "failed"
    assert body["error"]["code"] == "PLATFORM_UNAVAILABLE" and "24 hours" in body["error"]["message"], body["error"]
