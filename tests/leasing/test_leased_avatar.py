"""A rented account shows its profile picture like a connected one. Every leased account had `avatarUrl: null`
in the account's GET, the project's list and its later webhooks, while a connected binding of the same TikTok
user got a Layers-hosted copy: the assignment created the binding and its layers but never queued the avatar
copy that a connect queues, and the provisioning tick looked at connected accounts only."""

from datetime import timedelta
from urllib.parse import urlsplit

import pytest
import time_machine
from django.conf import settings
from django.core.files.storage import default_storage
from django.test import Client
from django.utils import timezone

from accounts import services, tasks
from accounts.models import Event, OnboardingStep, SocialAccount
from config.netguard import FetchFailed
from leasing import services as leasing
from leasing.models import PoolAccount
from tests.leasing.helpers import add_pool, get_request, request_accounts
from tests.outages import broker_down

pytestmark = pytest.mark.django_db(transaction=True)


def lease(owner, count: int = 1, project=None) -> dict:
    """Request `count` accounts and assign them (auto); the request as the partner reads it."""
    accepted = request_accounts(owner, count, project=project)
    leasing.lease_assign(request_id=accepted["requestId"], auto=True)
    return get_request(owner, accepted["requestId"], project=project)


def media_name(url: str) -> str:
    path = urlsplit(url).path
    assert path.startswith(settings.MEDIA_URL), url
    return path[len(settings.MEDIA_URL) :]


def test_an_assigned_leased_account_shows_a_layers_hosted_avatar(owner):
    add_pool(2)

    request = lease(owner, 2)

    assert request["status"] == "assigned" and len(request["socialAccountIds"]) == 2
    for account_id in request["socialAccountIds"]:
        account = owner.client.get(f"/v1/social-accounts/{account_id}").json()
        assert account["kind"] == "leased" and len(account["layers"]) == 4
        assert account["avatarUrl"] and account["avatarUrl"].startswith(settings.LAYERS_PUBLIC_URL), account
        assert Client().get(urlsplit(account["avatarUrl"]).path).status_code == 200
    listed = owner.client.get(f"/v1/projects/{owner.project.id}/social-accounts", {"kind": "leased"}).json()["data"]
    assert sorted(a["id"] for a in listed) == sorted(request["socialAccountIds"])
    assert all(a["avatarUrl"] for a in listed), listed
    # The webhook announcing them carries their ids (the request), not the accounts: it is recorded with the
    # assignment, before the copy; the account's GET is where the avatar is read.
    assigned = Event.objects.get(type="lease_request.assigned")
    assert assigned.data["socialAccountIds"] == request["socialAccountIds"] and "avatarUrl" not in assigned.data
    # Renting accounts is not the organization connecting its own TikTok: its onboarding step stays open.
    assert not OnboardingStep.objects.filter(organization=owner.org).exists()


def fetch_fails(*args, **kwargs):
    raise FetchFailed("the platform's CDN did not answer")


@pytest.mark.parametrize("outage", ["broker", "avatar download"])
def test_an_avatar_not_copied_at_assignment_never_fails_it_and_the_tick_copies_it_later(owner, monkeypatch, outage):
    add_pool(1)
    with monkeypatch.context() as down:
        if outage == "broker":
            down.setattr(tasks.social_account_after_connect, "delay", broker_down)
        else:
            down.setattr("config.netguard.fetch_limited", fetch_fails)
        request = lease(owner)

    assert request["status"] == "assigned"
    (account_id,) = request["socialAccountIds"]
    account = owner.client.get(f"/v1/social-accounts/{account_id}").json()
    assert account["status"] == "connected" and len(account["layers"]) == 4 and account["avatarUrl"] is None

    # The copy is the task's job first: the tick leaves a new account alone for ten minutes.
    assert tasks.social_accounts_provision_tick.apply().result == 0
    with time_machine.travel(timezone.now() + timedelta(minutes=11)):
        assert tasks.social_accounts_provision_tick.apply().result == 1  # eager in tests: the copy runs now
        assert tasks.social_accounts_provision_tick.apply().result == 0

    account = owner.client.get(f"/v1/social-accounts/{account_id}").json()
    assert account["avatarUrl"] and account["avatarUrl"].startswith(settings.LAYERS_PUBLIC_URL)
    assert not OnboardingStep.objects.filter(organization=owner.org).exists()


def test_the_tick_leaves_copied_released_and_day_old_leased_accounts_alone(owner, monkeypatch):
    add_pool(3)
    copied = lease(owner)["socialAccountIds"][0]
    with monkeypatch.context() as down:
        down.setattr(tasks.social_account_after_connect, "delay", broker_down)
        released = lease(owner)["socialAccountIds"][0]
        uncopied = lease(owner, project=owner.projects[1])["socialAccountIds"][0]
    assert owner.client.delete(f"/v1/leased-accounts/{released}").status_code == 200
    assert SocialAccount.objects.get(pk=copied).avatar_url

    assert services.social_accounts_unprovisioned(now=timezone.now() + timedelta(minutes=11)) == [uncopied]
    # A day on, it is left too: a TikTok profile without a picture would otherwise be asked for every ten
    # minutes for as long as the lease lasts.
    with time_machine.travel(timezone.now() + timedelta(days=1, minutes=1)):
        assert tasks.social_accounts_provision_tick.apply().result == 0
    assert SocialAccount.objects.get(pk=uncopied).avatar_url == ""
    assert SocialAccount.objects.get(pk=released).avatar_url == ""


def test_releasing_a_leased_account_deletes_its_avatar_copy_and_the_next_lease_gets_its_own(owner):
    (pool_id,) = add_pool(1)
    (account_id,) = lease(owner)["socialAccountIds"]
    first = SocialAccount.objects.get(pk=account_id).avatar_url
    assert default_storage.exists(media_name(first))

    assert owner.client.delete(f"/v1/leased-accounts/{account_id}").status_code == 200

    assert not default_storage.exists(media_name(first))
    assert Client().get(urlsplit(first).path).status_code == 404
    assert owner.client.get(f"/v1/social-accounts/{account_id}").json()["avatarUrl"] is None
    assert Event.objects.get(type="social_account.disconnected", data__id=account_id).data["avatarUrl"] is None

    assert PoolAccount.objects.get(pk=pool_id).status == "available"
    (again,) = lease(owner, project=owner.projects[1])["socialAccountIds"]
    second = owner.client.get(f"/v1/social-accounts/{again}").json()["avatarUrl"]
    assert second and second != first and default_storage.exists(media_name(second))
