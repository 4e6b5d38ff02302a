"""The connect flow end to end, through the real platform clients and the sandbox."""

import json
import logging
from datetime import timedelta
from types import SimpleNamespace
from urllib.parse import urlsplit

import httpx
import pytest
import time_machine
from django.test import Client
from django.utils import timezone

from accounts import services
from accounts.models import Event, OAuthSession, OnboardingStep, PlatformIdentity, SocialAccount
from scheduling.models import Layer
from tests.accounts.oauth_helpers import (
    RETURN_URL,
    browse,
    connect,
    connected_account,
    consent_and_return,
    follow_callback,
    sent_back_to,
    start,
    status,
)
from tests.conftest import assert_error
from tests.platform_helpers import consent, intercepted

pytestmark = pytest.mark.django_db(transaction=True)

PLATFORMS = ["tiktok", "instagram"]


@pytest.mark.parametrize("platform", PLATFORMS)
def test_connect_redirects_to_exact_return_url_and_creates_the_account(owner, platform):
    state, response = connect(owner, platform, "creator.one")

    assert response.status_code == 302
    assert response["Location"] == sent_back_to(platform, RETURN_URL)  # no query parameter added
    body = status(owner, state)
    assert body["status"] == "completed" and body["purpose"] == "connect" and body["error"] is None
    account = owner.client.get(f"/v1/social-accounts/{body['socialAccountId']}").json()
    assert account["id"].startswith("sa_")
    assert account["projectId"] == owner.project.id
    assert (account["platform"], account["kind"], account["status"]) == (platform, "connected", "connected")
    assert account["handle"] == "creator.one"
    assert account["connectedAt"].endswith("Z")
    listed = owner.client.get(f"/v1/projects/{owner.project.id}/social-accounts").json()["data"]
    assert [a["id"] for a in listed] == [account["id"]]
    assert Event.objects.filter(organization=owner.org, type="social_account.connected").count() == 1


def test_a_tiktok_connect_granted_without_user_info_profile_completes_with_the_display_name_as_handle(owner):
    """TikTok gives `username` only with user.info.profile: a connect without it still completes, and the
    account's handle is the display name until a token with that scope tells the real one."""
    from accounts import services

    link = services.oauth_session_start(
        api_key=owner.key,
        project=owner.project,
        platform="tiktok",
        return_url=RETURN_URL,
        scopes=["video.publish", "video.upload"],
    )
    response = consent_and_return("tiktok", link.authorize_url, "no.profile")

    assert response["Location"] == RETURN_URL
    body = status(owner, link.session.state)
    assert body["status"] == "completed"
    account = owner.client.get(f"/v1/social-accounts/{body['socialAccountId']}").json()
    assert (account["status"], account["handle"], account["displayName"]) == ("connected", "No Profile", "No Profile")


@pytest.mark.parametrize(
    "name, shown",
    [
        (
            "Zo\u00eb \U0001f468\u200d\U0001f469\u200d\U0001f467 \U0001f1eb\U0001f1f7",
            None,
        ),  # emoji sequences and a flag
        ("\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627", None),  # right to left
        ("Zoe\u0308 \u1112\u1161\u11ab", None),  # NFD: a combining mark, conjoining Hangul jamo
        ("Cut by UTF-16 units \ud83d", "Cut by UTF-16 units \ufffd"),  # half an emoji
        ("Nul\x00name", "Nul\ufffdname"),
        ("x" * 255 + "\U0001f468\u200d\U0001f469", "x" * 255 + "…"),  # longer than the column's 256
        ("y" * 300, "y" * 255 + "…"),
    ],
)
@pytest.mark.parametrize("platform", PLATFORMS)
def test_a_display_name_the_database_could_not_store_as_it_came_still_connects(
    owner, monkeypatch, platform, name, shown
):
    """A display name with half a surrogate pair, a NUL or over 256 characters could not be stored: every
    connect of that creator failed with `platform_error`. It is now stored cleaned (U+FFFD) and cut (at a
    character boundary, with "…"); names the database takes are stored as they came."""
    from accounts.platforms.sandbox import instagram_views, tiktok_views

    views = tiktok_views if platform == "tiktok" else instagram_views
    monkeypatch.setattr(views, "display_name", lambda username: name)

    state, response = connect(owner, platform, "weird.name")

    assert response["Location"] == sent_back_to(platform, RETURN_URL)
    body = status(owner, state)
    assert body["status"] == "completed", body
    account = owner.client.get(f"/v1/social-accounts/{body['socialAccountId']}").json()
    assert (account["handle"], account["displayName"]) == ("weird.name", name if shown is None else shown)


@pytest.mark.parametrize(
    "username, handle, display_name",
    [
        ("half.\ud83d", "half.\ufffd", "half.\ufffd"),
        ("nul\x00", "nul\ufffd", "nul\ufffd"),
        ("h" * 200, "h" * 128, "h" * 200),  # the handle's column is 128 long; a handle is cut without "…"
    ],
)
def test_a_username_the_database_could_not_store_as_it_came_still_connects(owner, username, handle, display_name):
    """The same for the username TikTok answers (the account's handle): no connect failing on it."""

    def profile(request: httpx.Request, sandbox: httpx.WSGITransport) -> httpx.Response:
        answer = sandbox.handle_request(request)
        body = json.loads(answer.read())
        body["data"]["user"].update(username=username, display_name=username)
        # As JSON escapes it (\\ud83d): httpx's json= writes UTF-8, which has no lone surrogate.
        return httpx.Response(
            answer.status_code, content=json.dumps(body), headers={"Content-Type": "application/json"}
        )

    with intercepted({"/v2/user/info/": profile}):
        state, response = connect(owner, "tiktok", "odd.user")

    assert response["Location"] == RETURN_URL
    body = status(owner, state)
    assert body["status"] == "completed", body
    account = owner.client.get(f"/v1/social-accounts/{body['socialAccountId']}").json()
    assert (account["handle"], account["displayName"]) == (handle, display_name)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_connect_fan_out_provisions_layers_avatar_and_onboarding(owner, platform):
    account = connected_account(owner, platform, "fan.out")

    assert sorted(layer["name"] for layer in account["layers"]) == [
        "Account Health Monitor",
        "Account Warmup",
        "Social Distribution",
        "Social Engagement",
    ]
    assert Layer.objects.filter(project=owner.project, social_account=None, kind="social_content").count() == 1
    assert OnboardingStep.objects.filter(organization=owner.org, key=f"{platform}.connected").count() == 1
    assert account["avatarUrl"].startswith("http://127.0.0.1:8000/media/avatars/")


def test_the_connected_event_is_a_snapshot_from_before_the_fan_out_as_the_docs_say(owner):
    # README, the events list and the webhook guide tell partners so (test_openapi_and_docs): the event is
    # recorded with the new binding, the avatar copy and layers come after; the account read now has them.
    account = connected_account(owner, "tiktok", "snap.shot")

    event = owner.client.get("/v1/events?type=social_account.connected").json()["data"][0]

    assert event["data"]["id"] == account["id"]
    assert (event["data"]["avatarUrl"], event["data"]["layers"]) == (None, [])
    assert account["avatarUrl"] and len(account["layers"]) == 4


def test_avatar_is_served_from_our_storage_after_the_platform_url_expired(owner):
    account = connected_account(owner, "tiktok", "avatar.person")
    row = SocialAccount.objects.get(pk=account["id"])
    from accounts.platforms.clients import get_client

    platform_url = get_client("tiktok").get_profile(access_token=row.access_token).avatar_url
    from django.test import Client

    with time_machine.travel(timezone.now() + timedelta(hours=3)):
        assert Client().get(platform_url.split("127.0.0.1:8000", 1)[1]).status_code == 403
        ours = Client().get(account["avatarUrl"].split("127.0.0.1:8000", 1)[1])
        assert ours.status_code == 200
        assert b"".join(ours.streaming_content).startswith(b"\x89PNG")


@pytest.mark.parametrize("platform, decision", [(p, d) for p in PLATFORMS for d in ("approve", "deny")])
def test_the_customers_browser_shows_exactly_the_return_url_after_the_platform(
    live_server, settings, platform, decision
):
    """Instagram redirects to our callback with `#_`; a browser carries that fragment over our redirect unless
    its Location has one of its own, so the customer would land on `returnUrl#_`. Driven over real HTTP
    (the live server), hop by hop, with the browser's fragment rule."""
    import requests
    from rest_framework.test import APIClient

    from accounts import services
    from tests.e2e.browser import point_platforms_at

    point_platforms_at(settings, live_server.url)
    org = services.organization_create(name="Browser Org")
    project = services.project_create(organization=org, name="Browser App")
    _, raw = services.api_key_create(organization=org, return_domains=[live_server.url.split("://", 1)[1]])
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return_url = f"{live_server.url}/healthz?from=layers"
    link = api.post(
        f"/v1/projects/{project.id}/social/oauth-url", {"platform": platform, "returnUrl": return_url}, format="json"
    ).json()

    with requests.Session() as browser:
        assert browser.get(link["authorizeUrl"], timeout=20).status_code == 200
        form = {"username": "ua.creator", "decision": decision}
        landed, hops = browse(browser, "POST", link["authorizeUrl"], data=form)

    expected = return_url if decision == "approve" else f"{return_url}&layers_oauth_error=access_denied"
    if platform == "instagram" and decision == "approve":
        assert hops[0].endswith("#_")  # Instagram's (the sandbox's) redirect to our callback
    # Exactly the returnUrl; after Instagram with an empty `#`, so Instagram's `#_` is not carried over.
    assert landed == sent_back_to(platform, expected), hops
    outcome = api.get(f"/v1/social/oauth-status/{link['state']}").json()["status"]
    assert outcome == ("completed" if decision == "approve" else "failed")


def test_denied_consent_redirects_with_access_denied(owner):
    link = start(owner, "tiktok")
    response = consent_and_return("tiktok", link["authorizeUrl"], "shy.user", decision="deny")

    assert response["Location"] == f"{RETURN_URL}?layers_oauth_error=access_denied"
    body = status(owner, link["state"])
    assert body["status"] == "failed" and body["error"] == {"code": "access_denied"}
    assert not SocialAccount.objects.exists()


@pytest.mark.parametrize("platform, token_path", [("tiktok", "/v2/oauth/token/"), ("instagram", "/oauth/access_token")])
def test_an_undecodable_token_answer_sends_the_customer_back_with_token_exchange_failed(owner, platform, token_path):
    def corrupt_gzip(request, sandbox):  # a broken proxy labels plain bytes as gzip
        headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
        return httpx.Response(200, content=b"\x00garbage", headers=headers)

    link = start(owner, platform)
    location = consent(platform, link["authorizeUrl"], "gz.connect")
    with intercepted({token_path: corrupt_gzip}):
        response = follow_callback(location)

    assert response.status_code == 302, response.status_code
    assert response["Location"] == sent_back_to(platform, f"{RETURN_URL}?layers_oauth_error=token_exchange_failed")
    body = status(owner, link["state"])
    assert body["status"] == "failed" and body["error"] == {"code": "token_exchange_failed"}
    assert not SocialAccount.objects.exists()


def _odd_expires_in(request, sandbox):
    """TikTok's token answer with an `expires_in` that is no number."""
    answer = sandbox.handle_request(request)
    answer.read()
    body = json.loads(answer.content)
    _odd_expires_in.token = body["access_token"]
    return httpx.Response(200, json={**body, "expires_in": "soon"})


def test_a_tiktok_token_answer_with_an_unreadable_expires_in_still_connects(owner):
    # It was a ValueError out of the client, and the connect failed with platform_error: the token is what
    # matters, and it is taken to live TikTok's shorter documented lifetime (2 h).
    link = start(owner, "tiktok")
    with intercepted({"/v2/oauth/token/": _odd_expires_in}):
        response = consent_and_return("tiktok", link["authorizeUrl"], "soon.user")
    assert response.status_code == 302 and status(owner, link["state"])["status"] == "completed"
    assert SocialAccount.objects.get().token_lifetime == timedelta(hours=2)


@pytest.mark.parametrize("failure", ["database_blip_while_binding", "a_bug_reading_the_answer"])
def test_an_unexpected_error_after_the_state_is_claimed_sends_the_customer_back_with_platform_error(
    owner, monkeypatch, caplog, failure
):
    """The state is claimed (pending → exchanging) before the platform calls; an error that is no platform
    error after that (the database dropping the connection, an answer the client cannot read) must not give
    the customer, who did consent, our 500 page, nor leave the state pending then expired for good."""
    from django.db import OperationalError
    from django.test import Client

    from accounts import services

    def blip(**kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    link = start(owner, "tiktok")
    location = consent("tiktok", link["authorizeUrl"], "blip.user")
    parts = urlsplit(location)
    browser = Client(raise_request_exception=False)
    if failure == "database_blip_while_binding":
        monkeypatch.setattr(services, "social_account_bind", blip)
        response = browser.get(f"{parts.path}?{parts.query}")
    else:  # an error of the client's own while it reads the token answer (no platform error)
        from accounts.platforms import tiktok

        def bug(value, **kwargs):
            raise ValueError(f"cannot read {value!r}")

        monkeypatch.setattr(tiktok, "token_lifetime", bug)
        with intercepted({"/v2/oauth/token/": _odd_expires_in}):
            response = browser.get(f"{parts.path}?{parts.query}")

    assert response.status_code == 302, response.status_code
    assert response["Location"] == f"{RETURN_URL}?layers_oauth_error=platform_error"
    body = status(owner, link["state"])
    assert (body["status"], body["error"]) == ("failed", {"code": "platform_error"})
    with time_machine.travel(timezone.now() + timedelta(hours=1)):
        assert status(owner, link["state"])["status"] == "failed"
    again = browser.get(f"{parts.path}?{parts.query}")
    assert again["Location"] == f"{RETURN_URL}?layers_oauth_error=already_used"
    assert not SocialAccount.objects.exists()
    logged = [r for r in caplog.records if r.name == "accounts.services" and r.exc_info]
    assert logged, "the unexpected error is logged with its traceback"
    if failure == "a_bug_reading_the_answer":
        assert _odd_expires_in.token not in caplog.text


def test_a_state_left_exchanging_by_a_killed_callback_reads_failed_once_the_exchange_cannot_be_running(owner):
    """The process serving the callback died between the claim and the end (a deploy, the OOM killer, a
    worker timeout): the state stays `exchanging`, and the customer retrying the callback is told
    already_used. It reads pending while that callback could still be at work, then failed with
    platform_error (it was consented to, so not `expired`) — counted from the claim, not from expiresAt: a
    partner's "connecting…" must not spin for the rest of the state's 30 minutes."""
    from accounts.models import OAuthSession

    def the_process_dies(request, sandbox):
        raise SystemExit(1)  # what gunicorn's worker abort raises inside a request: nothing after it runs

    link = start(owner, "tiktok")
    location = consent("tiktok", link["authorizeUrl"], "killed.callback")
    with intercepted({"/oauth/token/": the_process_dies}), pytest.raises(SystemExit):
        follow_callback(location)
    claimed = timezone.now()  # the claim was made a moment before

    assert status(owner, link["state"])["status"] == "pending"
    assert follow_callback(location)["Location"] == f"{RETURN_URL}?layers_oauth_error=already_used"
    with time_machine.travel(claimed + OAuthSession.EXCHANGE_DEADLINE - timedelta(seconds=1)):
        assert status(owner, link["state"])["status"] == "pending"  # that callback may still be at work
    with time_machine.travel(claimed + OAuthSession.EXCHANGE_DEADLINE):
        body = status(owner, link["state"])
    assert (body["status"], body["error"], body["socialAccountId"]) == ("failed", {"code": "platform_error"}, None)
    assert not SocialAccount.objects.exists()


def test_a_state_claimed_by_a_release_that_did_not_record_when_reads_failed_past_its_expiry(owner):
    """A state claimed by the release before exchange_started_at existed (a rolling deploy) has no start: it
    reads failed once no callback claimed before expiresAt can be running."""
    from accounts.models import OAuthSession

    link = start(owner, "tiktok")
    OAuthSession.objects.filter(state=link["state"]).update(status=OAuthSession.Status.EXCHANGING)
    expires = OAuthSession.objects.get(state=link["state"]).expires_at

    with time_machine.travel(expires + timedelta(seconds=1)):
        assert status(owner, link["state"])["status"] == "pending"  # a callback claimed just in time may run on
    with time_machine.travel(expires + OAuthSession.EXCHANGE_DEADLINE):
        body = status(owner, link["state"])
    assert (body["status"], body["error"]) == ("failed", {"code": "platform_error"})


def test_a_state_claimed_just_before_its_expiry_never_reads_expired_while_the_claim_commits(owner, transactional_db):
    """The callback claims a state under a row lock just before expiresAt, and commits the claim a moment
    later (the expiry has passed meanwhile). A partner polling in that moment must not read `expired`, a
    final status, for a state about to read `completed`: it reads `pending`, once the claim is committed."""
    import threading

    from accounts.models import OAuthSession
    from tests.concurrency import held_open
    from tests.reliability.processes import pg, wait_for

    link = start(owner, "tiktok")
    expires = OAuthSession.objects.get(state=link["state"]).expires_at

    def claim():  # what the callback does, in its transaction, before expiresAt
        session = OAuthSession.objects.select_for_update().get(state=link["state"])
        session.status = OAuthSession.Status.EXCHANGING
        session.save(update_fields=["status"])

    seen = {}

    def poll():
        seen["status"] = status(owner, link["state"])["status"]

    with held_open(claim), time_machine.travel(expires + timedelta(seconds=1)):
        poller = threading.Thread(target=poll)
        poller.start()
        # The poll either answers at once (from the uncommitted row) or waits for the claim to commit.
        wait_for(
            lambda: (
                "status" in seen
                or pg(
                    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE NOT l.granted AND a.datname = current_database()"
                )[0][0]
            ),
            what="the poll answered or waits for the claim",
        )
    poller.join(30)
    assert seen["status"] == "pending"
    OAuthSession.objects.filter(state=link["state"]).update(
        status=OAuthSession.Status.COMPLETED, completed_at=timezone.now()
    )
    with time_machine.travel(expires + timedelta(seconds=2)):
        assert status(owner, link["state"])["status"] == "completed"


def test_an_unclaimed_state_reads_expired_from_its_expiry_on(owner):
    """Only a state nobody claimed before expiresAt is expired, and its callback then says so too."""
    from accounts.models import OAuthSession

    link = start(owner, "tiktok")
    expires = OAuthSession.objects.get(state=link["state"]).expires_at
    with time_machine.travel(expires - timedelta(seconds=1)):
        assert status(owner, link["state"])["status"] == "pending"
    with time_machine.travel(expires):
        assert status(owner, link["state"])["status"] == "expired"
        response = consent_and_return("tiktok", link["authorizeUrl"], "late.user")
        assert response["Location"] == f"{RETURN_URL}?layers_oauth_error=expired"
        assert status(owner, link["state"])["status"] == "expired"


def test_a_state_reads_expired_from_the_expires_at_the_partner_was_given(owner):
    """expiresAt is written to the millisecond; the state was kept to the microsecond and read `pending` for up
    to a millisecond after the time the partner was told it ends."""
    from datetime import datetime

    link = start(owner, "tiktok")
    shown = datetime.fromisoformat(link["expiresAt"])
    with time_machine.travel(shown + timedelta(microseconds=1), tick=False):
        assert status(owner, link["state"])["status"] == "expired"
    with time_machine.travel(shown - timedelta(microseconds=1), tick=False):
        assert status(owner, link["state"])["status"] == "pending"


@pytest.mark.parametrize(
    "return_url",
    [
        "https://app.acme.test/cb?tab=accounts&x=1",
        "https://app.acme.test/cb?flag&next=%2Fa%20b",  # a bare flag and %20 stay as written
        "https://app.acme.test/cb?sig=%FF%FE",  # a signature's bytes, not UTF-8: never re-encoded
        "https://app.acme.test/cb?x=1&",
    ],
)
def test_failure_keeps_the_return_urls_own_query_byte_for_byte(owner, return_url):
    link = start(owner, "instagram", return_url=return_url)
    response = consent_and_return("instagram", link["authorizeUrl"], "shy.user", decision="deny")
    assert response["Location"] == return_url.rstrip("&") + "&layers_oauth_error=access_denied#"


def test_expired_state_redirects_with_expired_and_status_says_expired(owner):
    link = start(owner, "tiktok")
    location = consent("tiktok", link["authorizeUrl"], "slow.user")
    with time_machine.travel(timezone.now() + timedelta(minutes=31)):
        response = follow_callback(location)
        assert response["Location"] == f"{RETURN_URL}?layers_oauth_error=expired"
        assert status(owner, link["state"])["status"] == "expired"
    assert not SocialAccount.objects.exists()


def test_state_expires_30_minutes_after_creation(owner):
    before = timezone.now()
    link = start(owner, "tiktok")
    from datetime import datetime

    expires = datetime.fromisoformat(link["expiresAt"].replace("Z", "+00:00"))
    assert timedelta(minutes=29, seconds=59) <= expires - before <= timedelta(minutes=30, seconds=5)
    assert len(link["state"]) >= 3 + 32  # st_ + at least 128 bits of hex


@pytest.mark.parametrize("platform", PLATFORMS)
def test_replayed_callback_never_creates_a_second_account(owner, platform):
    link = start(owner, platform)
    location = consent(platform, link["authorizeUrl"], "replay.user")
    first = follow_callback(location)
    second = follow_callback(location)

    assert first["Location"] == sent_back_to(platform, RETURN_URL)
    assert second["Location"] == sent_back_to(platform, f"{RETURN_URL}?layers_oauth_error=already_used")
    assert SocialAccount.objects.count() == 1
    assert status(owner, link["state"])["status"] == "completed"


@pytest.mark.parametrize("platform", PLATFORMS)
def test_a_second_callback_while_the_first_is_still_connecting_lands_where_the_first_would_have(owner, platform):
    """A customer on a slow phone reloads the page while Layers is still talking to the platform, or taps
    Authorize twice: the second callback arrives while the first is exchanging the code, and the browser shows
    only the second's answer. It said `already_used` at once, so the customer landed on the partner's page
    told the link was spent (API.md: "already completed or failed" — it was neither yet) while the account
    connected a moment later. It now waits for the first and sends the browser where the first would have."""
    import threading

    from django.db import connection

    from tests.reliability.processes import wait_for

    link = start(owner, platform)
    first_location = consent(platform, link["authorizeUrl"], "slow.phone")
    second_location = consent(platform, link["authorizeUrl"], "slow.phone")  # the second tap: another code
    release = threading.Event()
    answers = {}

    def slow_token(request, sandbox):
        release.wait(30)
        return sandbox.handle_request(request)

    def callback(name, location):
        try:
            answers[name] = follow_callback(location)
        finally:
            connection.close()

    token_path = "/oauth/token/" if platform == "tiktok" else "/oauth/access_token"
    with intercepted({token_path: slow_token}):
        first = threading.Thread(target=callback, args=("first", first_location))
        first.start()
        wait_for(
            lambda: OAuthSession.objects.get(state=link["state"]).status == OAuthSession.Status.EXCHANGING,
            what="the first callback exchanging the code",
        )
        second = threading.Thread(target=callback, args=("second", second_location))
        second.start()
        second.join(1)  # it arrives while the first is still exchanging
        release.set()
        first.join(30)
        second.join(30)

    assert answers["first"]["Location"] == sent_back_to(platform, RETURN_URL)
    assert answers["second"]["Location"] == sent_back_to(platform, RETURN_URL)
    assert SocialAccount.objects.count() == 1
    assert status(owner, link["state"])["status"] == "completed"
    # Once it has completed, a callback again (the back button, a reload) is still `already_used`.
    again = follow_callback(second_location)
    assert again["Location"] == sent_back_to(platform, f"{RETURN_URL}?layers_oauth_error=already_used")


def test_tiktok_state_on_the_instagram_callback_is_rejected_without_redirect(owner):
    link = start(owner, "tiktok")
    location = consent("tiktok", link["authorizeUrl"], "cross.user")
    response = follow_callback(location.replace("/oauth/tiktok/", "/oauth/instagram/"))

    assert response.status_code == 400
    assert "Location" not in response
    assert b"unknown or invalid" in response.content
    assert not SocialAccount.objects.exists()
    assert status(owner, link["state"])["status"] == "pending"


@pytest.mark.parametrize(
    "query",
    ["", "?code=abc", "?code=abc&state=st_" + "0" * 40, "?code=abc&state=garbage", "?error=access_denied"],
)
def test_unknown_or_missing_state_shows_an_error_page(db, query):
    from django.test import Client

    response = Client().get(f"/oauth/tiktok/callback{query}")
    assert response.status_code == 400
    assert "Location" not in response
    assert response["Content-Type"].startswith("text/html")


def test_same_handle_in_two_projects_is_two_ids_one_identity(owner):
    a = connected_account(owner, "tiktok", "shared.handle", project=owner.projects[0])
    b = connected_account(owner, "tiktok", "shared.handle", project=owner.projects[1])

    assert a["id"] != b["id"]
    assert PlatformIdentity.objects.filter(organization=owner.org).count() == 1


def test_same_handle_in_two_organizations_shares_nothing(owner, outsider):
    outsider_return = "https://globex.test/back"
    a = connected_account(owner, "instagram", "popular")
    b = connected_account(outsider, "instagram", "popular", return_url=outsider_return)

    assert a["id"] != b["id"]
    ia = SocialAccount.objects.get(pk=a["id"]).identity
    ib = SocialAccount.objects.get(pk=b["id"]).identity
    assert ia.pk != ib.pk and ia.organization_id != ib.organization_id
    assert owner.client.get(f"/v1/social-accounts/{b['id']}").status_code == 404


def test_connecting_a_live_handle_again_in_the_same_project_returns_the_same_id(owner):
    first = connected_account(owner, "tiktok", "again")
    row = SocialAccount.objects.get(pk=first["id"])
    version = row.token_version

    second = connected_account(owner, "tiktok", "again")

    assert second["id"] == first["id"]
    row.refresh_from_db()
    assert row.token_version > version  # token refreshed
    assert SocialAccount.objects.count() == 1
    assert Layer.objects.filter(social_account=row).count() == 4  # no second fan-out
    assert Event.objects.filter(type="social_account.connected").count() == 1


@pytest.mark.parametrize("platform", ["linkedin", "youtube", "TikTok", "", None, 5])
def test_unsupported_platform_is_422(owner, platform):
    response = owner.client.post(
        f"/v1/projects/{owner.project.id}/social/oauth-url",
        {"platform": platform, "returnUrl": RETURN_URL},
        format="json",
    )
    error = assert_error(response, 422, "VALIDATION")
    assert "platform" in error["details"]["fields"]


def test_a_new_partners_first_connect_says_what_the_key_allows_and_who_adds_a_host(owner):
    """A partner's first oauth-url, with a key issued before ops listed its return domains (the admin allows
    it), or with www.acme.test where app.acme.test is listed, was told only that the host was not on the
    key's allowed return domains: not which hosts are, nor that only Layers staff can add one (the partner
    has no way to). The 403 says both."""
    from rest_framework.test import APIClient

    from accounts import services

    _, raw = services.api_key_create(organization=owner.org, return_domains=[], name="first")
    first = APIClient()
    first.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    response = first.post(
        f"/v1/projects/{owner.project.id}/social/oauth-url",
        {"platform": "tiktok", "returnUrl": "https://app.acme.test/done"},
        format="json",
    )
    message = assert_error(response, 403, "RETURN_URL_NOT_ALLOWED")["message"]
    assert "has no allowed return domains yet" in message and "Layers staff" in message, message

    response = owner.client.post(
        f"/v1/projects/{owner.project.id}/social/oauth-url",
        {"platform": "tiktok", "returnUrl": "https://www.acme.test/done"},
        format="json",
    )
    message = assert_error(response, 403, "RETURN_URL_NOT_ALLOWED")["message"]
    assert "app.acme.test, localhost" in message and "Layers staff" in message, message


def test_unlisted_return_host_is_403(owner):
    response = owner.client.post(
        f"/v1/projects/{owner.project.id}/social/oauth-url",
        {"platform": "tiktok", "returnUrl": "https://evil.test/steal"},
        format="json",
    )
    assert_error(response, 403, "RETURN_URL_NOT_ALLOWED")
    response = owner.client.post(
        f"/v1/projects/{owner.project.id}/social/oauth-url",
        {"platform": "tiktok", "returnUrl": "https://app.acme.test.evil.test/"},
        format="json",
    )
    assert_error(response, 403, "RETURN_URL_NOT_ALLOWED")


def test_malformed_return_url_and_long_usage_note_are_422(owner):
    for body in (
        {"platform": "tiktok", "returnUrl": "not a url"},
        {"platform": "tiktok"},
        {"platform": "tiktok", "returnUrl": RETURN_URL, "usageNote": "x" * 501},
    ):
        response = owner.client.post(f"/v1/projects/{owner.project.id}/social/oauth-url", body, format="json")
        assert_error(response, 422, "VALIDATION")


def test_usage_note_is_shown_on_the_sandbox_consent_page(owner):
    from django.test import Client

    link = start(owner, "tiktok", usageNote="Acme will post your weekly recap")
    page = Client().get(link["authorizeUrl"].split("127.0.0.1:8000", 1)[1])
    assert b"Acme will post your weekly recap" in page.content


def test_another_organizations_project_state_and_account_are_404(owner, outsider):
    account = connected_account(owner, "tiktok", "mine")
    link = start(owner, "instagram")

    response = outsider.client.post(
        f"/v1/projects/{owner.project.id}/social/oauth-url",
        {"platform": "tiktok", "returnUrl": "https://globex.test/"},
        format="json",
    )
    assert_error(response, 404, "NOT_FOUND")
    assert_error(outsider.client.get(f"/v1/social/oauth-status/{link['state']}"), 404, "NOT_FOUND")
    assert_error(outsider.client.get(f"/v1/social-accounts/{account['id']}"), 404, "NOT_FOUND")
    assert_error(outsider.client.delete(f"/v1/social-accounts/{account['id']}"), 404, "NOT_FOUND")
    assert_error(outsider.client.get(f"/v1/projects/{owner.project.id}/social-accounts"), 404, "NOT_FOUND")
    assert SocialAccount.objects.get(pk=account["id"]).status == "connected"


def test_idempotency_key_replays_the_same_oauth_url(owner):
    url = f"/v1/projects/{owner.project.id}/social/oauth-url"
    body = {"platform": "tiktok", "returnUrl": RETURN_URL}
    first = owner.client.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    second = owner.client.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    other = owner.client.post(url, {**body, "platform": "instagram"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")

    assert first.json() == second.json()
    assert second["Idempotent-Replayed"] == "true"
    assert_error(other, 409, "IDEMPOTENCY_KEY_REUSED")
    from accounts.models import OAuthSession

    assert OAuthSession.objects.count() == 1


def test_connecting_a_reauth_required_account_again_reconnects_it_without_a_connected_event(owner):
    # The connect flow reuses the live binding: a reauth_required one comes back connected with the new token,
    # and the partner hears `social_account.reconnected`, never a second `social_account.connected`.
    from accounts.services import social_account_check_health
    from tests.platform_helpers import sandbox_control

    first = connected_account(owner, "tiktok", "lapsed")
    assert sandbox_control("tiktok", "invalidate-tokens", {"username": "lapsed"}).status_code in (200, 204)
    social_account_check_health(account_id=first["id"])
    assert SocialAccount.objects.get(pk=first["id"]).status == "reauth_required"

    second = connected_account(owner, "tiktok", "lapsed")

    assert second["id"] == first["id"] and second["status"] == "connected"
    types = sorted(Event.objects.filter(data__id=first["id"]).values_list("type", flat=True))
    assert types.count("social_account.connected") == 1
    assert types.count("social_account.reconnected") == 1


def test_a_connect_and_a_reauth_of_one_binding_completing_at_once_after_a_rename_both_succeed(owner, monkeypatch):
    """The customer has the connect tab and a reauth tab of the same account open, consents in both, and
    both callbacks run at once while the platform profile changed (a new display name). The connect wrote the
    identity's profile and then waited for the binding's row lock; the reauth held that lock and waited for
    the identity's (its select_related joined it into FOR UPDATE): PostgreSQL killed the reauth as a
    deadlock, and the customer who had consented landed on `platform_error`. Both complete now."""
    from urllib.parse import parse_qs

    from tests.concurrency import SecondQueuesBehindFirst

    account = connected_account(owner, "tiktok", "renamed.creator")
    PlatformIdentity.objects.filter(bindings__pk=account["id"]).update(display_name="Old Name")
    connect_link = start(owner, "tiktok")
    reauth_link = owner.client.post(
        f"/v1/projects/{owner.project.id}/social/reauth-url", {"socialAccountId": account["id"]}, format="json"
    ).json()
    connect_callback = consent("tiktok", connect_link["authorizeUrl"], "renamed.creator")
    reauth_callback = consent("tiktok", reauth_link["authorizeUrl"], "renamed.creator")

    # The connect's callback stops right after writing the new profile, its transaction open, until the
    # reauth's callback queues on a lock the connect holds (the binding's; the identity's before).
    race, save = SecondQueuesBehindFirst('SELECT "accounts_socialaccount"."id"'), PlatformIdentity.save

    def save_then_hold(identity, *args, **kwargs):
        save(identity, *args, **kwargs)
        race.hold()

    monkeypatch.setattr(PlatformIdentity, "save", save_then_hold)
    connected, reauthorized = race.run(
        lambda: follow_callback(connect_callback)["Location"], lambda: follow_callback(reauth_callback)["Location"]
    )
    landed = {"connect": connected, "reauth": reauthorized}

    assert race.overlapped  # the two callbacks did overlap
    errors = {name: parse_qs(urlsplit(url).query).get("layers_oauth_error") for name, url in landed.items()}
    assert errors == {"connect": None, "reauth": None}, landed
    assert status(owner, connect_link["state"])["status"] == "completed"
    assert status(owner, reauth_link["state"])["status"] == "completed"
    bound = owner.client.get(f"/v1/social-accounts/{account['id']}").json()
    assert bound["status"] == "connected"
    assert PlatformIdentity.objects.get(bindings__pk=account["id"]).display_name != "Old Name"


def test_a_callback_url_typed_with_a_trailing_slash_gets_the_callbacks_own_page(owner, client):
    # Platforms send the exact redirect_uri; a customer retyping the address may add a "/". They got Django's
    # bare "Not Found" page (the DEBUG route list under make run), not the page telling them to go back.
    response = client.get("/oauth/tiktok/callback/?state=st_garbled&code=x")

    assert response.status_code == 400
    assert b"unknown or invalid" in response.content


def test_an_instagram_denial_without_state_tells_the_customer_they_declined(owner):
    # PLATFORMS.md: Instagram sends a declined consent back as `?error=access_denied&error_reason=user_denied&…`,
    # without the state (the sandbox keeps it, as API.md says). The customer read "This sign-in link is unknown
    # or invalid": they are told they declined, and nothing redirects anywhere (whose returnUrl is unknown).
    from django.test import Client

    link = start(owner, "instagram")
    denied = {"error": "access_denied", "error_reason": "user_denied", "error_description": "The user denied."}

    response = Client().get("/oauth/instagram/callback", denied)

    assert response.status_code == 200 and "Location" not in response
    assert b"You declined to connect your Instagram account" in response.content
    assert b"unknown or invalid" not in response.content
    assert not SocialAccount.objects.exists()
    assert status(owner, link["state"])["status"] == "pending"  # expired after its 30 minutes
    # Anything else without a state is still the broken link it was.
    assert Client().get("/oauth/instagram/callback", {"code": "abc"}).status_code == 400


def _oauth_lines(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "accounts.services" and r.getMessage().startswith("oauth ")]


def _sessions_found(term: str):
    """The OAuth sessions list as ops see it after pasting `term` (an id from a log line) into its search."""
    from tests.staff import signed_in_staff

    _, staff = signed_in_staff("accounts.view_oauthsession", username="oncall")
    page = staff.get("/admin/accounts/oauthsession/", {"q": term})
    assert page.status_code == 200
    return page


@pytest.mark.parametrize("platform", PLATFORMS)
def test_a_platform_error_on_the_callback_is_logged_and_shown_on_the_oauth_session(owner, platform, caplog):
    """The platform sends the customer back with an error that is no declined consent (TikTok's
    unauthorized_client: the app not approved for Login Kit, a redirect_uri not registered…): every connect
    then fails alike, and nothing said why. The partner's code stays platform_error (API.md); ops read what
    the platform said in a warning and on the OAuth session, without the state or anything echoed with it."""
    from django.test import Client

    link = start(owner, platform)
    state = link["state"]
    said = f"The redirect_uri is not registered for this app (state={state}&access_token=IGQW-echo-5678). "
    response = Client().get(
        f"/oauth/{platform}/callback",
        {"state": state, "error": "unauthorized_client", "error_description": said + "x" * 5000},
    )

    assert response["Location"] == sent_back_to(platform, f"{RETURN_URL}?layers_oauth_error=platform_error")
    assert status(owner, state)["error"] == {"code": "platform_error"}
    [line] = [r for r in _oauth_lines(caplog) if "unauthorized_client" in r.getMessage()]
    assert line.levelno == logging.WARNING
    message = line.getMessage()
    for named in (state[:10], owner.org.pk, owner.project.pk, "The redirect_uri is not registered for this app"):
        assert named in message, message
    assert len(message) < 1000  # the description is cut, not written out whole
    page = _sessions_found(message.split()[1]).content.decode()
    assert "unauthorized_client" in page and "The redirect_uri is not registered for this app" in page
    for secret in (state, "IGQW-echo-5678"):
        assert secret not in caplog.text and secret not in page


TIKTOK_REFUSALS = {
    # Layers' client secret is wrong (a rotation half done): every connect fails, and it looked like a
    # customer's stale code (invalid_grant) in the log.
    "code exchange": (
        "/v2/oauth/token/",
        {"error": "invalid_client", "error_description": "Client secret is invalid.", "log_id": "x"},
        "invalid_client",
        "token_exchange_failed",
    ),
    "profile fetch": (
        "/v2/user/info/",
        {"data": {}, "error": {"code": "access_token_invalid", "message": "Token invalid.", "log_id": "x"}},
        "access_token_invalid",
        "platform_error",
    ),
}


@pytest.mark.parametrize("failing", TIKTOK_REFUSALS)
def test_a_refused_code_exchange_or_profile_fetch_logs_the_platforms_code_and_the_admin_finds_it(
    owner, caplog, failing
):
    path, answer, platform_code, partner_code = TIKTOK_REFUSALS[failing]
    other = start(owner, "tiktok")  # another session, which the log line's id must not find
    link = start(owner, "tiktok", project=owner.projects[1])
    location = consent("tiktok", link["authorizeUrl"], "refused.user")
    with intercepted({path: lambda request, sandbox: httpx.Response(401, json=answer)}):
        response = follow_callback(location)

    assert response["Location"] == f"{RETURN_URL}?layers_oauth_error={partner_code}"
    [line] = [r.getMessage() for r in _oauth_lines(caplog) if f"{failing} failed" in r.getMessage()]
    for named in (platform_code, link["state"][:10], owner.org.pk, owner.projects[1].pk):
        assert named in line, line
    page = _sessions_found(line.split()[1])  # the id the line gives, as ops copy it
    assert [session.pk for session in page.context["cl"].result_list] == [link["state"]]
    assert platform_code in page.content.decode()
    assert other["state"][:10] not in page.content.decode()


def test_a_line_break_in_the_platforms_error_description_cannot_forge_a_log_line(owner, caplog):
    from django.test import Client

    from accounts.models import OAuthSession

    link = start(owner, "tiktok")
    forged = "bad scope\n2026-01-01 00:00:00,000 ERROR accounts.services - oauth st_0000000: forged"
    Client().get(
        "/oauth/tiktok/callback",
        {"state": link["state"], "error": "invalid_scope", "error_description": forged},
    )

    [line] = [r.getMessage() for r in _oauth_lines(caplog) if "invalid_scope" in r.getMessage()]
    assert "\n" not in line, repr(line)
    assert "\n" not in OAuthSession.objects.get(pk=link["state"]).platform_message


@pytest.mark.parametrize(
    ("platform", "error", "echoed_in"),
    [("tiktok", "server_error", "error_description"), ("instagram", "invalid_request", "error_reason")],
)
def test_a_code_the_platform_echoes_bare_beside_its_error_is_blanked(owner, caplog, platform, error, echoed_in):
    """Not as a `code=` parameter, which any credential blanking catches: the code alone, in the platform's
    words (its description, or Instagram's `error_reason`), is never logged nor kept on the session the admin
    shows."""
    link = start(owner, platform)
    code = "Ab3xQ9-one-time-authorization-code"
    Client().get(
        f"/oauth/{platform}/callback",
        {"state": link["state"], "code": code, "error": error, echoed_in: f"could not use {code}"},
    )

    kept = OAuthSession.objects.get(pk=link["state"]).platform_message
    assert error in kept and "could not use" in kept, kept
    assert code not in kept
    assert code not in caplog.text


def test_a_callback_with_neither_a_code_nor_an_error_says_so_on_the_oauth_session(owner):
    from django.test import Client

    from accounts.models import OAuthSession

    link = start(owner, "tiktok")
    response = Client().get("/oauth/tiktok/callback", {"state": link["state"]})

    assert response["Location"] == f"{RETURN_URL}?layers_oauth_error=platform_error"
    assert status(owner, link["state"])["error"] == {"code": "platform_error"}
    assert OAuthSession.objects.get(pk=link["state"]).platform_message == "no code and no error"


def test_instagrams_error_reason_is_logged_and_kept_on_the_oauth_session_beside_its_error(owner, caplog):
    """Instagram sends a failed connect back with `error_reason` beside `error` and `error_description`
    (PLATFORMS.md): its narrower cause was dropped, while the other two were logged and kept. It is blanked
    and bounded the same way (some platforms echo the request back)."""
    from django.test import Client

    from accounts.models import OAuthSession

    link = start(owner, "instagram")
    state = link["state"]
    response = Client().get(
        "/oauth/instagram/callback",
        {
            "state": state,
            "error": "invalid_request",
            "error_reason": f"redirect_uri_mismatch for {state}",
            "error_description": "The redirect_uri does not match (access_token=IGQW-echo-5678).",
        },
    )

    assert response["Location"] == sent_back_to("instagram", f"{RETURN_URL}?layers_oauth_error=platform_error")
    kept = OAuthSession.objects.get(pk=state).platform_message
    [line] = [r.getMessage() for r in _oauth_lines(caplog) if "invalid_request" in r.getMessage()]
    for said in (kept, line):
        for named in ("invalid_request", "redirect_uri_mismatch", "The redirect_uri does not match"):
            assert named in said, said
    for secret in (state, "IGQW-echo-5678"):
        assert secret not in caplog.text and secret not in kept


def test_a_second_callback_waits_no_longer_than_the_web_requests_platform_deadline(owner, settings, monkeypatch):
    # The first callback's worker died mid-exchange (the state stays `exchanging` until recovered): a reload
    # waits for it, but never past what gunicorn's grace allows a web request (graceful_timeout is derived
    # from web_request_deadline), whatever LAYERS_PLATFORM_TIMEOUT is set to. A clock stands in for the wait.
    from accounts.platforms.http import web_request_deadline

    settings.LAYERS_PLATFORM_TIMEOUT = 0.5
    assert web_request_deadline() < services.CALLBACK_UNDERWAY_WAIT_SECONDS
    link = start(owner, "tiktok")
    location = consent("tiktok", link["authorizeUrl"], "stuck.phone")
    OAuthSession.objects.filter(state=link["state"]).update(status=OAuthSession.Status.EXCHANGING)
    clock = {"now": 1000.0}
    monkeypatch.setattr(
        services,
        "time",
        SimpleNamespace(
            monotonic=lambda: clock["now"], sleep=lambda seconds: clock.__setitem__("now", clock["now"] + seconds)
        ),
    )

    answer = follow_callback(location)

    assert answer["Location"] == f"{RETURN_URL}?layers_oauth_error=already_used"
    waited = clock["now"] - 1000.0
    assert 0 < waited <= web_request_deadline() + services.CALLBACK_UNDERWAY_POLL_SECONDS, waited
