"""Pool tokens when TikTok issues 2 h access tokens (PLATFORMS.md: 24 h or 2 h, read expires_in): refreshed a
third of their lifetime before they expire, not at every run of the refresh task (the pool's 6 h margin alone
is longer than the token's life), and that lifetime travels with the token to the leased account and back."""

from datetime import timedelta

import pytest
import time_machine
from django.test import Client
from django.utils import timezone

from accounts.models import SocialAccount
from accounts.tasks import social_accounts_health_tick
from leasing import services
from leasing.models import PoolAccount
from leasing.tasks import pool_accounts_refresh_tick
from tests.leasing.helpers import add_pool, get_request, request_accounts
from tests.platform_helpers import tiktok_refreshes
from tests.staff import admin_object_url, staff_login, superuser

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def two_hour_tokens(settings):
    settings.LAYERS_SANDBOX_TIKTOK_ACCESS_TTL = timedelta(hours=2)
    settings.LAYERS_SANDBOX_TIKTOK_REFRESH_TTL = timedelta(days=180)


def test_the_pool_account_page_shows_the_access_tokens_lifetime():
    # What tells ops how often its token is refreshed (a third of its lifetime before it expires).
    (pool_id,) = add_pool(1)
    PoolAccount.objects.filter(pk=pool_id).update(token_lifetime=timedelta(hours=24))
    page = staff_login(Client(), superuser("ops2")).get(admin_object_url(PoolAccount, pool_id)).content.decode()
    assert "Token lifetime" in page and "1 day" in page


def test_the_pool_refresh_task_refreshes_two_hour_tokens_once_per_lifetime():
    [pool_id] = add_pool(1)
    handle = PoolAccount.objects.get(pk=pool_id).handle
    start = timezone.now()

    for tick in range(1, 7):  # three hours of the beat task, every 30 minutes
        with time_machine.travel(start + timedelta(minutes=30 * tick)):
            pool_accounts_refresh_tick.apply()  # eager in tests: the refreshes run now
            pool = PoolAccount.objects.get(pk=pool_id)
            assert pool.status == "available" and pool.token_expires_at > timezone.now(), f"expired at tick {tick}"

    assert tiktok_refreshes(handle) == 2  # at 1 h 30 and 3 h: 40 minutes before each token expired


def test_a_leased_account_keeps_its_short_lived_token_as_long_as_it_lives_and_gives_it_back(owner):
    [pool_id] = add_pool(1)
    handle = PoolAccount.objects.get(pk=pool_id).handle
    accepted = request_accounts(owner, 1)
    services.lease_assign(request_id=accepted["requestId"], auto=True)
    [account_id] = get_request(owner, accepted["requestId"])["socialAccountIds"]
    start = timezone.now()

    for tick in range(1, 7):  # an hour of the accounts' health ticks
        with time_machine.travel(start + timedelta(minutes=10 * tick)):
            social_accounts_health_tick()
    assert tiktok_refreshes(handle) == 0  # an hour into its 2 h: not due yet
    assert SocialAccount.objects.get(pk=account_id).status == "connected"

    with time_machine.travel(start + timedelta(hours=1)):
        assert owner.client.delete(f"/v1/social-accounts/{account_id}").status_code == 200  # the release
        assert pool_id not in services.pool_accounts_due_for_refresh()
    with time_machine.travel(start + timedelta(hours=1, minutes=30)):
        assert services.pool_accounts_due_for_refresh() == [pool_id]


@pytest.mark.parametrize("expires_in", ["7200.0", 1e20, "7200s", 0, None])
def test_a_pool_account_survives_a_refresh_answer_with_an_odd_lifetime(expires_in):
    # TikTok rotates the refresh token: a lifetime the client could not read raised after the rotation, the pool
    # refresh kept nothing ("nothing changed"), and the next refresh sent the dead token: the account retired.
    from leasing.tasks import pool_account_refresh_token
    from tests.platform_helpers import intercepted, token_answer_with

    [pool_id] = add_pool(1)
    handle = PoolAccount.objects.get(pk=pool_id).handle
    with time_machine.travel(timezone.now() + timedelta(hours=1, minutes=30)):  # due: 40 minutes before expiry
        with intercepted({"/tiktok/v2/oauth/token/": token_answer_with(expires_in=expires_in)}):
            assert pool_account_refresh_token.apply(args=[pool_id]).result == "refreshed"
        pool = PoolAccount.objects.get(pk=pool_id)
        assert pool.status == "available" and timedelta(hours=1) <= pool.token_lifetime <= timedelta(hours=24)
        assert pool.token_expires_at >= timezone.now() + timedelta(hours=1)
    assert tiktok_refreshes(handle) == 1

    with time_machine.travel(timezone.now() + timedelta(days=2)):  # the stored refresh token is the live one
        assert services.pool_account_refresh_due(pool_account_id=pool_id) == "refreshed"
        assert PoolAccount.objects.get(pk=pool_id).status == "available"
