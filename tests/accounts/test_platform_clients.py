"""The TikTok and Instagram clients, end to end against the sandbox (in-process, through the real client
code and the real wire formats), plus recorded-payload tests of their error mapping (httpx.MockTransport)."""

import json
from datetime import timedelta
from urllib.parse import urlencode

import httpx
import pytest
import time_machine
from django.utils import timezone

from accounts.platforms import get_client
from accounts.platforms.base import (
    MediaItem,
    PermissionMissing,
    PlatformError,
    PlatformUnavailable,
    RateLimited,
    RequestRejected,
    TokenInvalid,
    TokenSet,
)
from accounts.platforms.sandbox.identities import instagram_user_id, tiktok_open_id
from tests.platform_helpers import (
    callback_uri,
    connect,
    consent,
    inject_fault,
    intercepted,
    invalidate_tokens,
    redirect_params,
    sandbox_posts,
)

PLATFORMS = ["tiktok", "instagram"]
VIDEO = MediaItem(url="https://cdn.layers.test/media/clip.mp4", kind="video")
IMAGE = MediaItem(url="https://cdn.layers.test/media/photo-1.jpg", kind="image")
IMAGE_2 = MediaItem(url="https://cdn.layers.test/media/photo-2.jpg", kind="image")
MEDIA = {"video": [VIDEO], "image": [IMAGE], "carousel": [IMAGE, IMAGE_2]}


def expected_user_id(platform: str, username: str) -> str:
    return tiktok_open_id(username) if platform == "tiktok" else instagram_user_id(username)


def publish(platform: str, tokens: TokenSet, *, mode="publish", media_type="video", caption="Hello from Layers"):
    return get_client(platform).publish(
        access_token=tokens.access_token,
        platform_user_id=tokens.platform_user_id,
        mode=mode,
        media_type=media_type,
        media=MEDIA[media_type],
        caption=caption,
    )


def status(platform: str, tokens: TokenSet, publish_id: str, **extra):
    return get_client(platform).publish_status(
        access_token=tokens.access_token, platform_user_id=tokens.platform_user_id, publish_id=publish_id, **extra
    )


def assert_no_token_in(exc: Exception, *tokens: str | None) -> None:
    text = f"{exc} {exc!r} {getattr(exc, 'code', '')}"
    for token in tokens:
        if token:
            assert token not in text


# --- Authorization ---------------------------------------------------------------------------------------


def test_get_client_knows_both_platforms_and_refuses_others():
    assert get_client("tiktok").platform == "tiktok"
    assert get_client("instagram").platform == "instagram"
    with pytest.raises(ValueError):
        get_client("myspace")


@pytest.mark.parametrize("platform", PLATFORMS)
def test_given_approved_consent_when_code_is_exchanged_then_tokens_belong_to_the_handle(db, platform):
    tokens = connect(platform, "Jane.Doe")

    assert tokens.platform_user_id == expected_user_id(platform, "jane.doe")
    assert tokens.access_token
    assert tokens.expires_at > timezone.now()
    assert tokens.scopes
    if platform == "tiktok":
        assert tokens.refresh_token and tokens.refresh_expires_at > tokens.expires_at
        assert tokens.expires_at - timezone.now() == pytest.approx(timedelta(hours=24), abs=timedelta(seconds=5))
    else:
        assert tokens.refresh_token is None
        assert tokens.expires_at - timezone.now() == pytest.approx(timedelta(seconds=5183944), abs=timedelta(seconds=5))


@pytest.mark.parametrize("platform", PLATFORMS)
def test_given_same_handle_connected_twice_then_same_platform_user(db, platform):
    first = connect(platform, "same_handle")
    second = connect(platform, "same_handle")
    other = connect(platform, "other_handle")

    assert first.platform_user_id == second.platform_user_id
    assert first.access_token != second.access_token
    assert other.platform_user_id != first.platform_user_id


@pytest.mark.parametrize("platform", PLATFORMS)
def test_given_denied_consent_then_redirect_carries_access_denied_and_state(db, platform):
    client = get_client(platform)
    url = client.authorize_url(state="st-42", redirect_uri=callback_uri(platform))

    location = consent(platform, url, "jane", decision="deny")

    params = redirect_params(location)
    assert location.startswith(callback_uri(platform) + "?")
    assert params["error"] == "access_denied" and params["state"] == "st-42"
    assert "code" not in params
    if platform == "instagram":
        assert params["error_reason"] == "user_denied"


@pytest.mark.parametrize("platform", PLATFORMS)
def test_given_a_used_code_when_exchanged_again_then_rejected(db, platform):
    client = get_client(platform)
    uri = callback_uri(platform)
    code = redirect_params(consent(platform, client.authorize_url(state="s", redirect_uri=uri), "jane"))["code"]
    client.exchange_code(code=code, redirect_uri=uri)

    with pytest.raises(RequestRejected) as caught:
        client.exchange_code(code=code, redirect_uri=uri)
    assert_no_token_in(caught.value, code)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_given_another_redirect_uri_when_exchanging_then_rejected(db, platform):
    client = get_client(platform)
    uri = callback_uri(platform)
    code = redirect_params(consent(platform, client.authorize_url(state="s", redirect_uri=uri), "jane"))["code"]

    with pytest.raises(RequestRejected):
        client.exchange_code(code=code, redirect_uri="https://evil.test/callback")


@pytest.mark.parametrize(
    ("platform", "lifetime"), [("tiktok", timedelta(minutes=10)), ("instagram", timedelta(hours=1))]
)
def test_given_a_code_past_its_lifetime_when_exchanged_then_rejected(db, platform, lifetime):
    client = get_client(platform)
    uri = callback_uri(platform)
    code = redirect_params(consent(platform, client.authorize_url(state="s", redirect_uri=uri), "jane"))["code"]

    with time_machine.travel(timezone.now() + lifetime + timedelta(seconds=1)), pytest.raises(RequestRejected):
        client.exchange_code(code=code, redirect_uri=uri)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_authorize_url_passes_the_usage_note_to_the_sandbox_consent_page_only(db, platform, settings):
    client = get_client(platform)
    url = client.authorize_url(state="s", redirect_uri=callback_uri(platform), usage_note="Posts for Acme")
    assert "layers_usage_note=Posts+for+Acme" in url

    settings.LAYERS_PLATFORMS = "live"
    live = client.authorize_url(state="s", redirect_uri=callback_uri(platform), usage_note="Posts for Acme")
    assert "layers_usage_note" not in live


# --- Profile and avatar ----------------------------------------------------------------------------------


@pytest.mark.parametrize("platform", PLATFORMS)
def test_profile_names_the_user_and_its_avatar_url_expires(db, platform, settings):
    settings.LAYERS_SANDBOX_AVATAR_TTL_SECONDS = 7200
    tokens = connect(platform, "avatar_owner")

    profile = get_client(platform).get_profile(access_token=tokens.access_token)

    assert profile.platform_user_id == tokens.platform_user_id
    assert profile.username == "avatar_owner"
    assert profile.display_name == "Avatar Owner"
    from accounts.platforms.http import platform_http_client

    with platform_http_client() as http:
        image = http.get(profile.avatar_url)
        assert image.status_code == 200
        assert image.headers["content-type"] == "image/png"
        assert image.content.startswith(b"\x89PNG\r\n\x1a\n")
        with time_machine.travel(timezone.now() + timedelta(hours=2, seconds=1)):
            assert http.get(profile.avatar_url).status_code == 403


# --- Refresh ---------------------------------------------------------------------------------------------


def test_given_tiktok_refresh_then_refresh_token_rotates_and_the_old_one_is_dead(db):
    client = get_client("tiktok")
    tokens = connect("tiktok", "rotator")

    fresh = client.refresh(tokens=tokens)

    assert fresh.refresh_token != tokens.refresh_token
    assert fresh.access_token != tokens.access_token
    assert fresh.platform_user_id == tokens.platform_user_id
    assert client.get_profile(access_token=fresh.access_token).username == "rotator"
    with pytest.raises(TokenInvalid) as caught:
        client.refresh(tokens=tokens)
    assert_no_token_in(caught.value, tokens.refresh_token, tokens.access_token)
    assert client.refresh(tokens=fresh).refresh_token != fresh.refresh_token


def test_given_tiktok_access_token_past_24h_then_token_invalid_but_refresh_works(db):
    client = get_client("tiktok")
    tokens = connect("tiktok", "sleeper")

    with time_machine.travel(timezone.now() + timedelta(hours=24, seconds=1)):
        with pytest.raises(TokenInvalid):
            client.get_profile(access_token=tokens.access_token)
        fresh = client.refresh(tokens=tokens)
        assert client.get_profile(access_token=fresh.access_token).username == "sleeper"


def test_given_instagram_token_younger_than_24h_then_refresh_refused_later_allowed(db):
    client = get_client("instagram")
    tokens = connect("instagram", "ig_refresher")

    with pytest.raises(RequestRejected):
        client.refresh(tokens=tokens)

    with time_machine.travel(timezone.now() + timedelta(hours=25)):
        fresh = client.refresh(tokens=tokens)
        assert fresh.access_token != tokens.access_token
        assert fresh.platform_user_id == tokens.platform_user_id
        assert fresh.expires_at - timezone.now() == pytest.approx(timedelta(seconds=5183944), abs=timedelta(seconds=5))
        assert client.get_profile(access_token=fresh.access_token).username == "ig_refresher"


def test_given_instagram_token_expired_then_refresh_is_token_invalid(db):
    client = get_client("instagram")
    tokens = connect("instagram", "ig_expired")

    with time_machine.travel(timezone.now() + timedelta(days=61)), pytest.raises(TokenInvalid) as caught:
        client.refresh(tokens=tokens)
    assert caught.value.code == "190/463"
    assert_no_token_in(caught.value, tokens.access_token)


# --- Invalidation and revocation -------------------------------------------------------------------------


@pytest.mark.parametrize("platform", PLATFORMS)
def test_given_tokens_invalidated_then_every_call_is_token_invalid(db, platform):
    client = get_client(platform)
    tokens = connect(platform, "victim")

    invalidate_tokens(platform, "victim")

    with pytest.raises(TokenInvalid) as caught:
        client.get_profile(access_token=tokens.access_token)
    assert_no_token_in(caught.value, tokens.access_token)
    with pytest.raises(TokenInvalid):
        client.refresh(tokens=tokens)
    with pytest.raises(TokenInvalid):
        publish(platform, tokens)
    # A new consent gives working tokens again.
    assert client.get_profile(access_token=connect(platform, "victim").access_token).username == "victim"


@pytest.mark.parametrize("platform", PLATFORMS)
def test_given_revoke_then_tokens_are_dead_and_revoking_again_is_fine(db, platform):
    client = get_client(platform)
    tokens = connect(platform, "leaver")

    assert client.revoke(access_token=tokens.access_token) is True

    with pytest.raises(TokenInvalid):
        client.get_profile(access_token=tokens.access_token)
    assert client.revoke(access_token=tokens.access_token) is False  # refused, and nothing raised


def test_given_an_expired_tiktok_access_token_then_revoke_withdraws_nothing_and_the_refresh_token_still_works(db):
    """The sandbox's model of TikTok's revoke (PLATFORMS.md is silent; RFC 7009 lets a server ignore such a
    token): an expired access token is refused, and the grant lives on with its refresh token."""
    client = get_client("tiktok")
    tokens = connect("tiktok", "expired_revoker")

    with time_machine.travel(timezone.now() + timedelta(hours=25)):
        assert client.revoke(access_token=tokens.access_token) is False
        renewed = client.refresh(tokens=tokens)
        assert client.revoke(access_token=renewed.access_token) is True
        with pytest.raises(TokenInvalid):
            client.refresh(tokens=renewed)


# --- Injected faults -------------------------------------------------------------------------------------


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize(
    ("kind", "error"),
    [("rate_limited", RateLimited), ("server_error", PlatformUnavailable), ("timeout", PlatformUnavailable)],
)
def test_given_a_fault_then_the_client_raises_its_typed_error_once(db, platform, kind, error):
    client = get_client(platform)
    tokens = connect(platform, "faulty")
    inject_fault(platform, "faulty", kind, count=2)

    for _ in range(2):
        with pytest.raises(error) as caught:
            client.get_profile(access_token=tokens.access_token)
        assert_no_token_in(caught.value, tokens.access_token)
    assert client.get_profile(access_token=tokens.access_token).username == "faulty"
    if kind == "timeout":
        assert caught.value.code == "timeout"


def test_given_instagram_throttling_then_retry_after_comes_from_the_usage_header(db):
    tokens = connect("instagram", "throttled")
    inject_fault("instagram", "throttled", "rate_limited")

    with pytest.raises(RateLimited) as caught:
        get_client("instagram").get_profile(access_token=tokens.access_token)

    assert caught.value.code == "17"
    assert caught.value.retry_after == 60


# Python's JSON decoder gives up on "[[[[…" a few thousand deep with a RecursionError, not a ValueError.
DEEP_USAGE = "[" * 5000 + "]" * 5000


def throttled_with_a_deep_usage_header(username: str):
    """An override: the sandbox throttles the request (code 17, as Meta does), its usage header replaced by
    one nested thousands deep."""

    def answer(request: httpx.Request, sandbox: httpx.WSGITransport) -> httpx.Response:
        inject_fault("instagram", username, "rate_limited")
        throttled = sandbox.handle_request(request)
        throttled.read()
        headers = [(k, v) for k, v in throttled.headers.multi_items() if k.lower() != "x-business-use-case-usage"]
        headers.append(("X-Business-Use-Case-Usage", DEEP_USAGE))
        return httpx.Response(throttled.status_code, headers=headers, content=throttled.content)

    return answer


def test_an_instagram_usage_header_nested_too_deep_is_ignored_and_the_throttled_publish_kept(db, caplog):
    # A throttled media_publish is a "throttled" status (the container waits): a usage header Python could not
    # decode made it a RecursionError out of the client instead.
    tokens = connect("instagram", "deep.usage")
    container = publish("instagram", tokens, media_type="image")

    with intercepted({"/media_publish": throttled_with_a_deep_usage_header("deep.usage")}):
        at_publish = status("instagram", tokens, container.publish_id)

    assert (at_publish.state, at_publish.fail_code, at_publish.retry_after) == ("throttled", "17", None)
    assert sandbox_posts("instagram", "deep.usage", kind="post") == []
    [warning] = [r for r in caplog.records if "X-Business-Use-Case-Usage" in r.getMessage()]
    assert warning.levelname == "WARNING" and DEEP_USAGE[:100] not in warning.getMessage()


def test_an_instagram_usage_header_nested_too_deep_still_leaves_the_metrics_read_before_the_throttle(db):
    tokens = connect("instagram", "deep.metrics")
    published = [status("instagram", tokens, publish("instagram", tokens).publish_id).external_id for _ in range(2)]
    throttle = throttled_with_a_deep_usage_header("deep.metrics")
    # Insights of the first media read; those of the second throttled with the deep header.
    second = f"/{published[1]}/insights"

    with intercepted({second: throttle}), pytest.raises(RateLimited) as caught:
        get_client("instagram").fetch_metrics(
            access_token=tokens.access_token, platform_user_id=tokens.platform_user_id, external_ids=published
        )

    assert caught.value.retry_after is None
    assert list(caught.value.readings) == [published[0]] and caught.value.unasked == [published[1]]


@pytest.mark.parametrize("platform", PLATFORMS)
def test_given_a_fault_during_code_exchange_then_typed_error(db, platform):
    client = get_client(platform)
    uri = callback_uri(platform)
    code = redirect_params(consent(platform, client.authorize_url(state="s", redirect_uri=uri), "early_fault"))["code"]
    inject_fault(platform, "early_fault", "server_error")

    with pytest.raises(PlatformUnavailable):
        client.exchange_code(code=code, redirect_uri=uri)
    assert client.exchange_code(code=code, redirect_uri=uri).access_token


@pytest.mark.parametrize("platform", PLATFORMS)
def test_given_a_reject_fault_then_the_publish_ends_failed_and_other_calls_are_untouched(db, platform):
    tokens = connect(platform, "refused")
    inject_fault(platform, "refused", "reject")
    client = get_client(platform)
    assert client.get_profile(access_token=tokens.access_token).username == "refused"  # not a content call

    result = publish(platform, tokens)
    final = status(platform, tokens, result.publish_id)

    assert final.state == "failed"
    # Instagram: Meta's answer to the media_publish call (code 4, subcode 2207051), not a failed container.
    assert final.fail_code == ("spam_risk" if platform == "tiktok" else "4/2207051")
    assert final.fail_reason
    assert [p.external_id for p in sandbox_posts(platform, "refused")] in ([""], [])


@pytest.mark.parametrize(
    "scopes", [["video.publish", "video.upload"], ["user.info.basic", "video.publish", "video.upload"]]
)
def test_a_tiktok_token_without_user_info_profile_still_reads_the_profile_and_posts(db, scopes):
    """`username` needs user.info.profile; a token granted the publishing scopes only (a lean reauth) must
    not read as dead: the profile comes back without the handle, and a published post without its URL."""
    client = get_client("tiktok")
    assert "user.info.basic" in client.authorize_url(state="s", redirect_uri=callback_uri("tiktok"), scopes=scopes)
    tokens = connect("tiktok", "lean_poster", scopes=scopes)
    assert "user.info.basic" in tokens.scopes and "user.info.profile" not in tokens.scopes

    known = client.get_profile(access_token=tokens.access_token, scopes=tokens.scopes)
    unknown = client.get_profile(access_token=tokens.access_token)  # scopes not known: asked again without

    for profile in (known, unknown):
        assert (profile.platform_user_id, profile.username) == (tokens.platform_user_id, "")
        assert profile.display_name == "Lean Poster" and profile.avatar_url
    final = status("tiktok", tokens, publish("tiktok", tokens).publish_id)
    assert final.state == "published" and final.external_id and final.external_url is None


# --- Publishing ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("media_type", ["video", "image", "carousel"])
def test_given_publish_mode_then_the_post_is_published_once_with_a_public_url(db, platform, media_type):
    tokens = connect(platform, "poster")

    result = publish(platform, tokens, media_type=media_type, caption=f"A {media_type} post")
    final = status(platform, tokens, result.publish_id)

    assert final.state == "published"
    assert final.external_id
    if platform == "tiktok":
        assert final.external_url == f"https://www.tiktok.com/@poster/video/{final.external_id}"
    else:
        kind = "reel" if media_type == "video" else "p"
        assert final.external_url.startswith(f"https://www.instagram.com/{kind}/")
    posts = sandbox_posts(platform, "poster", kind="post")
    assert [(p.external_id, p.media_type, p.caption) for p in posts] == [
        (final.external_id, media_type, f"A {media_type} post")
    ]
    assert [m["url"] for m in posts[0].media] == [m.url for m in MEDIA[media_type]]


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("media_type", ["video", "image", "carousel"])
def test_given_draft_mode_then_the_asset_reaches_the_creator_inbox(db, platform, media_type):
    tokens = connect(platform, "drafter")

    result = publish(platform, tokens, mode="draft", media_type=media_type, caption="Draft caption")
    final = status(platform, tokens, result.publish_id)

    assert final.state == "sent_to_inbox"
    posts = sandbox_posts(platform, "drafter")
    assert [p.kind for p in posts] == ["draft" if platform == "tiktok" else "delivery"]
    assert posts[0].media_type == media_type


@pytest.mark.parametrize("platform", PLATFORMS)
def test_given_status_polled_many_times_then_exactly_one_post_exists(db, platform):
    tokens = connect(platform, "poller")
    result = publish(platform, tokens, media_type="image", caption="Polled")

    answers = {status(platform, tokens, result.publish_id, caption="Polled") for _ in range(6)}

    assert len(answers) == 1 and next(iter(answers)).state == "published"
    assert len(sandbox_posts(platform, "poller", kind="post")) == 1


@pytest.mark.parametrize("platform", PLATFORMS)
def test_given_processing_time_then_status_is_processing_until_it_elapses(db, platform, settings):
    settings.LAYERS_SANDBOX_PUBLISH_DELAY_SECONDS = 30
    tokens = connect(platform, "patient")
    result = publish(platform, tokens)

    assert status(platform, tokens, result.publish_id).state == "processing"
    assert sandbox_posts(platform, "patient", kind="post") == [] or platform == "tiktok"
    with time_machine.travel(timezone.now() + timedelta(seconds=31)):
        assert status(platform, tokens, result.publish_id).state == "published"


def test_given_instagram_container_published_by_a_dead_worker_then_status_recovers_the_media(db):
    """The worker called media_publish and died before recording the media id: the next poll finds the
    container PUBLISHED, must not publish again, and recovers the media id from the account's media."""
    tokens = connect("instagram", "crashy")
    container, media_id = _publish_then_lose_the_answer(tokens, "Recovered caption")

    recovered = status("instagram", tokens, container, caption="Recovered caption")
    without_caption = status("instagram", tokens, container)

    assert recovered.state == "published" and recovered.external_id == media_id
    assert recovered.external_url.startswith("https://www.instagram.com/p/")
    assert without_caption.state == "published" and without_caption.external_id is None
    assert len(sandbox_posts("instagram", "crashy", kind="post")) == 1


def _publish_then_lose_the_answer(tokens: TokenSet, caption: str) -> tuple[str, str]:
    """A container published through the sandbox as a worker that died right after media_publish leaves it:
    (container id, media id), the media id never recorded."""
    result = publish("instagram", tokens, media_type="image", caption=caption)
    with httpx.Client(transport=httpx.WSGITransport(app=_wsgi_app())) as http:
        answer = http.post(
            f"http://127.0.0.1:8000/sandbox/instagram/graph/v23.0/{tokens.platform_user_id}/media_publish",
            data={"creation_id": result.publish_id, "access_token": tokens.access_token},
        )
    return result.publish_id, answer.json()["id"]


@pytest.mark.parametrize("caption", ["", "Same caption every week"])
def test_given_an_older_post_with_the_same_caption_then_recovery_does_not_take_its_media(db, caption):
    # Captions repeat (an empty caption most of all): the account's older post with the same caption is not
    # the one this dead worker published, and taking its id would give this post another post's URL and metrics.
    tokens = connect("instagram", "repeats")
    with time_machine.travel(timezone.now() - timedelta(days=7)):
        _, older_media = _publish_then_lose_the_answer(tokens, caption)
    scheduled_at = timezone.now() - timedelta(hours=1)
    container, media = _publish_then_lose_the_answer(tokens, caption)

    recovered = status("instagram", tokens, container, caption=caption, not_before=scheduled_at)

    assert recovered.state == "published" and recovered.external_id == media != older_media


def test_given_two_new_posts_with_the_same_caption_then_recovery_records_no_id_rather_than_a_guess(db):
    tokens = connect("instagram", "twins")
    scheduled_at = timezone.now() - timedelta(hours=1)
    container, _ = _publish_then_lose_the_answer(tokens, "Twin")
    _publish_then_lose_the_answer(tokens, "Twin")

    recovered = status("instagram", tokens, container, caption="Twin", not_before=scheduled_at)

    assert recovered.state == "published" and recovered.external_id is None


def _wsgi_app():
    from accounts.platforms.http import InProcessWSGIHandler

    return InProcessWSGIHandler()


@pytest.mark.parametrize("platform", PLATFORMS)
def test_given_media_the_platform_cannot_use_then_the_publish_fails(db, platform):
    tokens = connect(platform, "broken_media")
    result = get_client(platform).publish(
        access_token=tokens.access_token,
        platform_user_id=tokens.platform_user_id,
        mode="publish",
        media_type="video",
        media=[MediaItem(url="https://cdn.layers.test/invalid/clip.mp4", kind="video")],
        caption="",
    )

    final = status(platform, tokens, result.publish_id)

    assert final.state == "failed"
    assert final.fail_code == ("file_format_check_failed" if platform == "tiktok" else "2207052")


@pytest.mark.parametrize("platform", PLATFORMS)
def test_given_media_that_does_not_fit_the_type_then_rejected_before_any_call(db, platform):
    client = get_client(platform, http=httpx.Client(transport=httpx.MockTransport(_no_call)))
    with pytest.raises(RequestRejected) as caught:
        client.publish(
            access_token="tok",
            platform_user_id="u",
            mode="publish",
            media_type="carousel",
            media=[IMAGE],
            caption="",
        )
    assert caught.value.code == "invalid_media"


def _no_call(request):
    raise AssertionError(f"unexpected call to {request.url.path}")


# --- Quotas ----------------------------------------------------------------------------------------------


def test_given_tiktok_init_limit_per_minute_then_rate_limited_until_the_next_minute(db, settings):
    settings.LAYERS_SANDBOX_TIKTOK_RATE_LIMITS = {**settings.LAYERS_SANDBOX_TIKTOK_RATE_LIMITS, "init": 2}
    tokens = connect("tiktok", "hasty")
    start = timezone.now().replace(second=5)
    with time_machine.travel(start, tick=False):
        publish("tiktok", tokens)
        publish("tiktok", tokens)
        with pytest.raises(RateLimited) as caught:
            publish("tiktok", tokens)
    assert caught.value.code == "rate_limit_exceeded"
    with time_machine.travel(start + timedelta(minutes=1), tick=False):
        publish("tiktok", tokens)
    assert len(sandbox_posts("tiktok", "hasty")) == 3


def test_given_tiktok_daily_post_cap_reached_then_creator_info_refuses_with_http_200(db, settings):
    settings.LAYERS_SANDBOX_TIKTOK_DAILY_POST_CAP = 1
    tokens = connect("tiktok", "prolific")
    publish("tiktok", tokens)

    with pytest.raises(RequestRejected) as caught:
        publish("tiktok", tokens)

    assert caught.value.code == "spam_risk_too_many_posts"
    assert caught.value.status == 200
    with time_machine.travel(timezone.now() + timedelta(hours=24, minutes=1)):
        publish("tiktok", get_client("tiktok").refresh(tokens=tokens))


def test_given_tiktok_pending_drafts_cap_then_the_next_draft_is_refused(db, settings):
    settings.LAYERS_SANDBOX_TIKTOK_PENDING_DRAFT_CAP = 2
    tokens = connect("tiktok", "hoarder")
    publish("tiktok", tokens, mode="draft")
    publish("tiktok", tokens, mode="draft", media_type="image")

    with pytest.raises(RequestRejected) as caught:
        publish("tiktok", tokens, mode="draft")
    assert caught.value.code == "spam_risk_too_many_pending_share"


def test_given_instagram_quota_used_up_then_publish_is_rate_limited(db, settings):
    settings.LAYERS_SANDBOX_INSTAGRAM_QUOTA_TOTAL = 1
    tokens = connect("instagram", "ig_quota")
    first = publish("instagram", tokens)
    second = publish("instagram", tokens)  # created before the first one was published: quota still free
    assert status("instagram", tokens, first.publish_id).state == "published"

    # media_publish throttled: the container waits, and the caller decides when to ask again.
    at_publish = status("instagram", tokens, second.publish_id)
    with pytest.raises(RateLimited) as up_front:
        publish("instagram", tokens)

    assert (at_publish.state, at_publish.fail_code) == ("throttled", "9/2207042")
    assert up_front.value.code == "9/2207042"
    assert len(sandbox_posts("instagram", "ig_quota", kind="post")) == 1


def test_given_instagram_drafts_in_live_mode_without_delivery_service_then_refused(db, settings):
    settings.LAYERS_INSTAGRAM_DRAFT_DELIVERY_URL = ""
    tokens = connect("instagram", "ig_live_draft")

    with pytest.raises(RequestRejected) as caught:
        publish("instagram", tokens, mode="draft")
    assert caught.value.code == "draft_delivery_unavailable"


# --- Metrics ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("platform", PLATFORMS)
def test_metrics_of_published_posts_are_deterministic_and_grow(db, platform):
    tokens = connect(platform, "measured")
    published = [status(platform, tokens, publish(platform, tokens).publish_id).external_id for _ in range(2)]
    client = get_client(platform)

    def fetch():
        return client.fetch_metrics(
            access_token=tokens.access_token,
            platform_user_id=tokens.platform_user_id,
            external_ids=[*published, "404404404"],
        )

    later = timezone.now() + timedelta(hours=12)  # within the TikTok access token's 24 h
    with time_machine.travel(later, tick=False):
        first, again = fetch(), fetch()
    with time_machine.travel(later + timedelta(hours=10), tick=False):
        after = fetch()

    assert set(first) == set(published)
    assert first == again
    for media_id in published:
        assert first[media_id].views > 0 and first[media_id].likes > 0
        assert after[media_id].views > first[media_id].views


def test_tiktok_metrics_ask_at_most_20_ids_per_call():
    calls = []

    def handler(request):
        ids = json.loads(request.content)["filters"]["video_ids"]
        calls.append(ids)
        videos = [{"id": i, "view_count": 1, "like_count": 2, "comment_count": 3, "share_count": 4} for i in ids]
        return httpx.Response(200, json={"data": {"videos": videos}, "error": {"code": "ok", "message": ""}})

    client = get_client("tiktok", http=httpx.Client(transport=httpx.MockTransport(handler)))
    ids = [str(7000 + i) for i in range(45)]

    metrics = client.fetch_metrics(access_token="tok", platform_user_id="tt_x", external_ids=ids)

    assert [len(c) for c in calls] == [20, 20, 5]
    assert set(metrics) == set(ids)
    assert metrics["7000"].shares == 4


def test_tiktok_metrics_leave_a_figure_absent_from_the_answer_unknown():
    """TikTok answers the fields it has for a video: one left out is unknown (None), not 0."""

    def handler(request):
        videos = [{"id": "7001", "like_count": 2, "comment_count": 0}]
        return httpx.Response(200, json={"data": {"videos": videos}, "error": {"code": "ok", "message": ""}})

    client = get_client("tiktok", http=httpx.Client(transport=httpx.MockTransport(handler)))

    metrics = client.fetch_metrics(access_token="tok", platform_user_id="tt_x", external_ids=["7001"])

    figures = metrics["7001"]
    assert (figures.views, figures.likes, figures.comments, figures.shares) == (None, 2, 0, None)


# --- Recorded payloads: error mapping --------------------------------------------------------------------

SECRET = "act.SeCrEtToKeN!6135.va"


def stub(platform: str, status: int, body, *, headers=None):
    def handler(request):
        if isinstance(body, bytes | str):
            return httpx.Response(status, content=body, headers=headers)
        return httpx.Response(status, json=body, headers=headers)

    return get_client(platform, http=httpx.Client(transport=httpx.MockTransport(handler)))


def tiktok_env(code: str, message: str = "") -> dict:
    return {"data": {}, "error": {"code": code, "message": message, "log_id": "2024LOG"}}


def ig_error(code: int, subcode: int | None = None, message: str = "boom") -> dict:
    error = {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "Axyz"}
    if subcode:
        error["error_subcode"] = subcode
    return {"error": error}


EXPIRED = TokenSet(
    access_token=SECRET,
    expires_at=timezone.now(),
    platform_user_id="tt_1",
    refresh_token="rft.OtherSecret!6135.va",
)


@pytest.mark.parametrize(
    ("status", "body", "error", "code"),
    [
        (200, tiktok_env("spam_risk_too_many_posts"), RequestRejected, "spam_risk_too_many_posts"),
        (403, tiktok_env("spam_risk_user_banned_from_posting"), RequestRejected, "spam_risk_user_banned_from_posting"),
        (401, tiktok_env("access_token_invalid"), TokenInvalid, "access_token_invalid"),
        (401, tiktok_env("scope_not_authorized"), TokenInvalid, "scope_not_authorized"),
        # TikTok's "some fields need additional scopes", refused for the basic fields too: the token lacks
        # user.info.basic, a reauth (it was a plain refusal, and the health check could never flag the account).
        (400, tiktok_env("scope_permission_missed"), PermissionMissing, "scope_permission_missed"),
        (429, tiktok_env("rate_limit_exceeded"), RateLimited, "rate_limit_exceeded"),
        (500, tiktok_env("internal_error"), PlatformUnavailable, "internal_error"),
        (400, tiktok_env("invalid_params", f"bad token {SECRET}"), RequestRejected, "invalid_params"),
        (502, b"<html>Bad gateway</html>", PlatformUnavailable, "http_502"),
        (429, b"", RateLimited, "rate_limit_exceeded"),
        (200, b"not json", PlatformUnavailable, "bad_response"),
        # Python's decoder raises RecursionError, not ValueError, on JSON nested this deep.
        (200, DEEP_USAGE.encode(), PlatformUnavailable, "bad_response"),
        (503, DEEP_USAGE.encode(), PlatformUnavailable, "http_503"),
    ],
)
def test_tiktok_api_answers_map_to_typed_errors(status, body, error, code):
    client = stub("tiktok", status, body)

    with pytest.raises(error) as caught:
        client.get_profile(access_token=SECRET)

    assert caught.value.code == code
    assert_no_token_in(caught.value, SECRET)


@pytest.mark.parametrize("status", [200, 400])
def test_tiktok_invalid_grant_is_a_rejected_code_but_a_dead_refresh_token(status):
    body = {"error": "invalid_grant", "error_description": "Authorization code is expired.", "log_id": "L"}

    with pytest.raises(RequestRejected) as on_exchange:
        stub("tiktok", status, body).exchange_code(code="code*0!1234.va", redirect_uri="https://x.test/cb")
    with pytest.raises(TokenInvalid) as on_refresh:
        stub("tiktok", status, body).refresh(tokens=EXPIRED)

    assert on_exchange.value.code == on_refresh.value.code == "invalid_grant"


@pytest.mark.parametrize(
    ("error", "status", "expected"),
    [
        ("server_error", 200, PlatformUnavailable),
        ("temporarily_unavailable", 503, PlatformUnavailable),
        ("invalid_client", 401, RequestRejected),
        ("invalid_request", 400, RequestRejected),
        ("rate_limit_exceeded", 429, RateLimited),
    ],
)
@pytest.mark.parametrize("echo", ["raw", "form-encoded"])
def test_tiktok_oauth_errors_map_to_typed_errors(error, status, expected, echo):
    # A platform may echo the request back: as sent, or as the form body carried it ("!" is "%21" there).
    token = EXPIRED.refresh_token if echo == "raw" else urlencode({"t": EXPIRED.refresh_token})[2:]
    body = {"error": error, "error_description": f"echo {token}", "log_id": "L"}

    with pytest.raises(expected) as caught:
        stub("tiktok", status, body).refresh(tokens=EXPIRED)

    assert caught.value.code == error
    assert_no_token_in(caught.value, EXPIRED.refresh_token, EXPIRED.access_token, token, "OtherSecret")


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize(
    ("exception", "code"), [(httpx.ReadTimeout, "timeout"), (httpx.ConnectError, "connection_error")]
)
def test_transport_failures_are_platform_unavailable(platform, exception, code):
    def handler(request):
        raise exception(f"failed for {request.url}", request=request)

    client = get_client(platform, http=httpx.Client(transport=httpx.MockTransport(handler)))

    with pytest.raises(PlatformUnavailable) as caught:
        client.get_profile(access_token=SECRET)

    assert caught.value.code == code
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert_no_token_in(caught.value, SECRET)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_an_undecodable_answer_is_platform_unavailable(platform):
    # A broken proxy labels plain bytes as gzip: httpx cannot decode the body (httpx.DecodingError).
    def corrupt_gzip(request):
        headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
        return httpx.Response(200, content=b"\x00garbage", headers=headers)

    client = get_client(platform, http=httpx.Client(transport=httpx.MockTransport(corrupt_gzip)))

    with pytest.raises(PlatformUnavailable) as caught:
        client.get_profile(access_token=SECRET)

    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert_no_token_in(caught.value, SECRET)


@pytest.mark.parametrize(
    ("status", "body", "error", "code"),
    [
        (400, ig_error(190, 463, "Session has expired"), TokenInvalid, "190/463"),
        (401, ig_error(190, 460), TokenInvalid, "190/460"),
        (200, ig_error(190), TokenInvalid, "190"),
        (400, ig_error(4, message="Application request limit reached"), RateLimited, "4"),
        (400, ig_error(17), RateLimited, "17"),
        (403, ig_error(32), RateLimited, "32"),
        (400, ig_error(613), RateLimited, "613"),
        # Instagram Platform calls are under Meta's Business Use Case limits, whose Instagram code is 80002
        (
            400,
            ig_error(80002, message="There have been too many calls to this Instagram account"),
            RateLimited,
            "80002",
        ),
        (400, ig_error(9, 2207042), RateLimited, "9/2207042"),
        # Graph API > Handling Errors: 341 "Application limit reached", a temporary issue due to downtime or
        # throttling ("wait and retry"), was refused content; 102 "API Session", an expired or revoked login (with
        # or without an auth subcode), was refused content too: the account never went reauth_required.
        (400, ig_error(341, message="Application limit reached"), RateLimited, "341"),
        (400, ig_error(102, message="Session key invalid or no longer valid"), TokenInvalid, "102"),
        (400, ig_error(102, 460), TokenInvalid, "102/460"),
        # 368 "Temporarily blocked for policies violations. Wait and retry the operation" (same page): it was
        # refused content, and the post failed at once for a block that lifts.
        (400, ig_error(368, 1390008, "You've been temporarily blocked from using it."), RateLimited, "368/1390008"),
        (500, ig_error(2), PlatformUnavailable, "2"),
        (503, ig_error(100), PlatformUnavailable, "100"),
        (400, ig_error(100, 33, f"Object {SECRET} does not exist"), RequestRejected, "100/33"),
        (403, ig_error(10), RequestRejected, "10"),
        (500, b"", PlatformUnavailable, "http_500"),
        # A 4xx without Graph's error object is an edge's page (a CDN, a proxy), not Meta refusing the call.
        (404, b"", PlatformUnavailable, "http_404"),
        (403, b"<html><body><h1>403 Forbidden</h1></body></html>", PlatformUnavailable, "http_403"),
        (400, {"message": "Bad Request"}, PlatformUnavailable, "http_400"),
        (500, DEEP_USAGE.encode(), PlatformUnavailable, "http_500"),  # a RecursionError to Python's decoder
    ],
)
def test_instagram_graph_answers_map_to_typed_errors(status, body, error, code):
    client = stub("instagram", status, body)

    with pytest.raises(error) as caught:
        client.get_profile(access_token=SECRET)

    assert caught.value.code == code
    assert_no_token_in(caught.value, SECRET)


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("status", [400, 403, 404])
def test_an_edges_4xx_page_is_an_outage_in_which_nothing_was_carried_out(platform, status):
    # Graph answers its errors with its error object, TikTok with its envelope: a 4xx without either is a CDN's
    # or a proxy's page. Read as the platform refusing, it failed the post as refused content. The edge turned
    # the request away, so the request may be sent again (outcome known: nothing done).
    with pytest.raises(PlatformUnavailable) as caught:
        stub(platform, status, b"<html><body>Forbidden</body></html>").get_profile(access_token=SECRET)

    assert caught.value.code == f"http_{status}" and caught.value.outcome_unknown is False


@pytest.mark.parametrize(("status", "error"), [(400, RequestRejected), (429, RateLimited), (500, PlatformUnavailable)])
def test_instagram_token_endpoint_errors_map_to_typed_errors(status, error):
    body = {"error_type": "OAuthException", "code": status, "error_message": "Matching code was not found"}

    with pytest.raises(error) as caught:
        stub("instagram", status, body).exchange_code(code="AQsecretcode", redirect_uri="https://x.test/cb")
    assert_no_token_in(caught.value, "AQsecretcode")


@pytest.mark.parametrize("shape", ["documented", "observed"])
def test_instagram_code_exchange_accepts_both_answer_shapes(shape):
    short = {"access_token": "IGQshort", "user_id": 17841400000000001, "permissions": "instagram_business_basic"}

    def handler(request):
        if request.url.path.endswith("/oauth/access_token"):
            return httpx.Response(200, json={"data": [short]} if shape == "documented" else short)
        if request.url.path.endswith("/graph/access_token"):
            assert request.url.params["grant_type"] == "ig_exchange_token"
            assert request.url.params["access_token"] == "IGQshort"
            return httpx.Response(200, json={"access_token": "IGAAlong", "token_type": "bearer", "expires_in": 5183944})
        assert request.url.path.endswith("/me")
        return httpx.Response(200, json={"user_id": "17841400000000001", "id": "2999"})

    client = get_client("instagram", http=httpx.Client(transport=httpx.MockTransport(handler)))

    tokens = client.exchange_code(code="AQcode", redirect_uri="https://x.test/cb")

    assert tokens.access_token == "IGAAlong"
    assert tokens.platform_user_id == "17841400000000001"
    assert tokens.scopes == ("instagram_business_basic",)
    # Also kept: one of the ids Meta's deauthorize and data deletion requests may name the person by.
    assert tokens.token_user_id == "17841400000000001"


@pytest.mark.parametrize("odd", [None, "", {"id": 1}, True, "1\x002", "9" * 129])
def test_instagram_ids_kept_for_matching_only_are_dropped_when_unstorable_not_fatal(odd):
    def handler(request):
        if request.url.path.endswith("/oauth/access_token"):
            return httpx.Response(200, json={"access_token": "IGQshort", "user_id": odd, "permissions": "x"})
        if request.url.path.endswith("/graph/access_token"):
            return httpx.Response(200, json={"access_token": "IGAAlong", "expires_in": 5183944})
        return httpx.Response(200, json={"user_id": "17841400000000001", "id": odd, "username": "ig.odd"})

    client = get_client("instagram", http=httpx.Client(transport=httpx.MockTransport(handler)))

    tokens = client.exchange_code(code="AQcode", redirect_uri="https://x.test/cb")
    profile = client.get_profile(access_token=tokens.access_token)

    assert (tokens.platform_user_id, tokens.token_user_id) == ("17841400000000001", None)
    assert (profile.platform_user_id, profile.app_scoped_id, profile.username) == ("17841400000000001", None, "ig.odd")


def test_errors_are_platform_errors_with_code_and_status():
    with pytest.raises(PlatformError) as caught:
        stub("tiktok", 403, tiktok_env("url_ownership_unverified")).get_profile(access_token=SECRET)
    assert caught.value.status == 403 and caught.value.code == "url_ownership_unverified"


@pytest.mark.parametrize(
    ("header", "expected"),
    [("120", 120.0), ("0", 0.0), ("nan", None), ("inf", None), ("-5", None), ("1e12", None), ("86401", None)],
)
def test_a_retry_after_that_is_no_sane_wait_is_ignored_not_obeyed(header, expected):
    # A worker computes the post's next attempt from it: nan or inf used to crash that (timedelta), a huge
    # value parked the post for years. Past a day, or not a number of seconds, the caller's backoff applies.
    client = stub("tiktok", 429, tiktok_env("rate_limit_exceeded"), headers={"Retry-After": header})
    with pytest.raises(RateLimited) as caught:
        client.get_profile(access_token=SECRET)
    assert caught.value.retry_after == expected
    usage = json.dumps({"1": [{"estimated_time_to_regain_access": 10**9}]})  # Meta's minutes: 1,900 years
    client = stub("instagram", 400, ig_error(4), headers={"X-Business-Use-Case-Usage": usage})
    with pytest.raises(RateLimited) as caught:
        client.get_profile(access_token=SECRET)
    assert caught.value.retry_after is None


def test_instagram_tokens_never_reach_the_logs_even_with_httpx_turned_up_to_debug(db, caplog):
    # The Graph API takes the token in the query string and httpx logs every URL at INFO: ops turning httpx
    # up to debug platform calls must not get live tokens in their logs.
    import logging

    for name in ("httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    tokens = connect("instagram", "quiet.logs")
    client = get_client("instagram")
    client.get_profile(access_token=tokens.access_token)
    result = publish("instagram", tokens, media_type="image")
    status("instagram", tokens, result.publish_id)

    assert "HTTP Request: GET" in caplog.text and "access_token=[redacted]" in caplog.text
    assert tokens.access_token not in caplog.text
