"""TikTok's access tokens live 24 h or 2 h depending on which of its docs one reads (PLATFORMS.md: always read
expires_in). The health check refreshes a token a margin before it expires; a margin longer than the token's
life (6 h for a 2 h token) made every token due at every tick: each TikTok account was refreshed every 10
minutes, and, the due list being ordered by soonest expiry and bounded, the daily check of every other
account waited behind them for good. The margin is now the configured one or a third of the token's
lifetime, whichever is shorter."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from accounts import services
from accounts.models import SocialAccount
from accounts.tasks import social_accounts_health_tick
from tests.accounts.oauth_helpers import connected_account
from tests.platform_helpers import tiktok_refreshes

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def two_hour_tokens(settings):
    """The sandbox's TikTok issues tokens as the other doc version says: 2 h access, 180 d refresh."""
    settings.LAYERS_SANDBOX_TIKTOK_ACCESS_TTL = timedelta(hours=2)
    settings.LAYERS_SANDBOX_TIKTOK_REFRESH_TTL = timedelta(days=180)


def test_two_hour_tiktok_tokens_are_refreshed_once_per_lifetime_not_at_every_health_tick(owner, two_hour_tokens):
    account_id = connected_account(owner, "tiktok", "two_hours")["id"]
    start = timezone.now()
    assert SocialAccount.objects.get(pk=account_id).token_expires_at <= start + timedelta(hours=2)

    for tick in range(1, 13):  # two hours of health ticks, every 10 minutes (the beat's pace)
        with time_machine.travel(start + timedelta(minutes=10 * tick)):
            social_accounts_health_tick()  # eager in tests: the checks run now
            row = SocialAccount.objects.get(pk=account_id)
            assert row.status == "connected" and row.token_expires_at > timezone.now(), f"expired at tick {tick}"

    assert tiktok_refreshes("two_hours") == 1  # once, before the token expired; not once every tick


def test_two_hour_tiktok_tokens_do_not_starve_the_daily_check_of_other_accounts(owner, two_hour_tokens):
    tiktok = connected_account(owner, "tiktok", "short_lived")["id"]
    instagram = connected_account(owner, "instagram", "checked_daily")["id"]
    # A day later both are due: the Instagram account's daily check, the TikTok account's expired token.
    start = timezone.now() + timedelta(hours=25)

    picked = []
    for tick in range(6):  # an hour of health ticks whose batch holds one account
        with time_machine.travel(start + timedelta(minutes=10 * tick)):
            for account_id in services.social_accounts_due_for_health(limit=1):
                picked.append(account_id)
                services.social_account_check_health(account_id=account_id)

    assert picked == [tiktok, instagram]  # the soonest expiry first, then the other; then nothing is due
    assert SocialAccount.objects.get(pk=instagram).health_checked_at >= start


@pytest.mark.parametrize(
    ("platform", "lifetime", "margin"),
    [
        ("tiktok", timedelta(hours=24), timedelta(hours=6)),  # the configured margin: shorter than a third
        ("tiktok", timedelta(hours=2), timedelta(minutes=40)),  # a third of the lifetime
        ("instagram", timedelta(seconds=5183944), timedelta(days=7)),
    ],
)
def test_a_token_is_due_for_its_refresh_a_margin_before_it_expires(owner, settings, platform, lifetime, margin):
    settings.LAYERS_SANDBOX_TIKTOK_ACCESS_TTL = lifetime if platform == "tiktok" else timedelta(hours=24)
    account_id = connected_account(owner, platform, "due_later")["id"]
    expires = SocialAccount.objects.get(pk=account_id).token_expires_at
    assert expires <= timezone.now() + lifetime

    with time_machine.travel(expires - margin - timedelta(minutes=5)):
        SocialAccount.objects.filter(pk=account_id).update(health_checked_at=timezone.now())
        assert account_id not in services.social_accounts_due_for_health()
        assert services.social_account_check_health(account_id=account_id) == "healthy"
    with time_machine.travel(expires - margin + timedelta(minutes=1)):
        assert account_id in services.social_accounts_due_for_health()
        assert services.social_account_check_health(account_id=account_id) == "refreshed"


def test_a_batch_full_of_due_tiktok_tokens_still_takes_the_due_instagram_ones(owner):
    # The due list is bounded (1,000 a tick) and was ordered by soonest expiry across platforms: while more
    # TikTok tokens were due than a batch holds (20,000 accounts on 2 h tokens need ~2,500 refreshes a tick),
    # their hours-long expiries always came before an Instagram token's days, and Instagram's 60-day tokens
    # ran out unrefreshed (every Instagram account reauth_required). Each platform now gets its turn.
    from tests.factories import make_account

    now = timezone.now()
    batch = 20  # stands for the tick's 1,000
    for _ in range(batch + 5):
        tiktok = make_account(owner, platform="tiktok")
        SocialAccount.objects.filter(pk=tiktok.pk).update(
            token_expires_at=now + timedelta(hours=1), health_checked_at=now, refresh_token_enc="x"
        )
    instagram = make_account(owner, platform="instagram")
    SocialAccount.objects.filter(pk=instagram.pk).update(
        token_expires_at=now + timedelta(days=3), health_checked_at=now - timedelta(days=2)
    )

    due = services.social_accounts_due_for_health(now=now, limit=batch)

    assert instagram.pk in due and len(due) == batch, due
