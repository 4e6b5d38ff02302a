"""Token health, reauth, revoke and secrecy of tokens, through the real clients and the sandbox."""

import logging
import subprocess
from datetime import timedelta

import pytest
import time_machine
from django.core.files.storage import default_storage
from django.db import connection
from django.test import Client
from django.utils import timezone

from accounts import services, tasks
from accounts.models import Event, OAuthSession, PlatformIdentity, SocialAccount
from accounts.platforms import scopes as platform_scopes
from config import netguard
from scheduling.models import Layer
from tests.accounts.oauth_helpers import (
    RETURN_URL,
    connected_account,
    consent_and_return,
    reauthorize,
    sent_back_to,
    status,
)
from tests.conftest import assert_error
from tests.platform_helpers import intercepted, platform_down

pytestmark = pytest.mark.django_db(transaction=True)


def sandbox_control(platform: str, action: str, body: dict):
    response = Client().post(f"/sandbox/{platform}/_control/{action}", body, content_type="application/json")
    assert response.status_code in (200, 201, 204), response.content
    return response


def reauth_link(tenant, account_id: str, **extra):
    return tenant.client.post(
        f"/v1/projects/{tenant.project.id}/social/reauth-url",
        {"socialAccountId": account_id, **extra},
        format="json",
    )


@pytest.mark.parametrize("platform", ["tiktok", "instagram"])
def test_dead_token_flips_to_reauth_required_with_one_event(owner, platform):
    account = connected_account(owner, platform, "dying")
    sandbox_control(platform, "invalidate-tokens", {"username": "dying"})

    assert services.social_account_check_health(account_id=account["id"]) == "reauth_required"
    assert services.social_account_check_health(account_id=account["id"]) == "skipped"

    body = owner.client.get(f"/v1/social-accounts/{account['id']}").json()
    assert body["status"] == "reauth_required" and body["reauthRequiredAt"].endswith("Z")
    assert Event.objects.filter(type="social_account.needs_reauth").count() == 1
    listed = owner.client.get(f"/v1/projects/{owner.project.id}/social-accounts?status=reauth_required").json()
    assert [a["id"] for a in listed["data"]] == [account["id"]]


@pytest.mark.parametrize("kind", ["server_error", "timeout", "rate_limited"])
def test_transient_platform_errors_do_not_flip_the_status(owner, kind):
    account = connected_account(owner, "tiktok", "flaky")
    sandbox_control("tiktok", "faults", {"username": "flaky", "kind": kind, "count": 3})
    SocialAccount.objects.filter(pk=account["id"]).update(health_checked_at=None)

    from accounts.platforms.base import PlatformUnavailable, RateLimited

    with pytest.raises((PlatformUnavailable, RateLimited)):
        services.social_account_check_health(account_id=account["id"])
    assert SocialAccount.objects.get(pk=account["id"]).status == "connected"
    assert not Event.objects.filter(type="social_account.needs_reauth").exists()


def test_health_check_refreshes_a_tiktok_token_before_it_expires_and_keeps_the_rotated_refresh_token(owner):
    account = connected_account(owner, "tiktok", "refresher")
    row = SocialAccount.objects.get(pk=account["id"])
    old_access, old_refresh, version = row.access_token, row.refresh_token, row.token_version

    with time_machine.travel(timezone.now() + timedelta(hours=20)):
        assert account["id"] in services.social_accounts_due_for_health()
        assert services.social_account_check_health(account_id=account["id"]) == "refreshed"
        row.refresh_from_db()
        assert row.access_token != old_access and row.refresh_token != old_refresh
        assert row.token_version == version + 1
        assert row.token_expires_at > timezone.now() + timedelta(hours=20)
        # The next refresh uses the rotated refresh token: it works, so the newest one was persisted.
        SocialAccount.objects.filter(pk=row.pk).update(token_expires_at=timezone.now())
        assert services.social_account_refresh_token(account_id=row.pk) == "refreshed"
    assert SocialAccount.objects.get(pk=row.pk).status == "connected"


def test_a_refresh_already_claimed_by_another_worker_is_skipped(owner):
    account = connected_account(owner, "tiktok", "claimed")
    SocialAccount.objects.filter(pk=account["id"]).update(refresh_claimed_until=timezone.now() + timedelta(minutes=1))
    assert services.social_account_refresh_token(account_id=account["id"]) == "skipped"


def test_health_tick_queues_checks_for_due_accounts(owner):
    from accounts.tasks import social_accounts_health_tick

    account = connected_account(owner, "instagram", "ticked")
    sandbox_control("instagram", "invalidate-tokens", {"username": "ticked"})
    SocialAccount.objects.filter(pk=account["id"]).update(health_checked_at=None)

    assert social_accounts_health_tick() == 1  # eager in tests: the check runs now
    assert SocialAccount.objects.get(pk=account["id"]).status == "reauth_required"


def _health_tick(limit: int) -> list[str]:
    """One health tick as the beat runs it, with its checks run inline and its batch bounded at `limit`."""
    import contextlib

    from accounts.platforms.base import PlatformError

    picked = services.social_accounts_due_for_health(limit=limit)
    for account_id in picked:
        with contextlib.suppress(PlatformError):  # the task would retry later
            services.social_account_check_health(account_id=account_id)
    return picked


def test_accounts_whose_refresh_keeps_failing_do_not_starve_the_rest_of_the_health_check(owner):
    """The tick takes a bounded batch of due accounts, soonest expiry first. Accounts whose refresh keeps
    failing (TikTok errors for them) must not hold the head of every batch: one behind them still gets
    its token refreshed before it expires."""
    stuck = [connected_account(owner, "tiktok", f"stuck{i}")["id"] for i in range(2)]
    victim = connected_account(owner, "tiktok", "victim")["id"]
    start = timezone.now()
    for i, pk in enumerate(stuck):  # they expire a bit before the victim; all three within the 6 h margin
        SocialAccount.objects.filter(pk=pk).update(token_expires_at=start + timedelta(hours=3, minutes=i))
        sandbox_control("tiktok", "faults", {"username": f"stuck{i}", "kind": "server_error", "count": 1000})
    SocialAccount.objects.filter(pk=victim).update(token_expires_at=start + timedelta(hours=4))

    picked = []
    for minute in range(0, 60, 10):  # an hour of ticks, every 10 minutes, each batch bounded at 2
        with time_machine.travel(start + timedelta(minutes=minute)):
            picked.append(_health_tick(limit=2))
    assert victim in sum(picked, [])
    row = SocialAccount.objects.get(pk=victim)
    assert row.token_version == 2 and row.token_expires_at > start + timedelta(hours=20)
    # The failing ones keep being tried (after a backoff), and stay connected: the errors are TikTok's.
    assert sum(picked, []).count(stuck[0]) >= 2
    assert set(SocialAccount.objects.filter(pk__in=stuck).values_list("status", flat=True)) == {"connected"}


def test_the_health_tick_does_not_queue_an_account_whose_check_is_still_pending(owner, monkeypatch):
    from accounts import tasks

    pk = connected_account(owner, "tiktok", "pending")["id"]
    SocialAccount.objects.filter(pk=pk).update(token_expires_at=timezone.now() + timedelta(hours=1))
    queued = []
    monkeypatch.setattr(tasks.social_account_check_health, "delay", queued.append)  # the workers are busy

    assert tasks.social_accounts_health_tick() == 1
    with time_machine.travel(timezone.now() + timedelta(minutes=10)):
        assert tasks.social_accounts_health_tick() == 0  # its check is still in the queue
    with time_machine.travel(timezone.now() + timedelta(minutes=45)):
        assert tasks.social_accounts_health_tick() == 1  # that message was lost: queued again
    assert queued == [pk, pk]
    monkeypatch.undo()
    with time_machine.travel(timezone.now() + timedelta(minutes=50)):
        assert tasks.social_account_check_health.apply(args=[pk]).result == "refreshed"
        assert pk not in services.social_accounts_due_for_health()


@pytest.mark.parametrize("platform", ["tiktok", "instagram"])
def test_reauth_keeps_the_id_rotates_the_token_and_reconnects(owner, platform):
    account = connected_account(owner, platform, "comeback")
    sandbox_control(platform, "invalidate-tokens", {"username": "comeback"})
    services.social_account_check_health(account_id=account["id"])
    old_token = SocialAccount.objects.get(pk=account["id"]).access_token

    link = reauth_link(owner, account["id"]).json()
    response = consent_and_return(platform, link["authorizeUrl"], "comeback")

    assert response["Location"] == sent_back_to(platform, RETURN_URL)  # defaults to the returnUrl used at connect
    body = status(owner, link["state"])
    assert body["purpose"] == "reauth" and body["status"] == "completed"
    assert body["socialAccountId"] == account["id"]
    row = SocialAccount.objects.get(pk=account["id"])
    assert row.status == "connected" and row.reauth_required_at is None
    assert row.access_token != old_token
    assert SocialAccount.objects.count() == 1
    assert Event.objects.filter(type="social_account.reconnected").count() == 1
    assert services.social_account_check_health(account_id=row.pk) in ("healthy", "refreshed", "skipped")
    assert SocialAccount.objects.get(pk=row.pk).status == "connected"


def test_reauth_defaults_to_the_return_url_of_the_latest_connect(owner):
    # The partner moved its page and connected the same account again from the new one: a reauth without a
    # returnUrl must send the customer there, not to the page of the first connect.
    account = connected_account(owner, "tiktok", "moved")
    again = connected_account(owner, "tiktok", "moved", return_url="https://app.acme.test/settings/accounts")
    assert again["id"] == account["id"]
    sandbox_control("tiktok", "invalidate-tokens", {"username": "moved"})
    services.social_account_check_health(account_id=account["id"])

    link = reauth_link(owner, account["id"]).json()
    response = consent_and_return("tiktok", link["authorizeUrl"], "moved")

    assert response["Location"] == "https://app.acme.test/settings/accounts"


@pytest.mark.parametrize(
    "scopes", [["video.publish", "video.upload"], ["user.info.basic", "video.publish", "video.upload"]]
)
def test_a_tiktok_reauth_with_the_publishing_scopes_only_reconnects_and_stays_connected(owner, scopes):
    """reauth-url's `scopes` are the partner's choice (README: "a reauth that asked for the publishing scopes
    only"); without user.info.profile TikTok refuses `username`, which must not fail the reauth nor make the
    daily health check or the avatar copy take the token for dead."""
    account = connected_account(owner, "tiktok", "lean.scopes")
    sandbox_control("tiktok", "invalidate-tokens", {"username": "lean.scopes"})
    services.social_account_check_health(account_id=account["id"])

    link = reauth_link(owner, account["id"], scopes=scopes).json()
    response = consent_and_return("tiktok", link["authorizeUrl"], "lean.scopes")

    assert response["Location"] == RETURN_URL
    assert status(owner, link["state"])["status"] == "completed"
    row = SocialAccount.objects.get(pk=account["id"])
    assert row.status == "connected" and "user.info.profile" not in row.scopes.split(",")
    assert services.social_account_check_health(account_id=row.pk) == "healthy"
    SocialAccount.objects.filter(pk=row.pk).update(avatar_url="")
    assert services.social_account_rehost_avatar(account_id=row.pk).startswith("http://127.0.0.1:8000/media/")
    body = owner.client.get(f"/v1/social-accounts/{row.pk}").json()
    assert (body["status"], body["handle"]) == ("connected", "lean.scopes")  # the handle known from before


def test_an_instagram_reauth_with_the_publishing_scope_only_reconnects(owner):
    # Instagram's profile (/me) needs instagram_business_basic: a reauth asking for the publishing scope
    # alone must still ask for it, or every such reauth would end in platform_error.
    account = connected_account(owner, "instagram", "lean.ig")
    sandbox_control("instagram", "invalidate-tokens", {"username": "lean.ig"})
    services.social_account_check_health(account_id=account["id"])

    link = reauth_link(owner, account["id"], scopes=["instagram_business_content_publish"]).json()
    response = consent_and_return("instagram", link["authorizeUrl"], "lean.ig")

    assert status(owner, link["state"])["status"] == "completed", response["Location"]
    assert SocialAccount.objects.get(pk=account["id"]).status == "connected"
    assert services.social_account_check_health(account_id=account["id"]) == "healthy"


def test_reauth_as_another_platform_user_is_account_mismatch(owner):
    account = connected_account(owner, "tiktok", "original")
    sandbox_control("tiktok", "invalidate-tokens", {"username": "original"})
    services.social_account_check_health(account_id=account["id"])

    link = reauth_link(owner, account["id"], returnUrl="https://app.acme.test/reauth").json()
    response = consent_and_return("tiktok", link["authorizeUrl"], "impostor")

    assert response["Location"] == "https://app.acme.test/reauth?layers_oauth_error=account_mismatch"
    assert status(owner, link["state"])["error"] == {"code": "account_mismatch"}
    assert SocialAccount.objects.get(pk=account["id"]).status == "reauth_required"
    assert SocialAccount.objects.count() == 1


def test_reauth_url_rules(owner, sibling):
    account = connected_account(owner, "tiktok", "rules")
    other_project = owner.projects[1]

    wrong_project = owner.client.post(
        f"/v1/projects/{other_project.id}/social/reauth-url", {"socialAccountId": account["id"]}, format="json"
    )
    assert "socialAccountId" in assert_error(wrong_project, 422, "VALIDATION")["details"]["fields"]
    assert_error(reauth_link(owner, "sa_nonsense"), 422, "VALIDATION")
    assert_error(reauth_link(owner, account["id"], returnUrl="https://evil.test/"), 403, "RETURN_URL_NOT_ALLOWED")
    assert_error(
        sibling.client.post(
            f"/v1/projects/{owner.project.id}/social/reauth-url", {"socialAccountId": account["id"]}, format="json"
        ),
        404,
        "NOT_FOUND",
    )

    SocialAccount.objects.filter(pk=account["id"]).update(kind="leased")
    assert_error(reauth_link(owner, account["id"]), 409, "ACCOUNT_LEASED")
    SocialAccount.objects.filter(pk=account["id"]).update(kind="connected")
    owner.client.delete(f"/v1/social-accounts/{account['id']}")
    assert_error(reauth_link(owner, account["id"]), 409, "ACCOUNT_DISCONNECTED")


@pytest.mark.parametrize("platform", ["tiktok", "instagram"])
def test_revoke_disconnects_for_good_and_reconnect_mints_a_new_id(owner, platform):
    account = connected_account(owner, platform, "leaving")
    token = SocialAccount.objects.get(pk=account["id"]).access_token

    first = owner.client.delete(f"/v1/social-accounts/{account['id']}")
    again = owner.client.delete(f"/v1/social-accounts/{account['id']}")

    assert first.status_code == 200
    assert first.json() == {
        "id": account["id"],
        "status": "disconnected",
        "canceledScheduledPosts": 0,
        "released": False,
    }
    assert again.status_code == 200 and again.json()["canceledScheduledPosts"] == 0
    listed = owner.client.get(f"/v1/projects/{owner.project.id}/social-accounts").json()["data"]
    assert listed == []
    assert owner.client.get(f"/v1/projects/{owner.project.id}/social-accounts?status=disconnected").json()["data"] == []
    detail = owner.client.get(f"/v1/social-accounts/{account['id']}").json()
    assert detail["status"] == "disconnected" and detail["disconnectedAt"].endswith("Z")
    row = SocialAccount.objects.get(pk=account["id"])
    assert row.access_token_enc == "" and row.refresh_token_enc == ""
    assert Event.objects.filter(type="social_account.disconnected").count() == 1
    # Revoked at the platform too (best-effort): the old token no longer works there.
    from accounts.platforms.base import TokenInvalid
    from accounts.platforms.clients import get_client

    if platform == "tiktok":
        with pytest.raises(TokenInvalid):
            get_client(platform).get_profile(access_token=token)

    again_account = connected_account(owner, platform, "leaving")
    assert again_account["id"] != account["id"]
    assert again_account["status"] == "connected"
    assert PlatformIdentity.objects.filter(organization=owner.org).count() == 1
    assert len(again_account["layers"]) == 4


def test_a_failing_side_effect_does_not_fail_the_flow_and_rerunning_creates_nothing_twice(owner, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("storage down")

    monkeypatch.setattr(services, "social_account_rehost_avatar", broken)
    account = connected_account(owner, "tiktok", "resilient")

    assert account["status"] == "connected"
    assert account["avatarUrl"] is None
    assert len(account["layers"]) == 4  # the other steps ran

    monkeypatch.undo()
    assert services.social_account_fan_out(account_id=account["id"]) == []
    assert services.social_account_fan_out(account_id=account["id"]) == []
    row = SocialAccount.objects.get(pk=account["id"])
    assert row.avatar_url
    assert Layer.objects.filter(social_account=row).count() == 4
    assert Layer.objects.filter(project=owner.project, social_account=None).count() == 1
    from accounts.models import OnboardingStep

    assert OnboardingStep.objects.filter(organization=owner.org).count() == 1


def post_connect_lines(caplog) -> list:
    return [r for r in caplog.records if "post-connect step avatar failed" in r.getMessage()]


def test_a_post_connect_step_failing_unexpectedly_is_logged_with_its_traceback_first_and_last(
    owner, monkeypatch, caplog
):
    # Before, the line said `PermissionError` and nothing else: not which file, not why, no traceback.
    account = connected_account(owner, "tiktok", "avatar.denied")
    SocialAccount.objects.filter(pk=account["id"]).update(avatar_url="")

    def denied(name, content, *args, **kwargs):
        raise PermissionError(13, "Permission denied", f"/srv/media/{name}")

    monkeypatch.setattr(default_storage, "save", denied)
    monkeypatch.setattr(default_storage, "exists", lambda name: False)
    caplog.set_level(logging.INFO)
    assert services.social_account_fan_out(account_id=account["id"]) == ["avatar"]
    [line] = post_connect_lines(caplog)
    assert line.levelname == "WARNING" and account["id"] in line.getMessage()
    assert line.exc_info and line.exc_info[0] is PermissionError, line.getMessage()
    assert "Permission denied" in caplog.text

    # The task retries it 6 times over about an hour: the traceback on its first run and its last, not each.
    caplog.clear()
    tasks.social_account_after_connect.delay(account["id"])
    lines = post_connect_lines(caplog)
    assert len(lines) == 7
    assert [bool(line.exc_info) for line in lines] == [True, False, False, False, False, False, True]
    assert all("PermissionError" in line.getMessage() for line in lines)


def test_a_post_connect_step_the_platform_refuses_is_logged_with_its_code_and_no_token(owner, caplog):
    account = connected_account(owner, "tiktok", "avatar.outage")
    row = SocialAccount.objects.get(pk=account["id"])
    SocialAccount.objects.filter(pk=row.pk).update(avatar_url="")
    caplog.set_level(logging.DEBUG)
    with intercepted(platform_down("tiktok", status=503)):
        assert services.social_account_fan_out(account_id=account["id"]) == ["avatar"]
    [line] = post_connect_lines(caplog)
    assert "PlatformUnavailable internal_error" in line.getMessage(), line.getMessage()
    assert not line.exc_info  # expected: the platform's code says it all
    assert row.access_token not in caplog.text


def test_an_avatar_the_cdn_will_not_serve_is_logged_with_why(owner, caplog, monkeypatch):
    account = connected_account(owner, "tiktok", "avatar.gone")
    SocialAccount.objects.filter(pk=account["id"]).update(avatar_url="")

    def not_found(url, **kwargs):
        raise netguard.FetchFailed("status 404")  # the CDN's answer to the platform's avatar URL

    monkeypatch.setattr(netguard, "fetch_limited", not_found)
    caplog.set_level(logging.INFO)
    assert services.social_account_fan_out(account_id=account["id"]) == ["avatar"]
    [line] = post_connect_lines(caplog)
    assert "FetchFailed: status 404" in line.getMessage() and not line.exc_info, line.getMessage()


def test_tokens_appear_in_no_response_and_not_in_a_raw_database_dump(owner):
    account = connected_account(owner, "tiktok", "secretive")
    row = SocialAccount.objects.get(pk=account["id"])
    secrets_ = [row.access_token, row.refresh_token]
    assert all(secrets_)

    bodies = [
        owner.client.get(f"/v1/social-accounts/{row.pk}").content,
        owner.client.get(f"/v1/projects/{owner.project.id}/social-accounts").content,
        owner.client.get("/v1/events").content,
    ]
    for body in bodies:
        for secret in secrets_:
            assert secret.encode() not in body

    db = connection.settings_dict
    dump = subprocess.run(
        [
            "pg_dump",
            "-h",
            db["HOST"] or "127.0.0.1",
            "-U",
            db["USER"] or "postgres",
            "--data-only",
            "--exclude-table=sandbox_*",
            db["NAME"],
        ],
        capture_output=True,
        check=True,
    ).stdout
    assert row.pk.encode() in dump  # the dump did include the account
    for secret in secrets_ + [owner.raw_key]:
        assert secret.encode() not in dump


@pytest.mark.parametrize(
    "scopes, field",
    [
        (["s" * 100] * 20, "scopes.0"),  # each scope too long (the joined list once overflowed storage: a 500)
        (["video.publish,user.info.basic"], "scopes.0"),  # a comma would split into two scopes when stored
        (["user info"], "scopes.0"),
        ([f"scope.number.{i:02d}.with.a.long.name.{'x' * 20}" for i in range(20)], "scopes"),  # 20 x 49 > 512
    ],
)
def test_reauth_scopes_that_cannot_be_stored_are_422(owner, scopes, field):
    account = connected_account(owner, "tiktok", "scoper")
    response = owner.client.post(
        f"/v1/projects/{owner.project.id}/social/reauth-url",
        {"socialAccountId": account["id"], "scopes": scopes},
        format="json",
    )
    error = assert_error(response, 422, "VALIDATION")
    assert field in error["details"]["fields"] and all(f.startswith("scopes") for f in error["details"]["fields"])


@pytest.mark.parametrize(
    "platform, scopes, field",
    [
        ("tiktok", ["bogus.scope"], "scopes.0"),
        ("tiktok", ["video.publish", "instagram_business_content_publish"], "scopes.1"),  # Instagram's
        ("instagram", ["instagram_business_basic", "video.publish"], "scopes.1"),  # TikTok's
    ],
)
def test_reauth_scopes_the_platform_does_not_know_are_422_not_a_link_to_its_error_page(owner, platform, scopes, field):
    # Such a link took the customer to the platform's "The requested scope is not valid" page: never back to
    # the partner's returnUrl, and the state read pending until it expired. The partner hears it at once.
    account = connected_account(owner, platform, "scoper")
    states = OAuthSession.objects.count()

    error = assert_error(reauth_link(owner, account["id"], scopes=scopes), 422, "VALIDATION")

    assert list(error["details"]["fields"]) == [field]
    assert all(s in error["details"]["fields"][field][0] for s in platform_scopes.SCOPES[platform])  # the valid ones
    assert OAuthSession.objects.count() == states  # no state left pending


@pytest.mark.parametrize(
    "platform, scopes",
    [
        ("tiktok", ["user.info.basic", "video.list"]),
        ("instagram", ["instagram_business_basic", "instagram_business_manage_insights"]),
    ],
)
def test_reauth_scopes_without_a_publishing_one_are_422_not_a_link_that_can_only_fail(owner, platform, scopes):
    # The callback refuses a grant that cannot post (access_denied): such a link sent the customer through
    # the consent page for nothing. The partner hears it at once, and the account is left as it was.
    account = connected_account(owner, platform, "readonly")
    states = OAuthSession.objects.count()

    error = assert_error(reauth_link(owner, account["id"], scopes=scopes), 422, "VALIDATION")

    assert list(error["details"]["fields"]) == ["scopes"]
    assert all(s in error["details"]["fields"]["scopes"][0] for s in platform_scopes.PUBLISHING[platform])
    assert OAuthSession.objects.count() == states


@pytest.mark.parametrize("platform", ["tiktok", "instagram"])
def test_every_scope_reauth_url_accepts_is_one_the_platforms_consent_page_accepts(owner, platform):
    account = connected_account(owner, platform, "scoper")
    response = reauth_link(owner, account["id"], scopes=list(platform_scopes.SCOPES[platform]))
    assert response.status_code == 200, response.content

    page = Client().get(response.json()["authorizeUrl"].split("127.0.0.1:8000", 1)[1])

    assert page.status_code == 200, page.content[:500]


def test_reauth_with_scopes_asks_the_platform_for_them(owner):
    account = connected_account(owner, "tiktok", "scoper")
    response = owner.client.post(
        f"/v1/projects/{owner.project.id}/social/reauth-url",
        {"socialAccountId": account["id"], "scopes": ["user.info.basic", "video.publish"]},
        format="json",
    )
    assert response.status_code == 200
    assert "scope=user.info.basic%2Cvideo.publish" in response.json()["authorizeUrl"]


def test_the_reconnected_event_shows_the_profile_as_the_reauth_found_it(owner):
    account = connected_account(owner, "tiktok", "renamed.carol")
    # the creator had another handle and name when the account was first seen
    PlatformIdentity.objects.filter(organization=owner.org).update(handle="old.carol", display_name="Old Carol")

    reauthorize(owner, account["id"], "tiktok", "renamed.carol")

    event = owner.client.get("/v1/events?type=social_account.reconnected").json()["data"][0]
    now = owner.client.get(f"/v1/social-accounts/{account['id']}").json()
    assert now["handle"] == "renamed.carol"
    assert event["data"] == now


def test_a_health_check_the_platform_refuses_keeps_the_account_and_ends_quietly(owner, caplog):
    # Instagram refuses to refresh a token less than a day old (a request error, not a dead token): the task
    # used to end in an ERROR traceback every tick. It now ends "refused", logged once as a warning, the
    # account connected and out of the next batches for a while.
    from accounts.tasks import social_account_check_health
    from tests.platform_helpers import intercepted

    account = connected_account(owner, "instagram", "young.token")
    SocialAccount.objects.filter(pk=account["id"]).update(token_expires_at=timezone.now())

    def refused(request, sandbox):
        import httpx

        error = {"message": "(#100) token too young to refresh", "type": "OAuthException", "code": 100}
        return httpx.Response(400, json={"error": error})

    with intercepted({"/refresh_access_token": refused}):
        outcome = social_account_check_health.apply(args=[account["id"]])

    assert outcome.successful() and outcome.result == "refused"
    row = SocialAccount.objects.get(pk=account["id"])
    assert row.status == "connected" and row.health_next_attempt_at is not None
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


@pytest.mark.parametrize("refresh_field", [{}, {"refresh_token": ""}, {"refresh_token": None}])
def test_a_tiktok_refresh_answered_without_a_refresh_token_keeps_the_one_stored(owner, refresh_field):
    # TikTok documents a refresh_token in every refresh answer; one without it (missing, empty) used to blank
    # the stored refresh token: the next refresh then had nothing to send and the account went
    # reauth_required though its grant was fine. The refresh token sent stays valid: it is kept, with its expiry.
    from tests.platform_helpers import intercepted, tiktok_refresh_keeping_the_refresh_token

    account = connected_account(owner, "tiktok", "no.rotation")
    row = SocialAccount.objects.get(pk=account["id"])
    old_access, old_refresh, old_refresh_expiry = row.access_token, row.refresh_token, row.refresh_expires_at

    with time_machine.travel(timezone.now() + timedelta(hours=20)):
        with intercepted({"/oauth/token/": tiktok_refresh_keeping_the_refresh_token(refresh_field)}):
            assert services.social_account_check_health(account_id=row.pk) == "refreshed"
        row.refresh_from_db()
        assert row.access_token != old_access and row.token_expires_at > timezone.now() + timedelta(hours=23)
        assert (row.refresh_token, row.refresh_expires_at) == (old_refresh, old_refresh_expiry)

    with time_machine.travel(timezone.now() + timedelta(hours=40)):  # the next refresh, TikTok rotating again
        assert services.social_account_check_health(account_id=row.pk) == "refreshed"
    row.refresh_from_db()
    assert row.status == "connected" and row.refresh_token != old_refresh


def test_a_health_tick_whose_checks_the_broker_refuses_leaves_the_accounts_due(owner, monkeypatch):
    # The tick marked its batch (out of the next batches for 30 minutes) before queueing the checks: with the
    # broker down, nothing was queued and every account of the batch went unchecked for 30 minutes, its token
    # nearing expiry. An account whose check could not be queued is now left due: the next tick (10 minutes
    # later) queues it.
    from accounts import tasks
    from tests.outages import broker_down

    first, second = (connected_account(owner, "tiktok", f"tick{i}")["id"] for i in range(2))
    for i, pk in enumerate((first, second)):  # the first expires first: the tick queues it first
        SocialAccount.objects.filter(pk=pk).update(token_expires_at=timezone.now() + timedelta(hours=1, minutes=i))

    with monkeypatch.context() as outage:
        outage.setattr(tasks.social_account_check_health, "delay", broker_down)
        assert tasks.social_accounts_health_tick() == 0
    assert set(services.social_accounts_due_for_health()) == {first, second}

    queued = []

    def broker_fails_after_one(account_id):
        if queued:
            broker_down()
        queued.append(account_id)

    with monkeypatch.context() as flaky:
        flaky.setattr(tasks.social_account_check_health, "delay", broker_fails_after_one)
        assert tasks.social_accounts_health_tick() == 1
    assert queued == [first]
    assert services.social_accounts_due_for_health() == [second]  # the first's check is queued: left out

    with time_machine.travel(timezone.now() + timedelta(minutes=10)):  # the broker is back
        assert tasks.social_accounts_health_tick() == 1  # eager in tests: the check runs now
    row = SocialAccount.objects.get(pk=second)
    assert row.status == "connected" and row.token_version == 2


def test_the_post_connect_task_of_an_account_needing_reauth_waits_for_the_reconnect_to_copy_the_avatar(owner):
    """An account gone reauth_required before its avatar was copied: the task called the platform with the
    dead token on each of its 7 runs over an hour, a warning each time, and the avatar stayed uncopied once the
    customer reconnected (the repair tick looks at a day after creation only). The task now leaves the avatar
    to the reconnect, which queues it."""
    account_id = connected_account(owner, "tiktok", "reauth.before.avatar")["id"]
    sandbox_control("tiktok", "invalidate-tokens", {"username": "reauth.before.avatar"})
    SocialAccount.objects.filter(pk=account_id).update(status="reauth_required", avatar_url="")
    asked = []

    def profile(request, sandbox):
        asked.append(request.url.path)
        return sandbox.handle_request(request)

    with intercepted({"/user/info/": profile}):
        result = tasks.social_account_after_connect.apply(args=[account_id])

    assert (result.state, result.result, asked) == ("SUCCESS", [], [])
    assert owner.client.get(f"/v1/social-accounts/{account_id}").json()["avatarUrl"] is None

    with time_machine.travel(timezone.now() + timedelta(days=2)):  # past the repair tick's day
        assert reauthorize(owner, account_id, "tiktok", "reauth.before.avatar").status_code == 302
    account = owner.client.get(f"/v1/social-accounts/{account_id}").json()
    assert account["status"] == "connected" and account["avatarUrl"], account


@pytest.mark.parametrize("account_id", ["sa_gone", "pool_1", ""])
def test_the_post_connect_task_of_an_account_that_is_not_there_ends_quietly(account_id, caplog):
    # A message sent by hand, from another environment, or left after a restore: no ERROR traceback.
    result = tasks.social_account_after_connect.apply(args=[account_id])

    assert (result.state, result.result) == ("SUCCESS", [])
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
