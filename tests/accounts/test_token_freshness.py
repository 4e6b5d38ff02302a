"""The token a platform call uses: renewed a few minutes ahead of its expiry, never overwritten by the answer
to an older grant's refresh, and never condemned by a refusal of an older grant; one needs_reauth per
transition however many workers find it dead."""

import pytest
from django.test import Client

from accounts import services
from accounts.models import Event, SocialAccount
from tests.accounts.oauth_helpers import connected_account
from tests.concurrency import run_in_threads

pytestmark = pytest.mark.django_db(transaction=True)


def sandbox_control(platform: str, action: str, body: dict):
    response = Client().post(f"/sandbox/{platform}/_control/{action}", body, content_type="application/json")
    assert response.status_code in (200, 201, 204), response.content


def test_a_refresh_refused_after_a_concurrent_reauth_does_not_condemn_the_new_token(owner, monkeypatch):
    # The health check refreshes with the old refresh token; while TikTok answers, the customer completes a
    # reauth (new token, token_version + 1). TikTok then refuses the old refresh token (TokenInvalid). The
    # account must stay connected on its fresh token, with no social_account.needs_reauth sent to the partner.
    from accounts.platforms.base import TokenInvalid

    account = connected_account(owner, "tiktok", "racer")
    real_client = services._client

    class RefreshLosesToAReauth:
        def refresh(self, *, tokens):
            row = SocialAccount.objects.get(pk=account["id"])
            row.token_version += 1  # what the reauth's store_tokens committed meanwhile
            row.save(update_fields=["token_version"])
            raise TokenInvalid("invalid_grant: the refresh token was rotated")

        def __getattr__(self, name):
            return getattr(real_client("tiktok"), name)

    monkeypatch.setattr(services, "_client", lambda platform: RefreshLosesToAReauth())

    services.social_account_refresh_token(account_id=account["id"])

    assert SocialAccount.objects.get(pk=account["id"]).status == "connected"
    assert not Event.objects.filter(type="social_account.needs_reauth").exists()


def test_needs_reauth_fires_once_per_transition_even_when_two_workers_both_find_the_token_dead(owner):
    # Two workers (a publish and the health check, or TikTok's authorization.removed delivered twice, which
    # TikTok does) both saw the account connected and both report its token dead: one transition, one event.
    account = connected_account(owner, "tiktok", "twice")
    version = SocialAccount.objects.get(pk=account["id"]).token_version

    def report(reason):
        return lambda: services.social_account_mark_reauth_required(
            account_id=account["id"], reason=reason, source=reason, expected_version=version
        )

    outcomes = run_in_threads(report("publish refused"), report("health check refused"))

    assert sorted(outcomes) == [False, True]
    assert Event.objects.filter(type="social_account.needs_reauth").count() == 1
    assert SocialAccount.objects.get(pk=account["id"]).status == "reauth_required"
    assert SocialAccount.objects.get(pk=account["id"]).status_changes.filter(to_status="reauth_required").count() == 1


def test_a_token_expiring_within_minutes_is_refreshed_before_a_platform_call(owner):
    # A TikTok access token 2 minutes from expiry is renewed before a publish uses it (it could expire on
    # the way: a slow upload, clocks that differ), rather than sent and then refused mid-publish.
    from datetime import timedelta

    from django.utils import timezone

    account = connected_account(owner, "tiktok", "skew")
    SocialAccount.objects.filter(pk=account["id"]).update(token_expires_at=timezone.now() + timedelta(minutes=2))
    before = SocialAccount.objects.select_related("identity").get(pk=account["id"])

    fresh = services.social_account_with_fresh_token(account=before)

    assert fresh.status == "connected"
    assert fresh.token_version == before.token_version + 1
    assert fresh.token_expires_at > timezone.now() + timedelta(hours=1)


def test_a_refresh_that_returns_after_a_reauth_does_not_overwrite_the_reauths_token(owner, monkeypatch):
    # The health check's refresh is in flight when the customer completes a reauth (which may have granted
    # more scopes). The refresh's answer is for the old grant: the reauth's token must win (its scopes kept).
    from dataclasses import replace

    account = connected_account(owner, "tiktok", "overwrite")
    real_client = services._client

    class RefreshRacesAReauth:
        def refresh(self, *, tokens):
            refreshed = real_client("tiktok").refresh(tokens=tokens)
            row = SocialAccount.objects.get(pk=account["id"])
            services.store_tokens(
                row, replace(refreshed, access_token="reauth-token", scopes=("video.publish", "extra"))
            )
            row.save()  # what the reauth committed meanwhile
            return refreshed

        def __getattr__(self, name):
            return getattr(real_client("tiktok"), name)

    monkeypatch.setattr(services, "_client", lambda platform: RefreshRacesAReauth())

    services.social_account_refresh_token(account_id=account["id"])

    row = SocialAccount.objects.get(pk=account["id"])
    assert row.access_token == "reauth-token"
    assert row.scopes == "video.publish,extra"


def test_a_database_connection_dropped_while_tiktok_rotates_the_refresh_token_keeps_the_account_connected(owner):
    # TikTok rotates the refresh token at every refresh: once it has answered, only the pair it answered with
    # works. A database connection dropped during that call (a failover, a restart, an idle connection killed)
    # must not lose that pair, or the next refresh is refused (invalid_grant), the account goes reauth_required,
    # the partner gets needs_reauth and the customer must consent again.
    from datetime import timedelta

    import time_machine
    from django.utils import timezone

    from tests.platform_helpers import answered_then_database_dropped, intercepted

    account = connected_account(owner, "tiktok", "blip.refresh")
    before = SocialAccount.objects.get(pk=account["id"])

    with time_machine.travel(timezone.now() + timedelta(hours=20)):
        with intercepted({"/oauth/token/": answered_then_database_dropped}):
            outcome = services.social_account_refresh_token(account_id=account["id"])
        row = SocialAccount.objects.get(pk=account["id"])
        # and the next refresh, past the first one's claim, uses the stored pair
        with time_machine.travel(timezone.now() + timedelta(minutes=3)):
            again = services.social_account_refresh_token(account_id=account["id"])

    assert outcome == "refreshed"
    assert row.token_version == before.token_version + 1 and row.refresh_claimed_until is None
    assert again == "refreshed"
    assert SocialAccount.objects.get(pk=account["id"]).status == "connected"
    assert owner.client.get(f"/v1/social-accounts/{account['id']}").json()["status"] == "connected"
    assert not Event.objects.filter(type="social_account.needs_reauth").exists()


def test_a_refresh_whose_commit_went_through_but_whose_answer_was_lost_is_not_written_twice(owner, monkeypatch):
    # The connection can drop after the server committed the new pair but before the worker heard so: the
    # write is not made a second time (the account's token moves on once) and the refresh reads as done.
    from django.db import OperationalError, transaction

    account = connected_account(owner, "tiktok", "lost.commit")
    before = SocialAccount.objects.get(pk=account["id"])
    real_store = services.store_tokens
    lost = []

    def store_then_lose_the_commits_answer(row, tokens):
        real_store(row, tokens)
        if not lost:
            lost.append(True)
            transaction.on_commit(lambda: (_ for _ in ()).throw(OperationalError("server closed the connection")))

    monkeypatch.setattr(services, "store_tokens", store_then_lose_the_commits_answer)

    outcome = services.social_account_refresh_token(account_id=account["id"])

    row = SocialAccount.objects.get(pk=account["id"])
    assert (outcome, lost) == ("refreshed", [True])
    assert row.token_version == before.token_version + 1 and row.status == "connected"
