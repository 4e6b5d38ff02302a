"""Publishing end to end through the real clients and the sandbox: every mode × platform × media type,
failures with their codes, reauth, revoke, metrics."""

import json
import time

import httpx
import pytest
import time_machine
from django.test import Client

from accounts import services as account_services
from accounts.models import Event, SocialAccount
from scheduling import services
from scheduling.models import Layer, ManagedProvider, ScheduledPost
from tests.accounts.oauth_helpers import connected_account, reauthorize
from tests.platform_helpers import intercepted
from tests.receivers import receiver
from tests.scheduling.publish_helpers import (
    later,
    managed_provider,
    post,
    run_dispatcher,
    sandbox_posts,
    schedule_now,
    sent_then_processing,
)

pytestmark = pytest.mark.django_db(transaction=True)


def sandbox_control(platform, action, body):
    response = Client().post(f"/sandbox/{platform}/_control/{action}", body, content_type="application/json")
    assert response.status_code < 300, response.content


@pytest.mark.parametrize("media_type", ["video", "image", "carousel"])
@pytest.mark.parametrize("platform", ["tiktok", "instagram"])
def test_publish_mode_posts_once_with_an_external_url(owner, platform, media_type):
    account = connected_account(owner, platform, f"pub.{media_type}")
    scheduled = schedule_now(owner, account["id"], media_type=media_type, caption=f"{media_type} caption")

    run_dispatcher()

    body = post(owner, scheduled["id"])
    assert body["status"] == "published", body
    assert body["attempts"] == 1 and body["error"] is None and body["publishedAt"].endswith("Z")
    received = sandbox_posts(platform, f"pub.{media_type}")
    assert len(received) == 1
    assert received[0].kind == "post" and received[0].caption == f"{media_type} caption"
    assert body["externalId"] == received[0].external_id
    if platform == "tiktok":
        assert body["externalUrl"] == f"https://www.tiktok.com/@pub.{media_type}/video/{received[0].external_id}"
    else:
        assert body["externalUrl"] == received[0].permalink and body["externalUrl"].startswith("https://")
    assert Event.objects.filter(type="scheduled_post.published").count() == 1
    run_dispatcher()  # nothing is published twice by a later tick
    assert len(sandbox_posts(platform, f"pub.{media_type}")) == 1


@pytest.mark.parametrize("media_type", ["video", "image", "carousel"])
@pytest.mark.parametrize("platform", ["tiktok", "instagram"])
def test_draft_mode_goes_to_the_creator_not_the_feed(owner, platform, media_type):
    account = connected_account(owner, platform, f"draft.{media_type}")
    scheduled = schedule_now(owner, account["id"], mode="draft", media_type=media_type)

    run_dispatcher()

    body = post(owner, scheduled["id"])
    assert body["status"] == "published", body
    received = sandbox_posts(platform, f"draft.{media_type}")
    assert len(received) == 1
    assert received[0].kind == ("draft" if platform == "tiktok" else "delivery")
    assert body["externalUrl"] is None  # nothing public until the creator posts it


@pytest.mark.parametrize("platform", ["tiktok", "instagram"])
def test_managed_mode_is_a_signed_idempotent_post_to_the_provider(owner, platform):
    import hashlib
    import hmac

    account = connected_account(owner, platform, "managed.one")
    with receiver(lambda r: (200, {"id": "mp-77", "url": "https://boost.test/p/77"}, {})) as (url, received):
        provider = ManagedProvider(project=owner.project, name="Boost", endpoint_url=f"{url}/dispatch")
        from accounts import crypto

        provider.secret_enc = crypto.encrypt("provider-shared-secret")
        provider.save()
        scheduled = schedule_now(owner, account["id"], mode="managed", media_type="image")
        run_dispatcher()

    body = post(owner, scheduled["id"])
    assert body["status"] == "published"
    assert (body["externalId"], body["externalUrl"]) == ("mp-77", "https://boost.test/p/77")
    assert len(received) == 1
    request = received[0]
    assert request["headers"]["Idempotency-Key"] == scheduled["id"]
    payload = json.loads(request["body"])
    assert payload["scheduledPostId"] == scheduled["id"] and payload["platform"] == platform
    # Verify the signature independently of our signing code.
    parts = dict(p.split("=", 1) for p in request["headers"]["Layers-Signature"].split(","))
    expected = hmac.new(b"provider-shared-secret", f"{parts['t']}.".encode() + request["body"], hashlib.sha256)
    assert parts["v1"] == expected.hexdigest()
    assert sandbox_posts(platform, "managed.one") == []  # the provider distributes, not us


def test_managed_provider_errors_retry_then_reject(owner):
    account = connected_account(owner, "tiktok", "managed.two")
    answers = iter([(503, {}, {}), (400, {"error": "bad"}, {})])
    with receiver(lambda r: next(answers)) as (url, received):
        managed_provider(project=owner.project, name="Boost", endpoint_url=url)
        scheduled = schedule_now(owner, account["id"], mode="managed")
        run_dispatcher()
        assert post(owner, scheduled["id"])["status"] == "queued"  # 503: retried with backoff
        with time_machine.travel(later(minutes=5)):
            run_dispatcher()
    body = post(owner, scheduled["id"])
    assert body["status"] == "failed" and body["error"]["code"] == "PLATFORM_REJECTED"
    assert len(received) == 2


def test_a_post_due_later_waits_for_its_time(owner):
    account = connected_account(owner, "tiktok", "patient")
    scheduled = schedule_now(owner, account["id"], when=later(hours=2))
    run_dispatcher()
    assert post(owner, scheduled["id"])["status"] == "queued"
    with time_machine.travel(later(hours=2, seconds=1)):
        run_dispatcher()
    assert post(owner, scheduled["id"])["status"] == "published"


def test_content_refusal_fails_with_platform_rejected(owner):
    account = connected_account(owner, "tiktok", "refused")
    sandbox_control("tiktok", "faults", {"username": "refused", "kind": "reject", "count": 5})
    scheduled = schedule_now(owner, account["id"])
    run_dispatcher()
    body = post(owner, scheduled["id"])
    assert body["status"] == "failed" and body["error"]["code"] == "PLATFORM_REJECTED", body
    assert Event.objects.filter(type="scheduled_post.failed").count() == 1


REFUSED = "The platform refused the post: "
SAID = "tiktok invalid_params: "  # the client's start of a TikTok refusal: its code


def refusing_the_post_with(monkeypatch, message: str) -> None:
    """The sandbox's TikTok refuses every post init with `message`, as TikTok refuses a parameter."""
    from accounts.platforms.sandbox import tiktok_views

    def refuse(source_info, *, photos):
        raise tiktok_views.Answer(tiktok_views.envelope(code="invalid_params", message=message, status=400))

    monkeypatch.setattr(tiktok_views, "_source_urls", refuse)


@pytest.mark.parametrize(
    "message, kept",
    [
        # A platform cutting its text by UTF-16 units leaves half of a surrogate pair (an emoji) behind.
        ("title refused: \ud83d", "title refused: \ufffd"),
        ("title refused: a\x00b", "title refused: a\ufffdb"),
        ("title refused: \udc00\ud800 low then high", "title refused: \ufffd\ufffd low then high"),
    ],
)
def test_a_refusal_whose_message_postgresql_cannot_store_fails_the_post_at_once_with_the_platforms_words(
    owner, monkeypatch, message, kept
):
    """Storing the refusal raised (UnicodeEncodeError, or psycopg's DataError for the NUL): the post stayed
    `publishing`, and 5 minutes later the resolver failed it PLATFORM_UNAVAILABLE "outcome unknown", the
    platform's words lost. What cannot be stored is now U+FFFD."""
    account = connected_account(owner, "tiktok", "oddrefusal")
    refusing_the_post_with(monkeypatch, message)
    scheduled = schedule_now(owner, account["id"])
    run_dispatcher()

    body = post(owner, scheduled["id"])
    assert body["status"] == "failed" and body["error"]["code"] == "PLATFORM_REJECTED", body
    assert body["error"]["message"] == f"{REFUSED}{SAID}{kept}"
    with time_machine.travel(later(minutes=6)):
        run_dispatcher()
    assert post(owner, scheduled["id"])["error"] == body["error"]
    assert Event.objects.get(type="scheduled_post.failed").data["error"] == body["error"]


FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # one grapheme of 5 code points
FLAG = "\U0001f1eb\U0001f1f7"  # 🇫🇷: two regional indicators
THUMBS = "\U0001f44d\U0001f3fd"  # 👍🏽: an emoji and its skin tone
E_ACUTE = "e\u0301"  # é in NFD: a letter and its combining mark
HEART = "\u2764\ufe0f"  # ❤️: a character and its emoji variation selector
HANGUL = "\u1112\u1161\u11ab"  # 한 in NFD: three conjoining jamo


# The platform's words (TikTok's code, then the message) are kept to 300 characters, "…" included: 6 - shift
# of the graphemes' code points fit, and each case below ends them inside a grapheme (more cases:
# tests/config/test_text.py).
@pytest.mark.parametrize(
    "grapheme, shift",
    [(FAMILY, 0), (FAMILY, 2), (FLAG, 1), (THUMBS, 1), (E_ACUTE, 1), (HEART, 1), (HANGUL, 1)],
)
def test_a_long_refusal_is_cut_between_characters_as_the_partner_sees_them(owner, monkeypatch, grapheme, shift):
    """The refusal was cut to 300 code points wherever they fell: a family emoji ended as "👨\u200d", a flag as
    a lone regional indicator, an accent lost its letter, in the API's error.message and the webhook alike.
    It is now cut before the character it would split, and says so with "…"."""
    account = connected_account(owner, "tiktok", "longrefusal")
    message = "x" * (270 + shift) + grapheme * 20
    refusing_the_post_with(monkeypatch, message)
    scheduled = schedule_now(owner, account["id"])
    run_dispatcher()

    shown = post(owner, scheduled["id"])["error"]["message"]
    words = shown.removeprefix(REFUSED)
    assert words.endswith("…") and len(words) <= 300, shown
    kept = words.removeprefix(SAID).removesuffix("…")
    assert message.startswith(kept)
    assert kept.removeprefix("x" * (270 + shift)) == grapheme * kept.count(grapheme[0])
    assert Event.objects.get(type="scheduled_post.failed").data["error"]["message"] == shown


@pytest.mark.parametrize("platform", ["tiktok", "instagram"])
def test_broken_media_fails_with_media_invalid(owner, platform):
    account = connected_account(owner, platform, "badmedia")
    scheduled = schedule_now(owner, account["id"], media_urls=["https://cdn.acme.test/invalid/clip.mp4"])
    run_dispatcher()
    body = post(owner, scheduled["id"])
    assert body["status"] == "failed" and body["error"]["code"] == "MEDIA_INVALID", body


@pytest.mark.parametrize("kind, code", [("rate_limited", "RATE_LIMITED"), ("server_error", "PLATFORM_UNAVAILABLE")])
def test_transient_errors_retry_with_backoff_then_fail(owner, kind, code):
    account = connected_account(owner, "instagram", f"transient.{kind}")
    sandbox_control("instagram", "faults", {"username": f"transient.{kind}", "kind": kind, "count": 50})
    scheduled = schedule_now(owner, account["id"])
    # Tried again 30 s, 1, 2 and 4 minutes after each refusal, then every 5 minutes, for the post's retry
    # window (LAYERS_PUBLISH_RETRY_WINDOW, an hour from its time).
    for attempt, minutes in enumerate(range(0, 55, 5), start=1):
        with time_machine.travel(later(minutes=minutes)):
            run_dispatcher()
        body = post(owner, scheduled["id"])
        assert body["attempts"] == attempt
        # Waiting to retry: not a failure (yet), whatever the last error.
        assert body["status"] == "queued" and body["error"] is None, body
    with time_machine.travel(later(minutes=56)):
        run_dispatcher()  # the next try, 5 minutes later, would be past the window
    body = post(owner, scheduled["id"])
    assert body["status"] == "failed" and body["error"]["code"] == code
    assert body["attempts"] == 12 and body["error"]["message"].startswith(
        "Gave up after 12 attempts over 56 minutes (retry window: 60 minutes): instagram "
    ), body
    assert sandbox_posts("instagram", f"transient.{kind}") == []


@pytest.mark.parametrize(
    "limit",
    [
        {"data": {"quota_usage": 1}},
        {"data": [{"quota_usage": "1.0", "config": {"quota_total": 100}}]},
        {"data": ["quota"]},
        {"data": [{"quota_usage": 1, "config": "100"}]},
        b'{"data": [{"quota_usage": 1, "config": {"quota_total": 1e400}}]}',  # read as float("inf")
    ],
    ids=["object", "usage-as-decimal-string", "item-not-object", "config-not-object", "infinite-total"],
)
def test_an_unreadable_instagram_quota_answer_does_not_stop_the_post(owner, limit):
    """The quota read before the containers is advisory (media_publish is refused past the quota anyway, and
    that refusal is retried): an answer it cannot read is passed over. It raised ValueError, AttributeError or
    OverflowError instead: the worker's run "raised", and after 5 the post failed "Gave up after 5 runs that each
    stopped (the worker died or raised)", blaming Layers' workers, for every Instagram post while Meta sent it."""
    account = connected_account(owner, "instagram", "shape.quota")
    scheduled = schedule_now(owner, account["id"], media_type="image")

    content = limit if isinstance(limit, bytes) else json.dumps(limit).encode()
    answer = httpx.Response(200, content=content, headers={"Content-Type": "application/json"})
    with intercepted({"/content_publishing_limit": lambda request, sandbox: answer}):
        run_dispatcher()

    body = post(owner, scheduled["id"])
    assert body["status"] == "published", body
    assert len(sandbox_posts("instagram", "shape.quota")) == 1


def test_an_unreadable_tiktok_creator_info_is_retried_not_blamed_on_a_dead_worker(owner):
    """privacy_level_options as a number raised a TypeError before the init: the post failed after 5 runs "the
    worker died or raised". Nothing is created before the init: it is retried, and published once TikTok
    answers readably."""
    account = connected_account(owner, "tiktok", "shape.creator")
    scheduled = schedule_now(owner, account["id"])

    def creator(request, sandbox):
        real = sandbox.handle_request(request)
        real.read()
        body = json.loads(real.content)
        body["data"]["privacy_level_options"] = 3
        return httpx.Response(200, json=body)

    with intercepted({"/creator_info/query/": creator}):
        run_dispatcher()
    body = post(owner, scheduled["id"])
    assert body["status"] == "queued", body
    assert sandbox_posts("tiktok", "shape.creator") == []

    with time_machine.travel(later(minutes=5)):
        run_dispatcher()
    body = post(owner, scheduled["id"])
    assert body["status"] == "published" and body["attempts"] == 2, body
    assert len(sandbox_posts("tiktok", "shape.creator")) == 1


def test_a_transient_error_then_success_publishes_once(owner):
    account = connected_account(owner, "tiktok", "recovers")
    sandbox_control("tiktok", "faults", {"username": "recovers", "kind": "server_error", "count": 1})
    scheduled = schedule_now(owner, account["id"])
    run_dispatcher()
    assert post(owner, scheduled["id"])["status"] == "queued"
    with time_machine.travel(later(minutes=2)):
        run_dispatcher()
    assert post(owner, scheduled["id"])["status"] == "published"
    assert len(sandbox_posts("tiktok", "recovers")) == 1


def test_a_tiktok_timeout_on_the_post_call_is_not_retried_blindly(owner):
    account = connected_account(owner, "tiktok", "silent")
    scheduled = schedule_now(owner, account["id"])
    from unittest import mock

    from accounts.platforms.base import PlatformUnavailable
    from accounts.platforms.tiktok import TikTokClient

    def init_times_out(**kwargs):
        kwargs["before_create"]()  # the init request went out...
        raise PlatformUnavailable("tiktok: ReadTimeout")  # ...and no answer came back

    with mock.patch.object(TikTokClient, "publish", side_effect=init_times_out):
        run_dispatcher()
    body = post(owner, scheduled["id"])
    assert body["status"] == "failed" and body["error"]["code"] == "PLATFORM_UNAVAILABLE"
    with time_machine.travel(later(minutes=10)):
        run_dispatcher()
    assert post(owner, scheduled["id"])["status"] == "failed"


def test_a_timeout_before_the_post_call_is_retried_and_publishes_once(owner):
    account = connected_account(owner, "tiktok", "slowinfo")
    scheduled = schedule_now(owner, account["id"])
    sandbox_control("tiktok", "faults", {"username": "slowinfo", "kind": "timeout", "count": 1})  # creator_info

    run_dispatcher()
    assert post(owner, scheduled["id"])["status"] == "queued"
    with time_machine.travel(later(minutes=2)):
        run_dispatcher()

    assert post(owner, scheduled["id"])["status"] == "published"
    assert len(sandbox_posts("tiktok", "slowinfo")) == 1


def accepted_but_unreadable(status: int, mangle):
    """The platform takes the request (the sandbox records the post), but its first answer reaches us
    garbled: `status` with `mangle(real body)`. Later answers pass unchanged."""
    calls = {"n": 0}

    def answer(request, sandbox):
        real = sandbox.handle_request(request)
        real.read()
        calls["n"] += 1
        if calls["n"] > 1:
            return httpx.Response(real.status_code, content=real.content, headers={"Content-Type": "application/json"})
        return httpx.Response(status, content=mangle(real.content), headers={"Content-Type": "application/json"})

    return answer


UNREADABLE_ANSWERS = pytest.mark.parametrize(
    "status, mangle",
    [
        (200, lambda body: body[: len(body) // 2]),
        (200, lambda body: b"<html><body>OK</body></html>"),
        (502, lambda body: b"<html><body>502 Bad Gateway</body></html>"),
        (504, lambda body: b"<html><body>504 Gateway Time-out</body></html>"),
        (500, lambda body: b""),
    ],
    ids=["truncated-200", "html-200", "gateway-502", "gateway-504", "empty-500"],
)


@UNREADABLE_ANSWERS
def test_an_accepted_tiktok_init_with_an_unreadable_answer_is_never_posted_again(owner, status, mangle):
    account = connected_account(owner, "tiktok", "garbled")
    scheduled = schedule_now(owner, account["id"])

    with intercepted({"/v2/post/publish/video/init/": accepted_but_unreadable(status, mangle)}):
        run_dispatcher()
        for minutes in (2, 5, 15, 40, 90):
            with time_machine.travel(later(minutes=minutes)):
                run_dispatcher()

    body = post(owner, scheduled["id"])
    assert len(sandbox_posts("tiktok", "garbled")) == 1, (body["status"], body["error"])
    # As for an init that timed out: TikTok may have the post, so it is failed, never sent a second time.
    assert body["status"] == "failed" and body["error"]["code"] == "PLATFORM_UNAVAILABLE", body
    assert body["attempts"] == 1


@UNREADABLE_ANSWERS
def test_an_accepted_instagram_draft_delivery_with_an_unreadable_answer_is_never_delivered_again(owner, status, mangle):
    account = connected_account(owner, "instagram", "garbled.draft")
    scheduled = schedule_now(owner, account["id"], mode="draft", media_type="image")

    with intercepted({"/layers_draft_deliveries": accepted_but_unreadable(status, mangle)}):
        run_dispatcher()
        for minutes in (2, 5, 15, 40, 90):
            with time_machine.travel(later(minutes=minutes)):
                run_dispatcher()

    body = post(owner, scheduled["id"])
    assert len(sandbox_posts("instagram", "garbled.draft")) == 1, (body["status"], body["error"])
    assert body["status"] == "failed" and body["error"]["code"] == "PLATFORM_UNAVAILABLE", body


def test_an_accepted_tiktok_init_whose_answer_drips_past_its_deadline_is_never_posted_again(owner, settings):
    settings.LAYERS_PLATFORM_TIMEOUT = 1.0  # each wait below is far shorter; the whole answer would take 30 s
    account = connected_account(owner, "tiktok", "dripping")
    scheduled = schedule_now(owner, account["id"])
    calls = {"n": 0}

    def drip(request, sandbox):
        real = sandbox.handle_request(request)  # TikTok took the post
        real.read()
        calls["n"] += 1
        if calls["n"] > 1:
            return httpx.Response(real.status_code, content=real.content, headers={"Content-Type": "application/json"})
        body = real.content + b" " * 600

        def byte_by_byte():
            for i in range(len(body)):
                time.sleep(0.05)
                yield body[i : i + 1]

        return httpx.Response(200, content=byte_by_byte(), headers={"Content-Type": "application/json"})

    with intercepted({"/v2/post/publish/video/init/": drip}):
        run_dispatcher()
        for minutes in (2, 5, 15):
            with time_machine.travel(later(minutes=minutes)):
                run_dispatcher()

    body = post(owner, scheduled["id"])
    assert len(sandbox_posts("tiktok", "dripping")) == 1, (body["status"], body["error"])
    assert body["status"] == "failed" and body["error"]["code"] == "PLATFORM_UNAVAILABLE", body


def refused_once(status: int, body: dict):
    """The platform refuses the first request with its own typed error (it took nothing), then answers."""
    calls = {"n": 0}

    def answer(request, sandbox):
        calls["n"] += 1
        if calls["n"] == 1:
            return httpx.Response(status, json=body)
        return sandbox.handle_request(request)

    return answer


@pytest.mark.parametrize(
    "status, code",
    [(500, "internal_error"), (429, "rate_limit_exceeded"), (503, "internal_error")],
    ids=["internal-error", "rate-limited", "internal-error-503"],
)
def test_a_tiktok_init_refused_with_a_typed_transient_error_is_retried_and_published_once(owner, status, code):
    account = connected_account(owner, "tiktok", "refused.once")
    scheduled = schedule_now(owner, account["id"])
    envelope = {"data": {}, "error": {"code": code, "message": "please retry", "log_id": "L1"}}

    with intercepted({"/v2/post/publish/video/init/": refused_once(status, envelope)}):
        run_dispatcher()
        assert post(owner, scheduled["id"])["status"] == "queued"
        with time_machine.travel(later(minutes=2)):
            run_dispatcher()

    body = post(owner, scheduled["id"])
    assert body["status"] == "published" and body["attempts"] == 2, body
    assert len(sandbox_posts("tiktok", "refused.once")) == 1


@pytest.mark.parametrize(
    "error", [httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout], ids=["refused", "connect-timeout", "pool"]
)
def test_a_tiktok_init_that_could_not_connect_is_retried_and_published_once(owner, error):
    account = connected_account(owner, "tiktok", "blip")
    scheduled = schedule_now(owner, account["id"])
    failures = {"left": 1}

    def cannot_connect(request, sandbox):
        if failures["left"]:
            failures["left"] -= 1
            raise error("connection refused", request=request)  # nothing was sent: TikTok cannot have it
        return sandbox.handle_request(request)

    with intercepted({"/v2/post/publish/video/init/": cannot_connect}):
        run_dispatcher()
        assert post(owner, scheduled["id"])["status"] == "queued"
        with time_machine.travel(later(minutes=2)):
            run_dispatcher()

    body = post(owner, scheduled["id"])
    assert body["status"] == "published", (body["status"], body["attempts"], body["error"])
    assert body["attempts"] == 2
    assert len(sandbox_posts("tiktok", "blip")) == 1


@pytest.mark.parametrize("error", [httpx.ReadTimeout, httpx.RemoteProtocolError, httpx.ReadError])
def test_a_tiktok_init_sent_and_unanswered_is_not_retried(owner, error):
    account = connected_account(owner, "tiktok", "lost.answer")
    scheduled = schedule_now(owner, account["id"])

    def answer_lost(request, sandbox):
        sandbox.handle_request(request).read()  # TikTok took it; the answer never arrives
        raise error("connection dropped", request=request)

    with intercepted({"/v2/post/publish/video/init/": answer_lost}):
        run_dispatcher()
        with time_machine.travel(later(minutes=10)):
            run_dispatcher()

    body = post(owner, scheduled["id"])
    assert body["status"] == "failed" and body["error"]["code"] == "PLATFORM_UNAVAILABLE", body
    assert len(sandbox_posts("tiktok", "lost.answer")) == 1


def corrupt_gzip(request, sandbox):
    """A broken proxy labels plain bytes as gzip: the body cannot be decoded (httpx.DecodingError)."""
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    return httpx.Response(200, content=b"\x00garbage", headers=headers)


def test_a_post_whose_status_answers_cannot_be_decoded_is_settled_after_a_day_not_left_publishing(owner):
    account = connected_account(owner, "tiktok", "undecodable.status")
    scheduled = schedule_now(owner, account["id"])

    with intercepted({"/v2/post/publish/status/fetch/": corrupt_gzip}):
        run_dispatcher()
        assert post(owner, scheduled["id"])["status"] == "publishing"  # still asking
        for hours in (1, 12, 25):
            with time_machine.travel(later(hours=hours)):
                run_dispatcher()

    body = post(owner, scheduled["id"])
    assert body["status"] == "failed" and body["error"]["code"] == "PLATFORM_UNAVAILABLE", body
    assert len(sandbox_posts("tiktok", "undecodable.status")) == 1


def test_one_accounts_undecodable_metrics_answer_does_not_stop_the_others_sync(owner):
    accounts = [connected_account(owner, "tiktok", name)["id"] for name in ("metrics.ok", "metrics.garbled")]
    for account_id in accounts:
        schedule_now(owner, account_id)
    run_dispatcher()
    calls = {"n": 0}

    def first_one_garbled(request, sandbox):
        calls["n"] += 1
        return corrupt_gzip(request, sandbox) if calls["n"] == 1 else sandbox.handle_request(request)

    with intercepted({"/v2/video/query/": first_one_garbled}), time_machine.travel(later(hours=2)):
        assert services.posts_sync_metrics() == 1
    assert calls["n"] == 2
    assert ScheduledPost.objects.filter(metrics_synced_at__isnull=False).count() == 1


def test_dead_token_at_publish_fails_with_credential_invalid_and_flips_the_account(owner):
    account = connected_account(owner, "tiktok", "expired.creds")
    scheduled = schedule_now(owner, account["id"])
    sandbox_control("tiktok", "invalidate-tokens", {"username": "expired.creds"})

    run_dispatcher()

    body = post(owner, scheduled["id"])
    assert body["status"] == "failed" and body["error"]["code"] == "CREDENTIAL_INVALID"
    assert SocialAccount.objects.get(pk=account["id"]).status == "reauth_required"
    assert Event.objects.filter(type="social_account.needs_reauth").count() == 1


# --- An expired TikTok access token is refreshed, not reported as dead ----------------------------------
# TikTok's access token lives 24 h, its refresh token 365 d. The health check renews the access token 6 h
# ahead; when it has fallen behind (workers or TikTok down longer than that), the token is still refreshable,
# and API.md keeps reauth_required for a token "rejected or cannot be refreshed".


def test_a_post_on_an_expired_tiktok_token_refreshes_it_and_publishes_without_a_reauth(owner):
    account = connected_account(owner, "tiktok", "lateposter")
    with time_machine.travel(later(hours=25), tick=True):
        scheduled = schedule_now(owner, account["id"])
        run_dispatcher()
        body = post(owner, scheduled["id"])
    row = SocialAccount.objects.get(pk=account["id"])
    assert body["status"] == "published", body
    assert row.status == "connected" and row.token_version == 2  # refreshed once, the new token stored
    assert len(sandbox_posts("tiktok", "lateposter")) == 1
    assert not Event.objects.filter(type="social_account.needs_reauth").exists()
    # The refresh token it stored is the live one (TikTok rotated it): the next refresh works.
    assert account_services.social_account_refresh_token(account_id=account["id"]) == "refreshed"


def test_a_post_on_an_expired_token_whose_refresh_token_is_dead_too_fails_and_asks_for_a_reauth(owner):
    account = connected_account(owner, "tiktok", "longgone")
    with time_machine.travel(later(days=366), tick=True):
        scheduled = schedule_now(owner, account["id"])
        run_dispatcher()
        body = post(owner, scheduled["id"])
    assert body["status"] == "failed" and body["error"]["code"] == "CREDENTIAL_INVALID", body
    assert SocialAccount.objects.get(pk=account["id"]).status == "reauth_required"
    assert Event.objects.filter(type="social_account.needs_reauth").count() == 1
    assert sandbox_posts("tiktok", "longgone") == []


def test_a_post_on_an_expired_token_waits_out_a_refresh_outage_instead_of_asking_for_a_reauth(owner):
    from tests.platform_helpers import inject_fault

    account = connected_account(owner, "tiktok", "patient")
    with time_machine.travel(later(hours=25), tick=True):
        scheduled = schedule_now(owner, account["id"])
        inject_fault("tiktok", "patient", "server_error", count=1)  # the refresh fails once
        run_dispatcher()
        body = post(owner, scheduled["id"])
        assert body["status"] == "queued", body  # tried again after a backoff
        assert SocialAccount.objects.get(pk=account["id"]).status == "connected"
    with time_machine.travel(later(hours=25, minutes=2), tick=True):
        run_dispatcher()
        body = post(owner, scheduled["id"])
    assert body["status"] == "published", body
    assert not Event.objects.filter(type="social_account.needs_reauth").exists()


def test_a_status_poll_after_the_token_expired_refreshes_it_and_settles_the_post(owner):
    account = connected_account(owner, "tiktok", "slowpoll")
    post_id = sent_then_processing(owner, account["id"])
    with time_machine.travel(later(hours=23, minutes=59), tick=True):
        # The health check did not run meanwhile; the access token is a day old when the poll comes.
        SocialAccount.objects.filter(pk=account["id"]).update(token_expires_at=later(minutes=-1))
        run_dispatcher()
        body = post(owner, post_id)
    assert body["status"] == "published", body
    row = SocialAccount.objects.get(pk=account["id"])
    assert row.status == "connected" and row.token_version == 2
    assert not Event.objects.filter(type="social_account.needs_reauth").exists()


def test_the_metrics_sync_after_the_token_expired_refreshes_it_and_reads_the_metrics(owner):
    account = connected_account(owner, "tiktok", "metrics.late")
    schedule_now(owner, account["id"])
    run_dispatcher()
    with time_machine.travel(later(hours=25), tick=True):
        assert services.posts_sync_metrics() == 1
    row = SocialAccount.objects.get(pk=account["id"])
    assert row.status == "connected" and row.token_version == 2
    assert not Event.objects.filter(type="social_account.needs_reauth").exists()


def test_a_post_rejected_on_a_token_being_refreshed_meanwhile_is_retried_and_the_refresh_is_kept(owner):
    """The health check is refreshing the expired token (TikTok has answered, the new tokens are not stored
    yet) when a post goes out on the old one and TikTok refuses it. The refusal is about the old token: the
    account must not be flipped, and the refresh's new tokens (TikTok has already rotated the refresh token)
    must not be thrown away."""
    import threading
    from unittest import mock

    from accounts.platforms.tiktok import TikTokClient
    from tests.concurrency import run_in_threads

    account = connected_account(owner, "tiktok", "midrefresh")
    reached, go = threading.Event(), threading.Event()
    original = TikTokClient.refresh

    def slow_refresh(self, *, tokens):
        result = original(self, tokens=tokens)
        reached.set()
        go.wait(20)
        return result

    def publish():
        reached.wait(20)
        try:
            run_dispatcher()
        finally:
            go.set()

    with time_machine.travel(later(hours=25), tick=True):
        scheduled = schedule_now(owner, account["id"])
        with mock.patch.object(TikTokClient, "refresh", slow_refresh):
            outcomes = run_in_threads(
                lambda: account_services.social_account_check_health(account_id=account["id"]), publish
            )
        assert outcomes[0] == "refreshed"
        row = SocialAccount.objects.get(pk=account["id"])
        assert row.status == "connected" and row.token_version == 2
        assert post(owner, scheduled["id"])["status"] == "queued"  # tried again shortly, on the new token
    with time_machine.travel(later(hours=25, minutes=2), tick=True):
        run_dispatcher()
    assert post(owner, scheduled["id"])["status"] == "published"
    assert not Event.objects.filter(type="social_account.needs_reauth").exists()
    assert account_services.social_account_refresh_token(account_id=account["id"]) == "refreshed"


def test_queued_post_of_a_reauth_required_account_fails_at_its_time(owner):
    account = connected_account(owner, "instagram", "lapsed")
    scheduled = schedule_now(owner, account["id"], when=later(hours=1))
    sandbox_control("instagram", "invalidate-tokens", {"username": "lapsed"})
    account_services.social_account_check_health(account_id=account["id"])
    assert post(owner, scheduled["id"])["status"] == "queued"  # not canceled by the status change

    with time_machine.travel(later(hours=1, seconds=1)):
        run_dispatcher()

    body = post(owner, scheduled["id"])
    assert body["status"] == "failed" and body["error"]["code"] == "CREDENTIAL_INVALID"
    assert sandbox_posts("instagram", "lapsed") == []


def test_queued_post_publishes_on_the_new_token_after_a_reauth_in_time(owner):
    account = connected_account(owner, "tiktok", "renewed")
    scheduled = schedule_now(owner, account["id"], when=later(hours=1))
    sandbox_control("tiktok", "invalidate-tokens", {"username": "renewed"})
    account_services.social_account_check_health(account_id=account["id"])
    reauthorize(owner, account["id"], "tiktok", "renewed")

    with time_machine.travel(later(hours=1, seconds=1)):
        run_dispatcher()

    assert post(owner, scheduled["id"])["status"] == "published"
    assert len(sandbox_posts("tiktok", "renewed")) == 1


def test_revoke_cancels_queued_posts_and_answers_the_count(owner):
    account = connected_account(owner, "tiktok", "revoker")
    other = connected_account(owner, "tiktok", "stays")
    published = schedule_now(owner, account["id"])
    run_dispatcher()
    queued = [schedule_now(owner, account["id"], when=later(hours=h)) for h in (1, 2, 3)]
    kept = schedule_now(owner, other["id"], when=later(hours=1))

    response = owner.client.delete(f"/v1/social-accounts/{account['id']}")

    assert response.json()["canceledScheduledPosts"] == 3
    assert all(post(owner, q["id"])["status"] == "canceled" for q in queued)
    assert post(owner, kept["id"])["status"] == "queued"
    assert post(owner, published["id"])["status"] == "published"
    assert owner.client.delete(f"/v1/social-accounts/{account['id']}").json()["canceledScheduledPosts"] == 0


def test_revoked_accounts_posts_stay_listed_without_further_metric_syncs(owner):
    account = connected_account(owner, "tiktok", "historic")
    scheduled = schedule_now(owner, account["id"])
    run_dispatcher()
    assert services.posts_sync_metrics() == 1
    synced = owner.client.get(f"/v1/projects/{owner.project.id}/posts").json()["data"][0]
    assert synced["id"] == scheduled["id"] and synced["metrics"]["syncedAt"] is not None
    assert synced["externalUrl"].startswith("https://www.tiktok.com/@historic/video/")

    owner.client.delete(f"/v1/social-accounts/{account['id']}")
    with time_machine.travel(later(hours=3)):
        assert services.posts_sync_metrics() == 0
        listed = owner.client.get(f"/v1/projects/{owner.project.id}/posts").json()["data"]
    assert [p["id"] for p in listed] == [scheduled["id"]]
    assert listed[0]["metrics"] == synced["metrics"]


@pytest.mark.parametrize("platform", ["tiktok", "instagram"])
def test_metrics_sync_refreshes_published_posts_of_accounts_with_layers(owner, platform):
    account = connected_account(owner, platform, "metrics.fan")
    ids = [schedule_now(owner, account["id"], caption=f"post {i}")["id"] for i in range(3)]
    run_dispatcher()
    with time_machine.travel(later(hours=2)):
        assert services.posts_sync_metrics() == 3
        data = owner.client.get(f"/v1/projects/{owner.project.id}/posts").json()["data"]
    assert sorted(p["id"] for p in data) == sorted(ids)
    assert all(p["metrics"]["views"] is not None and p["metrics"]["syncedAt"] for p in data)
    assert services.posts_sync_metrics() == 0  # fresh metrics are not fetched again


def test_posts_the_platform_no_longer_returns_do_not_starve_the_metrics_of_others(owner):
    first, second = sorted(connected_account(owner, "tiktok", name)["id"] for name in ("gone.a", "live.b"))
    live = schedule_now(owner, second)
    run_dispatcher()
    template = ScheduledPost.objects.get(pk=live["id"])
    # 30 published posts of the other account that TikTok no longer returns (deleted by their creator)
    fields = {f: getattr(template, f) for f in ("organization_id", "project_id", "container_id", "mode")}
    ScheduledPost.objects.bulk_create(
        ScheduledPost(
            **fields,
            social_account_id=first,
            status="published",
            scheduled_for=template.scheduled_for,
            due_at=template.due_at,
            published_at=template.published_at,
            external_id=str(9_000_000_000 + i),
        )
        for i in range(30)
    )

    # A run takes 20 posts, the deleted ones first (their account sorts first): none answered.
    assert services.posts_sync_metrics(limit=20) == 0
    # The next run does not take the same 20 again: the live post gets its metrics.
    assert services.posts_sync_metrics(limit=20) == 1
    assert ScheduledPost.objects.get(pk=live["id"]).metrics_synced_at is not None
    # and the unanswered posts are asked again only once their hour is over
    assert services.posts_sync_metrics(limit=20) == 0
    assert ScheduledPost.objects.filter(metrics_attempted_at__isnull=True).count() == 0
    an_hour_on = later(hours=1)
    with time_machine.travel(later(hours=2)):
        assert services.posts_sync_metrics(limit=100) == 1
    assert ScheduledPost.objects.filter(metrics_attempted_at__gt=an_hour_on).count() == 31


def test_accounts_without_layers_are_skipped_by_sync_and_provisioned_before_publishing(owner):
    account = connected_account(owner, "tiktok", "layerless")
    Layer.objects.filter(social_account_id=account["id"]).delete()
    scheduled = schedule_now(owner, account["id"])

    run_dispatcher()

    assert post(owner, scheduled["id"])["status"] == "published"
    assert Layer.objects.filter(social_account_id=account["id"]).count() == 4
    Layer.objects.filter(social_account_id=account["id"]).delete()
    assert services.posts_sync_metrics() == 0


def test_stuck_publishing_post_with_a_publish_id_is_resolved_by_asking_the_platform(owner):
    account = connected_account(owner, "instagram", "stuck.ig")
    scheduled = schedule_now(owner, account["id"])
    # A worker got the container id stored, then died before media_publish / recording the outcome.
    assert services.posts_claim_due() == [scheduled["id"]]
    from accounts.platforms.base import MediaItem
    from accounts.platforms.clients import get_client

    row = SocialAccount.objects.get(pk=account["id"])
    result = get_client("instagram").publish(
        access_token=row.access_token,
        platform_user_id=row.identity.platform_user_id,
        mode="publish",
        media_type="video",
        media=[MediaItem(url="https://cdn.acme.test/clip.mp4", kind="video")],
        caption="Launch day",
    )
    ScheduledPost.objects.filter(pk=scheduled["id"]).update(publish_id=result.publish_id, publish_attempted_at=later())

    with time_machine.travel(later(minutes=6)):  # the dead worker's lease ran out
        run_dispatcher()
        run_dispatcher()

    assert post(owner, scheduled["id"])["status"] == "published"
    assert len(sandbox_posts("instagram", "stuck.ig")) == 1


def test_a_post_processing_when_its_account_is_revoked_fails_as_disconnected_not_as_a_dead_token(owner):
    account = connected_account(owner, "tiktok", "midway")
    post_id = sent_then_processing(owner, account["id"])

    owner.client.delete(f"/v1/social-accounts/{account['id']}")
    with time_machine.travel(later(minutes=10)):
        services.post_resolve(post_id=post_id)

    body = post(owner, post_id)
    # CREDENTIAL_INVALID would tell the partner to reauth an account they have just disconnected.
    assert body["status"] == "failed" and body["error"]["code"] == "ACCOUNT_DISCONNECTED"


def test_a_post_processing_when_its_lease_is_released_is_settled_with_the_pools_token(owner):
    from leasing import services as leasing
    from tests.leasing.helpers import add_pool, get_request, request_accounts

    add_pool(1)
    accepted = request_accounts(owner, 1)
    leasing.lease_assign(request_id=accepted["requestId"], auto=True)
    account_id = get_request(owner, accepted["requestId"])["socialAccountIds"][0]
    post_id = sent_then_processing(owner, account_id)

    assert owner.client.delete(f"/v1/leased-accounts/{account_id}").status_code == 200
    with time_machine.travel(later(minutes=10)):
        services.post_resolve(post_id=post_id)

    # TikTok published it (it had it before the release): the partner hears that, not a false failure.
    assert post(owner, post_id)["status"] == "published"
    assert not Event.objects.filter(type="scheduled_post.failed").exists()


# Revoking a binding keeps the app's grant while another live holder of the same platform user needs it
# (accounts.services.platform_user_holders): the platform then goes on with a post it had before the revoke.


def _held_in_another_project(owner, sibling, platform: str) -> str:
    connected_account(owner, platform, "kept.grant", project=owner.projects[1])
    return "kept.grant"


def _held_in_another_organization(owner, sibling, platform: str) -> str:
    connected_account(sibling, platform, "kept.grant")
    return "kept.grant"


def _held_by_the_pool(owner, sibling, platform: str) -> str:
    from leasing.models import PoolAccount
    from tests.leasing.helpers import add_pool

    (pool_id,) = add_pool(1)
    return PoolAccount.objects.get(pk=pool_id).handle


@pytest.mark.parametrize(
    "held_elsewhere",
    [_held_in_another_project, _held_in_another_organization, _held_by_the_pool],
    ids=["another project", "another organization", "the pool"],
)
def test_a_post_processing_when_its_account_is_revoked_while_the_grant_is_kept_is_settled_as_published(
    owner, sibling, held_elsewhere
):
    handle = held_elsewhere(owner, sibling, "tiktok")
    account = connected_account(owner, "tiktok", handle)
    post_id = sent_then_processing(owner, account["id"])

    assert owner.client.delete(f"/v1/social-accounts/{account['id']}").status_code == 200  # grant kept
    with time_machine.travel(later(minutes=10)):
        services.post_resolve(post_id=post_id)

    # TikTok published it: told "failed", the partner would schedule it again (a second copy on the profile).
    body = post(owner, post_id)
    assert body["status"] == "published", (body["status"], body["error"])
    assert body["externalId"] == sandbox_posts("tiktok", handle)[0].external_id
    assert not Event.objects.filter(type="scheduled_post.failed").exists()


def test_a_post_processing_when_the_revoke_withdrew_the_grant_still_fails_as_disconnected(owner):
    account = connected_account(owner, "tiktok", "last.holder")
    other = connected_account(owner, "tiktok", "last.holder", project=owner.projects[1])
    post_id = sent_then_processing(owner, account["id"])

    owner.client.delete(f"/v1/social-accounts/{account['id']}")  # kept: the other project holds the user
    owner.client.delete(f"/v1/social-accounts/{other['id']}")  # its last holder: the grant is withdrawn
    with time_machine.travel(later(minutes=10)):
        services.post_resolve(post_id=post_id)

    body = post(owner, post_id)
    assert body["status"] == "failed" and body["error"]["code"] == "ACCOUNT_DISCONNECTED", body


def _kept_by_another_project_whose_token_expired(owner, sibling) -> tuple[str, object]:
    holder = connected_account(owner, "tiktok", "kept.expired", project=owner.projects[1])
    # Its health check fell behind (workers or TikTok down longer than its margin): the token has expired.
    SocialAccount.objects.filter(pk=holder["id"]).update(token_expires_at=later(minutes=-1))
    return "kept.expired", lambda: account_services.social_account_check_health(account_id=holder["id"])


def _kept_by_the_pool_whose_token_expired(owner, sibling) -> tuple[str, object]:
    from leasing import services as leasing
    from leasing.models import PoolAccount
    from tests.leasing.helpers import add_pool

    (pool_id,) = add_pool(1)
    PoolAccount.objects.filter(pk=pool_id).update(token_expires_at=later(minutes=-1))  # its refresh fell behind
    return PoolAccount.objects.get(pk=pool_id).handle, lambda: leasing.pool_account_refresh_due(pool_account_id=pool_id)


@pytest.mark.parametrize(
    "kept_expired",
    [_kept_by_another_project_whose_token_expired, _kept_by_the_pool_whose_token_expired],
    ids=["another project", "the pool"],
)
def test_a_post_processing_when_its_account_is_revoked_while_the_grants_keeper_has_an_expired_token_waits_for_it(
    owner, sibling, kept_expired
):
    # The grant is alive (TikTok goes on with the post), but the one account keeping it holds an expired token
    # for now: "failed ACCOUNT_DISCONNECTED" would have the partner post it a second time.
    handle, renew = kept_expired(owner, sibling)
    account = connected_account(owner, "tiktok", handle)
    post_id = sent_then_processing(owner, account["id"])
    assert owner.client.delete(f"/v1/social-accounts/{account['id']}").status_code == 200  # grant kept

    with time_machine.travel(later(minutes=10)):
        services.post_resolve(post_id=post_id)
        assert post(owner, post_id)["status"] == "publishing"  # asked again later
        assert renew() == "refreshed"  # the keeper's own renewal catches up
    with time_machine.travel(later(minutes=15)):
        services.post_resolve(post_id=post_id)

    body = post(owner, post_id)
    assert body["status"] == "published", (body["status"], body["error"])
    assert body["externalId"] == sandbox_posts("tiktok", handle)[0].external_id
    assert not Event.objects.filter(type="scheduled_post.failed").exists()


def test_a_post_processing_when_the_grant_is_kept_only_by_an_expired_token_nothing_renews_fails_as_disconnected(
    owner,
):
    # A pool account retired by ops keeps its token (the revoke keeps the grant for it), but nothing refreshes a
    # retired account's token: once it has expired, nothing is left that could ask how the post ended.
    from leasing.models import PoolAccount
    from tests.leasing.helpers import add_pool

    (pool_id,) = add_pool(1)
    PoolAccount.objects.filter(pk=pool_id).update(status="retired", token_expires_at=later(minutes=-1))
    handle = PoolAccount.objects.get(pk=pool_id).handle
    account = connected_account(owner, "tiktok", handle)
    post_id = sent_then_processing(owner, account["id"])
    owner.client.delete(f"/v1/social-accounts/{account['id']}")

    with time_machine.travel(later(minutes=10)):
        services.post_resolve(post_id=post_id)

    body = post(owner, post_id)
    assert body["status"] == "failed" and body["error"]["code"] == "ACCOUNT_DISCONNECTED", body


def test_a_post_processing_when_its_lease_is_released_and_leased_again_is_settled_with_the_new_leases_token(
    owner, sibling
):
    from leasing import services as leasing
    from tests.leasing.helpers import add_pool, get_request, request_accounts

    add_pool(1)
    accepted = request_accounts(owner, 1)
    leasing.lease_assign(request_id=accepted["requestId"], auto=True)
    account_id = get_request(owner, accepted["requestId"])["socialAccountIds"][0]
    post_id = sent_then_processing(owner, account_id)
    assert owner.client.delete(f"/v1/leased-accounts/{account_id}").status_code == 200
    # The pool account goes to another partner: its token now lives on their binding, not in the pool.
    again = request_accounts(sibling, 1)
    leasing.lease_assign(request_id=again["requestId"], auto=True)
    assert get_request(sibling, again["requestId"])["socialAccountIds"]

    with time_machine.travel(later(minutes=10)):
        services.post_resolve(post_id=post_id)

    body = post(owner, post_id)
    assert body["status"] == "published", (body["status"], body["error"])


def _instagram_media_publish_answer_lost(owner, account_id: str) -> str:
    """An Instagram post whose media_publish went through but whose answer never came back: still
    `publishing`, its container PUBLISHED."""
    scheduled = schedule_now(owner, account_id)

    def answer_lost(request, sandbox):
        sandbox.handle_request(request).read()  # Instagram published it; the answer never arrives
        raise httpx.ReadTimeout("connection dropped", request=request)

    with intercepted({"/media_publish": answer_lost}):
        run_dispatcher()
    assert post(owner, scheduled["id"])["status"] == "publishing"
    return scheduled["id"]


def test_an_instagram_post_published_when_its_account_is_revoked_while_the_grant_is_kept_is_settled_as_published(
    owner,
):
    account = connected_account(owner, "instagram", "ig.kept")
    connected_account(owner, "instagram", "ig.kept", project=owner.projects[1])
    post_id = _instagram_media_publish_answer_lost(owner, account["id"])

    assert owner.client.delete(f"/v1/social-accounts/{account['id']}").status_code == 200  # grant kept
    with time_machine.travel(later(minutes=10)):
        services.post_resolve(post_id=post_id)

    body = post(owner, post_id)
    assert body["status"] == "published", (body["status"], body["error"])
    assert body["externalId"] == sandbox_posts("instagram", "ig.kept")[0].external_id
    assert not Event.objects.filter(type="scheduled_post.failed").exists()


def _instagram_container_waiting_with_the_grant_kept(owner, handle: str) -> tuple[dict, dict]:
    """An Instagram post whose container waits for media_publish (the creator's 24 h quota was used up when
    it was due), on an account whose user is also connected in another project (so a revoke keeps the grant:
    its token still publishes). Returns (the account, the scheduled post) as the API shows them."""
    account = connected_account(owner, "instagram", handle)
    connected_account(owner, "instagram", handle, project=owner.projects[1])  # keeps the grant
    scheduled = schedule_now(owner, account["id"])
    quota_used_up = {"error": {"message": "limit", "type": "OAuthException", "code": 9, "error_subcode": 2207042}}
    with intercepted({"/media_publish": lambda request, sandbox: httpx.Response(400, json=quota_used_up)}):
        run_dispatcher()
    assert post(owner, scheduled["id"])["status"] == "publishing"  # its container waits for media_publish
    return account, scheduled


def test_an_instagram_container_not_yet_published_when_its_account_is_revoked_is_never_published(owner):
    account, scheduled = _instagram_container_waiting_with_the_grant_kept(owner, "ig.unpublished")

    assert owner.client.delete(f"/v1/social-accounts/{account['id']}").status_code == 200
    with time_machine.travel(later(minutes=10)):
        services.post_resolve(post_id=scheduled["id"])

    # The container is no post yet: publishing it with the other binding's token would post after the revoke.
    body = post(owner, scheduled["id"])
    assert body["status"] == "failed" and body["error"]["code"] == "ACCOUNT_DISCONNECTED", body
    assert sandbox_posts("instagram", "ig.unpublished") == []


def test_an_instagram_container_is_not_published_when_its_account_is_revoked_after_the_resolver_read_it(owner):
    # The resolver read the account connected, then the partner's revoke committed (the grant kept by another
    # binding of the user, so the token still works) while it read the container: media_publish used to go out
    # all the same, a post made after the revoke promised none would be. The account is read again right
    # before media_publish, as before the first one (_unless_account_gone).
    account, scheduled = _instagram_container_waiting_with_the_grant_kept(owner, "ig.revoked.meanwhile")
    container_id = ScheduledPost.objects.get(pk=scheduled["id"]).publish_id

    def revoked_while_reading_the_container(request, sandbox):
        from accounts.services import social_account_revoke

        if request.method == "GET":
            social_account_revoke(account_id=account["id"])
        return sandbox.handle_request(request)

    with (
        time_machine.travel(later(minutes=10)),
        intercepted({f"/{container_id}": revoked_while_reading_the_container}),
    ):
        services.post_resolve(post_id=scheduled["id"])
    with time_machine.travel(later(minutes=20)):  # once any media_publish sent before the revoke has ended
        services.post_resolve(post_id=scheduled["id"])

    body = post(owner, scheduled["id"])
    assert sandbox_posts("instagram", "ig.revoked.meanwhile") == []
    assert body["status"] == "failed" and body["error"]["code"] == "ACCOUNT_DISCONNECTED", body


def test_an_instagram_post_whose_media_publish_is_in_flight_when_a_second_resolver_reads_the_revoke_is_not_failed(
    owner,
):
    # Resolver A passed the account check and sent media_publish; the partner revoked the account (the grant
    # kept by another binding, so A's token still publishes); resolver B then read the account disconnected and
    # the container not yet published, and failed the post ACCOUNT_DISCONNECTED while A's call made it live. A
    # container found unpublished is now failed only once a media_publish sent before the revoke has ended
    # (CLAIM_LEASE after the disconnect); until then it is asked again.
    from accounts.services import social_account_revoke

    account, scheduled = _instagram_container_waiting_with_the_grant_kept(owner, "ig.in.flight")
    seen_by_b = []

    def revoked_while_publishing(request, sandbox):  # A is in media_publish
        social_account_revoke(account_id=account["id"])
        seen_by_b.append(services.post_resolve(post_id=scheduled["id"]))  # B
        return sandbox.handle_request(request)

    with time_machine.travel(later(minutes=10)), intercepted({"/media_publish": revoked_while_publishing}):
        services.post_resolve(post_id=scheduled["id"])  # A
    with time_machine.travel(later(minutes=20)):
        services.post_resolve(post_id=scheduled["id"])  # the next check, once A's call has long ended

    assert len(sandbox_posts("instagram", "ig.in.flight")) == 1
    body = post(owner, scheduled["id"])
    assert seen_by_b == ["processing"] and body["status"] == "published", (seen_by_b, body)
    assert not Event.objects.filter(type="scheduled_post.failed").exists()


def test_an_instagram_post_whose_media_publish_is_in_flight_when_the_revoke_withdraws_the_grant_is_not_failed(owner):
    # As above, but the account was the user's only binding: the revoke withdraws the grant, so resolver B has
    # no token to ask with and failed the post at once, while A's media_publish (sent before the revoke) made it
    # live. B now waits as well, and A settles the post.
    from accounts.services import social_account_revoke

    account = connected_account(owner, "instagram", "ig.in.flight.alone")
    scheduled = schedule_now(owner, account["id"])
    quota_used_up = {"error": {"message": "limit", "type": "OAuthException", "code": 9, "error_subcode": 2207042}}
    with intercepted({"/media_publish": lambda request, sandbox: httpx.Response(400, json=quota_used_up)}):
        run_dispatcher()
    seen_by_b = []

    def revoked_while_publishing(request, sandbox):  # Instagram has A's media_publish; its answer is on its way
        answer = sandbox.handle_request(request)
        social_account_revoke(account_id=account["id"])  # the grant goes too: no token left to ask with
        seen_by_b.append(services.post_resolve(post_id=scheduled["id"]))  # B
        return answer

    with time_machine.travel(later(minutes=10)), intercepted({"/media_publish": revoked_while_publishing}):
        services.post_resolve(post_id=scheduled["id"])  # A

    assert len(sandbox_posts("instagram", "ig.in.flight.alone")) == 1
    body = post(owner, scheduled["id"])
    assert seen_by_b == ["processing"] and body["status"] == "published", (seen_by_b, body)
    assert not Event.objects.filter(type="scheduled_post.failed").exists()
