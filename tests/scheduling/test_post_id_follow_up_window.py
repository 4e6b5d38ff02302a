"""A TikTok post published before TikTok gave its public id (moderation pending, or a post the public can
never see) is asked about again by the metrics sync for a week after it was published, then left alone: a
post that never gets a public id must not cost a status call (TikTok allows 30 a minute per token) every
hour forever."""

from unittest import mock

import pytest
import time_machine

from accounts.platforms.tiktok import TikTokClient
from scheduling import services
from scheduling.models import ScheduledPost
from tests.accounts.oauth_helpers import connected_account
from tests.scheduling.publish_helpers import later, run_dispatcher, schedule_now

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_post_still_without_a_public_id_is_asked_about_for_a_week_then_no_more(owner, settings):
    settings.LAYERS_SANDBOX_TIKTOK_MODERATION_SECONDS = 60 * 24 * 3600  # TikTok never gives its id in time
    account = connected_account(owner, "tiktok", "never.public")
    post_id = schedule_now(owner, account["id"])["id"]
    run_dispatcher()
    post = ScheduledPost.objects.get(pk=post_id)
    assert post.status == "published" and post.external_id == ""
    real_status = TikTokClient.publish_status
    asked = []

    def status(self, **kwargs):
        asked.append(kwargs["publish_id"])
        return real_status(self, **kwargs)

    with mock.patch.object(TikTokClient, "publish_status", status):
        with time_machine.travel(later(days=6, hours=23)):
            services.posts_sync_metrics()
        assert asked == [post.publish_id]  # still within the week: asked

        with time_machine.travel(later(days=7, hours=1)):
            services.posts_sync_metrics()
        assert asked == [post.publish_id]  # past the week: not asked again
