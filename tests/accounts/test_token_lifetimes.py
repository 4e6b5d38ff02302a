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


# --- Lifetimes a token answer gives in an unexpected shape ------------------------------------------------
# TikTok rotates the refresh token on every refresh: a lifetime the client could not read (int("86400.0"),
# int(1e20) overflowing the expiry) raised an untyped error after the rotation, the new pair was dropped, and
# the next refresh sent the dead refresh token: reauth_required for a grant that was fine. A lifetime of 0,
# negative or null stored a token expiring now: refreshed (rotated) before every platform call. Lifetimes are
# now read by one reader: an unusable one is the platform's documented (shortest) lifetime, an absurd one the
# longest it documents; a short one is kept (its refresh margin is a third of it); a WARNING names the
# platform and the field when the answer's value is not used.

TIKTOK_FALLBACK, TIKTOK_LONGEST = timedelta(hours=2), timedelta(hours=24)
INSTAGRAM_LIFETIME = timedelta(days=60)
MISSING = ...  # token_answer_with: the field is left out of the answer
UNUSABLE = [MISSING, None, 0, -3600, "86400s", "", [86400], {"seconds": 86400}, True, float("nan")]


def lifetime_cases(fallback: timedelta, longest: timedelta) -> list:
    return [
        *[pytest.param(value, fallback, id=f"unusable-{value!r}") for value in UNUSABLE],
        pytest.param("43200.0", timedelta(hours=12), id="numeric string with a fraction"),
        pytest.param(43200.0, timedelta(hours=12), id="float"),
        pytest.param("43200", timedelta(hours=12), id="numeric string"),
        pytest.param(1e20, longest, id="1e20"),
        pytest.param(10**30, longest, id="10**30"),
        pytest.param("1e400", longest, id="beyond a float"),
        pytest.param(10**400, longest, id="an integer beyond a float"),
        pytest.param(600, timedelta(minutes=10), id="ten minutes, kept: taken as longer, it would die unrefreshed"),
    ]


def refresh_tiktok(tokens, **fields):
    from accounts.platforms import get_client
    from tests.platform_helpers import intercepted, token_answer_with

    with intercepted({"/tiktok/v2/oauth/token/": token_answer_with(**fields)}):
        return get_client("tiktok").refresh(tokens=tokens)


@pytest.mark.parametrize(("expires_in", "lifetime"), lifetime_cases(TIKTOK_FALLBACK, TIKTOK_LONGEST))
def test_tiktok_reads_any_expires_in_as_a_bounded_lifetime_and_keeps_the_tokens(expires_in, lifetime, caplog):
    from tests.platform_helpers import connect

    tokens = connect("tiktok", "odd.lifetime")
    caplog.clear()
    fresh = refresh_tiktok(tokens, expires_in=expires_in)

    assert fresh.refresh_token and fresh.refresh_token != tokens.refresh_token  # the rotated pair, in hand
    assert fresh.lifetime == lifetime
    assert fresh.expires_at - timezone.now() == pytest.approx(lifetime, abs=timedelta(seconds=5))
    if lifetime not in (timedelta(hours=12), timedelta(minutes=10)):  # a usable lifetime says nothing
        [warning] = [r for r in caplog.records if r.levelname == "WARNING"]
        assert "tiktok" in warning.getMessage() and "expires_in" in warning.getMessage()
        assert fresh.access_token not in caplog.text and fresh.refresh_token not in caplog.text
    else:
        assert not [r for r in caplog.records if r.levelname == "WARNING"]


@pytest.mark.parametrize(
    ("refresh_expires_in", "lifetime"),
    [
        *[pytest.param(value, None, id=f"unusable-{value!r}") for value in UNUSABLE],  # unknown, as before
        pytest.param("15552000.0", timedelta(days=180), id="numeric string with a fraction"),
        pytest.param(1e20, timedelta(days=365), id="1e20"),
    ],
)
def test_tiktok_reads_any_refresh_expires_in_and_keeps_the_tokens(refresh_expires_in, lifetime):
    from tests.platform_helpers import connect

    tokens = connect("tiktok", "odd.refresh.lifetime")
    fresh = refresh_tiktok(tokens, refresh_expires_in=refresh_expires_in)

    assert fresh.refresh_token and fresh.refresh_token != tokens.refresh_token
    if lifetime is None:
        assert fresh.refresh_expires_at is None
    else:
        assert fresh.refresh_expires_at - timezone.now() == pytest.approx(lifetime, abs=timedelta(seconds=5))


@pytest.mark.parametrize(("expires_in", "lifetime"), lifetime_cases(INSTAGRAM_LIFETIME, INSTAGRAM_LIFETIME))
@pytest.mark.parametrize("endpoint", ["/instagram/graph/access_token", "/instagram/graph/refresh_access_token"])
def test_instagram_reads_any_expires_in_as_a_bounded_lifetime(owner, endpoint, expires_in, lifetime, caplog):
    from accounts.platforms import get_client
    from tests.platform_helpers import intercepted, token_answer_with

    if endpoint.endswith("/graph/access_token"):  # the connect's long-lived exchange
        with intercepted({endpoint: token_answer_with(expires_in=expires_in)}):
            account_id = connected_account(owner, "instagram", "odd.lifetime")["id"]
        row = SocialAccount.objects.get(pk=account_id)
        got, expires_at = row.token_lifetime, row.token_expires_at
    else:
        from tests.platform_helpers import connect

        tokens = connect("instagram", "odd.lifetime")
        with time_machine.travel(timezone.now() + timedelta(days=2)):  # Instagram refreshes a day-old token
            with intercepted({endpoint: token_answer_with(expires_in=expires_in)}):
                fresh = get_client("instagram").refresh(tokens=tokens)
            got, expires_at = fresh.lifetime, fresh.expires_at
            assert expires_at - timezone.now() == pytest.approx(lifetime, abs=timedelta(seconds=5))
    assert got == lifetime
    if lifetime not in (timedelta(hours=12), timedelta(minutes=10)):  # a usable lifetime says nothing
        assert "instagram" in caplog.text and "expires_in" in caplog.text


@pytest.mark.parametrize("expires_in", ["86400.0", 1e20, "86400s", None, [1]])
def test_a_tiktok_refresh_answer_with_an_odd_expires_in_does_not_lose_the_rotated_tokens(owner, expires_in):
    from tests.platform_helpers import intercepted, token_answer_with

    account = connected_account(owner, "tiktok", "shape.refresh")
    with intercepted({"/tiktok/v2/oauth/token/": token_answer_with(expires_in=expires_in)}):
        assert services.social_account_refresh_token(account_id=account["id"]) == "refreshed"
    assert tiktok_refreshes("shape.refresh") == 1  # TikTok did rotate, and the new pair was stored

    with time_machine.travel(timezone.now() + timedelta(minutes=5)):
        result = services.social_account_refresh_token(account_id=account["id"])
    assert (result, SocialAccount.objects.get(pk=account["id"]).status) == ("refreshed", "connected")


@pytest.mark.parametrize("expires_in", ["86400.0", 1e20, 0])
def test_the_health_check_refreshes_on_an_odd_tiktok_answer_and_the_account_stays_connected(owner, expires_in):
    from accounts.tasks import social_account_check_health
    from tests.platform_helpers import intercepted, token_answer_with

    account_id = connected_account(owner, "tiktok", "shape.health")["id"]
    with time_machine.travel(timezone.now() + timedelta(hours=23)):  # due: within the margin of its expiry
        with intercepted({"/tiktok/v2/oauth/token/": token_answer_with(expires_in=expires_in)}):
            assert social_account_check_health.apply(args=[account_id]).result == "refreshed"
        row = SocialAccount.objects.get(pk=account_id)
        assert row.status == "connected" and row.health_next_attempt_at is None
        assert row.token_expires_at > timezone.now() + timedelta(hours=1)
    with time_machine.travel(timezone.now() + timedelta(days=2)):  # the stored refresh token is the live one
        assert services.social_account_refresh_token(account_id=account_id) == "refreshed"


@pytest.mark.parametrize("expires_in", [0, -3600, None, MISSING])
def test_a_token_answer_without_a_usable_lifetime_does_not_refresh_before_every_post(owner, expires_in):
    from tests.platform_helpers import intercepted, token_answer_with
    from tests.scheduling.publish_helpers import post, run_dispatcher, schedule_now

    with intercepted({"/tiktok/v2/oauth/token/": token_answer_with(expires_in=expires_in)}):
        account = connected_account(owner, "tiktok", "shape.zero")
        posts = [schedule_now(owner, account["id"], caption=f"post {n}") for n in range(4)]
        run_dispatcher()
        for n in range(4):  # and again, one at a time
            schedule_now(owner, account["id"], caption=f"later post {n}")
            run_dispatcher()
    assert tiktok_refreshes("shape.zero") == 0  # the token issued at the connect lives its documented 2 h
    assert [post(owner, p["id"])["status"] for p in posts] == ["published"] * 4
