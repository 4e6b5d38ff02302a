"""What a partner's support engineer can tell their customer from a failed post alone (its `error`, the
`scheduled_post.failed` webhook): each failure says what happened and what to do, and never invites a
second post of something that may already be on the platform."""

from datetime import timedelta

import httpx
import pytest
import time_machine
from django.test import Client
from django.utils import timezone

from accounts.models import Event
from scheduling import services
from scheduling.models import ManagedProvider
from scheduling.tasks import dispatch_due_posts
from tests.accounts.oauth_helpers import connected_account
from tests.platform_helpers import intercepted, invalidate_tokens, sandbox_posts
from tests.scheduling.publish_helpers import (
    later,
    managed_provider,
    post,
    run_dispatcher,
    schedule_now,
    sent_then_processing,
)

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_post_the_platform_accepted_before_its_token_died_says_it_may_be_live(owner):
    """TikTok took the post, then the creator's token died before Layers read how it ended: the post fails
    CREDENTIAL_INVALID. The partner's reflex for that code is "reauth, then schedule it again"; the message
    said only "The platform rejected the account's token while publishing.", while the post was live on
    TikTok, so the customer got it twice. Layers itself knows better (ops' retry skips such a post)."""
    account = connected_account(owner, "tiktok", "died.midway")
    post_id = sent_then_processing(owner, account["id"])
    invalidate_tokens("tiktok", "died.midway")

    with time_machine.travel(later(minutes=1)):
        services.post_resolve(post_id=post_id)

    assert len(sandbox_posts("tiktok", "died.midway")) == 1  # TikTok has it
    body = post(owner, post_id)
    assert body["status"] == "failed" and body["error"]["code"] == "CREDENTIAL_INVALID", body
    message = body["error"]["message"]
    assert "may already be on the platform" in message, message
    assert "reauth" in message, message
    (event,) = Event.objects.filter(type="scheduled_post.failed", data__id=post_id)
    assert event.data["error"] == body["error"]


@pytest.mark.parametrize("platform", ["tiktok", "instagram"])
def test_a_post_of_an_account_whose_creator_removed_the_app_does_not_say_it_expired(owner, platform):
    """The creator removed the app (TikTok's authorization.removed, Instagram's deauthorize callback): the
    account is reauth_required and its queued post fails at its time. Its message said "The account's
    authorization expired", so support told the customer their login had lapsed, when they had taken the
    app's access away themselves and must grant it again. The message now says what Layers knows (the
    platform no longer accepts the token) and what to do."""
    account = connected_account(owner, platform, f"removed.{platform}")
    scheduled = schedule_now(owner, account["id"], when=later(hours=1))
    removed = {"username": f"removed.{platform}"}
    answer = Client().post(f"/sandbox/{platform}/_control/deauthorize", removed, content_type="application/json")
    assert answer.status_code == 200, answer.content
    assert owner.client.get(f"/v1/social-accounts/{account['id']}").json()["status"] == "reauth_required"

    with time_machine.travel(later(hours=1, seconds=1)):
        run_dispatcher()

    body = post(owner, scheduled["id"])
    assert body["status"] == "failed" and body["error"]["code"] == "CREDENTIAL_INVALID", body
    message = body["error"]["message"]
    assert "expired" not in message, message
    assert "reauth" in message and "schedule the post again" in message.lower(), message


@pytest.mark.parametrize(
    "failure, words",
    [
        (httpx.ConnectTimeout, "tiktok: request timed out while connecting"),
        (httpx.ReadTimeout, "tiktok: request timed out waiting for the answer"),
        (httpx.ConnectError, "tiktok: could not connect"),
        (httpx.RemoteProtocolError, "tiktok: the connection broke mid-answer"),
    ],
)
def test_a_post_given_up_on_a_network_failure_says_what_happened_in_words_not_python(owner, settings, failure, words):
    settings.LAYERS_PUBLISH_RETRY_WINDOW = timedelta(minutes=10)
    account = connected_account(owner, "tiktok", "netfail")

    def broken(request, sandbox):
        raise failure("network", request=request)

    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        scheduled = schedule_now(owner, account["id"])
        with intercepted({"/creator_info/": broken}):
            while timezone.now() < start + timedelta(minutes=15):
                dispatch_due_posts()
                clock.shift(timedelta(seconds=10))

    error = post(owner, scheduled["id"])["error"]
    assert error["code"] == "PLATFORM_UNAVAILABLE", error
    assert words in error["message"], error
    # httpx's class name was the message ("request timed out (ReadTimeout)"): Python, to a partner.
    assert failure.__name__ not in error["message"], error
    assert Event.objects.get(type="scheduled_post.failed").data["error"] == error


def test_a_managed_post_whose_provider_was_disabled_since_says_layers_staff_must_set_one_up(owner):
    account = connected_account(owner, "tiktok", "managed.none")
    provider = managed_provider(project=owner.project, name="Boost", endpoint_url="https://p.example/in")
    scheduled = schedule_now(owner, account["id"], mode="managed")
    # Staff disable the provider before the post's time (scheduling refuses managed posts without one).
    ManagedProvider.objects.filter(pk=provider.pk).update(enabled=False)
    run_dispatcher()

    error = post(owner, scheduled["id"])["error"]
    assert error["code"] == "PLATFORM_REJECTED", error
    # "not configured" alone left the partner to guess who configures it: only Layers staff can.
    assert "Layers staff must set one up" in error["message"], error
    assert "not sent" in error["message"], error
