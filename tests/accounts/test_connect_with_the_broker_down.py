"""A broker outage when a customer comes back from the consent page: the account is connected and the
customer is sent back to the partner as usual (before, the callback answered 500 after committing the
account); the post-connect fan-out that could not be queued is queued by the provisioning tick."""

from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.utils import timezone

from accounts import tasks
from accounts.models import OnboardingStep
from scheduling.models import Layer
from tests.accounts.oauth_helpers import RETURN_URL, connect, status
from tests.outages import broker_down

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_connect_during_a_broker_outage_completes_and_is_provisioned_once_the_broker_is_back(
    owner, monkeypatch, caplog
):
    with monkeypatch.context() as outage:
        outage.setattr(tasks.social_account_after_connect, "delay", broker_down)
        state, response = connect(owner, "tiktok", "unlucky.creator")

    assert response.status_code == 302 and response["Location"] == RETURN_URL
    body = status(owner, state)
    assert body["status"] == "completed"
    account_id = body["socialAccountId"]
    account = owner.client.get(f"/v1/social-accounts/{account_id}").json()
    assert account["status"] == "connected" and account["layers"] == [] and account["avatarUrl"] is None
    assert any("could not queue accounts.tasks.social_account_after_connect" in r.getMessage() for r in caplog.records)

    # The fan-out is the task's job first: the tick leaves a new account alone for ten minutes.
    assert tasks.social_accounts_provision_tick.apply().result == 0
    with time_machine.travel(timezone.now() + timedelta(minutes=11)):
        assert tasks.social_accounts_provision_tick.apply().result == 1  # eager in tests: the fan-out runs now
        assert tasks.social_accounts_provision_tick.apply().result == 0

    account = owner.client.get(f"/v1/social-accounts/{account_id}").json()
    assert len(account["layers"]) == 4
    assert account["avatarUrl"] and account["avatarUrl"].startswith(settings.LAYERS_PUBLIC_URL)
    assert OnboardingStep.objects.filter(organization=owner.org, key="tiktok.connected").exists()


def test_the_tick_leaves_provisioned_and_disconnected_accounts_alone(owner):
    connect(owner, "instagram", "fine.creator")
    with pytest.MonkeyPatch.context() as outage:
        outage.setattr(tasks.social_account_after_connect, "delay", broker_down)
        state, _ = connect(owner, "tiktok", "left.early")
    gone = status(owner, state)["socialAccountId"]
    assert owner.client.delete(f"/v1/social-accounts/{gone}").status_code == 200

    with time_machine.travel(timezone.now() + timedelta(hours=1)):
        assert tasks.social_accounts_provision_tick.apply().result == 0
    assert not Layer.objects.filter(social_account_id=gone).exists()


def test_a_connected_account_whose_avatar_copy_gave_up_gets_it_from_the_tick_for_a_day(owner, monkeypatch):
    """The avatar copy failing through every retry (the platform's CDN down for the hour they span) left a
    connected account at `avatarUrl: null` for good: the tick looked only at its layers, which were in place.
    It now copies it again for a day, as for a leased account (a profile without a picture is not asked for
    every ten minutes forever)."""
    from config.netguard import FetchFailed

    def cdn_down(*args, **kwargs):
        raise FetchFailed("the platform's CDN did not answer")

    with monkeypatch.context() as outage:
        outage.setattr("config.netguard.fetch_limited", cdn_down)
        connect(owner, "tiktok", "camera.shy")  # eager in tests: the fan-out and its retries ran
        state, _ = connect(owner, "instagram", "still.shy")
    account_id = status(owner, state)["socialAccountId"]
    account = owner.client.get(f"/v1/social-accounts/{account_id}").json()
    assert len(account["layers"]) == 4 and account["avatarUrl"] is None

    with time_machine.travel(timezone.now() + timedelta(days=1, minutes=1)), monkeypatch.context() as outage:
        outage.setattr("config.netguard.fetch_limited", cdn_down)
        assert tasks.social_accounts_provision_tick.apply().result == 0  # past the day: left alone
    with time_machine.travel(timezone.now() + timedelta(minutes=11)):
        assert tasks.social_accounts_provision_tick.apply().result == 2  # eager in tests: the copies run now
        assert tasks.social_accounts_provision_tick.apply().result == 0

    account = owner.client.get(f"/v1/social-accounts/{account_id}").json()
    assert account["avatarUrl"] and account["avatarUrl"].startswith(settings.LAYERS_PUBLIC_URL)
