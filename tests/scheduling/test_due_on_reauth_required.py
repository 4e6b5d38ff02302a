"""A post that comes due while its account is reauth_required fails CREDENTIAL_INVALID before any call, saying
the account needs a reauth and the post must be scheduled again: not that the token "expired" (the account may be
there because the creator removed the app, and support would tell the customer their login lapsed), and not
sent to the project's managed provider either."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from accounts.services import social_account_mark_reauth_required
from tests.accounts.oauth_helpers import connected_account
from tests.receivers import receiver
from tests.scheduling.publish_helpers import managed_provider, post, run_dispatcher, sandbox_posts, schedule_now

pytestmark = pytest.mark.django_db(transaction=True)


def test_posts_due_on_an_account_needing_a_reauth_fail_saying_so_without_calling_anyone(owner):
    account = connected_account(owner, "tiktok", "due.reauth")
    with receiver(lambda r: (200, {"id": "mp-1"}, {})) as (url, received):
        managed_provider(project=owner.project, name="Boost", endpoint_url=url)
        when = timezone.now() + timedelta(hours=1)
        published = schedule_now(owner, account["id"], when=when)
        managed = schedule_now(owner, account["id"], mode="managed", when=when)
        assert social_account_mark_reauth_required(
            account_id=account["id"], reason="TikTok: authorization.removed", source="test"
        )
        with time_machine.travel(when + timedelta(seconds=5)):
            run_dispatcher()
        assert received == []
    for scheduled in (published, managed):
        body = post(owner, scheduled["id"])
        assert (body["status"], body["error"]["code"]) == ("failed", "CREDENTIAL_INVALID"), body
        assert "needs a reauth" in body["error"]["message"] and "expired" not in body["error"]["message"], body
        assert "Schedule the post again" in body["error"]["message"], body
    assert sandbox_posts("tiktok", "due.reauth") == []
