"""How the TikTok client classifies answers that the recorded-payload tests do not cover: the status code and
the error code disagree, a bare gateway answer, an answer lost after the request went out. Each class decides
what a partner sees: RateLimited / PlatformUnavailable → the post is retried later; RequestRejected → the post
fails for good; TokenInvalid → the account goes to reauth_required; outcome_unknown → the post is never sent
again automatically (it may already be live), so a retry cannot post it twice."""

import json

import httpx
import pytest
from django.utils import timezone

from accounts.platforms import get_client
from accounts.platforms.base import (
    MediaItem,
    PlatformError,
    PlatformUnavailable,
    RateLimited,
    RequestRejected,
    TokenInvalid,
    TokenSet,
)

TOKEN = "act.EdgeToken!6135.va"
VIDEO = MediaItem(url="https://cdn.layers.test/media/clip.mp4", kind="video")
CREATOR = {
    "data": {"privacy_level_options": ["PUBLIC_TO_EVERYONE"], "creator_username": "edge"},
    "error": {"code": "ok", "message": ""},
}
EXPIRED = TokenSet(
    access_token=TOKEN, expires_at=timezone.now(), platform_user_id="tt_edge", refresh_token="rft.Edge!6135.va"
)


def client_answering(status: int, body, *, headers=None, creator_ok: bool = True):
    """A TikTok client whose every call gets (status, body); creator_info answers normally when creator_ok,
    so a publish reaches its init call."""

    def handler(request: httpx.Request) -> httpx.Response:
        if creator_ok and request.url.path.endswith("/creator_info/query/"):
            return httpx.Response(200, json=CREATOR)
        if isinstance(body, bytes):
            return httpx.Response(status, content=body, headers=headers)
        return httpx.Response(status, json=body, headers=headers)

    return get_client("tiktok", http=httpx.Client(transport=httpx.MockTransport(handler)))


def envelope(code: str) -> dict:
    return {"data": {}, "error": {"code": code, "message": "m", "log_id": "L"}}


def publish(client):
    return client.publish(
        access_token=TOKEN, platform_user_id="tt_edge", mode="publish", media_type="video", media=[VIDEO], caption="c"
    )


# Throttling is told by the HTTP status too, whatever code TikTok's body carries: the post waits and is
# retried, it does not fail for good.
@pytest.mark.parametrize(
    "body", [envelope("too_many_requests"), {"error": "too_many_requests", "error_description": "slow down"}]
)
def test_a_429_with_any_error_code_is_throttling_and_its_retry_after_is_kept(body):
    client = client_answering(429, body, headers={"Retry-After": "30"})

    with pytest.raises(RateLimited) as caught:
        client.get_profile(access_token=TOKEN)

    assert caught.value.retry_after == 30.0


# A TikTok outage is retried, not a failed post: any 5xx — 500 included — whatever the code in the body,
# and the OAuth `temporarily_unavailable` / `server_error` even when TikTok answers them with HTTP 200/400
# (the OAuth body is read whatever the status). Otherwise a token refresh during a TikTok blip would be a
# refusal.
@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, envelope("unknown_error")),
        (503, envelope("service_busy")),
        (500, b"<html>Internal Server Error</html>"),
    ],
)
def test_a_5xx_is_an_outage_whatever_the_body(status, body):
    with pytest.raises(PlatformUnavailable):
        client_answering(status, body).get_profile(access_token=TOKEN)


@pytest.mark.parametrize("status", [200, 400])
def test_a_temporarily_unavailable_token_answer_is_an_outage_not_a_refusal(status):
    body = {"error": "temporarily_unavailable", "error_description": "try later", "log_id": "L"}

    with pytest.raises(PlatformUnavailable):
        client_answering(status, body).refresh(tokens=EXPIRED)


# A token answer in a shape the client cannot use is a typed error (callers handle those: the refresh keeps the
# account as it is and is tried again), never a TypeError out of a refresh or an access token stored as a list.
TOKEN_ANSWER = {"access_token": "act.New!6135.va", "refresh_token": "rft.New!6135.va", "open_id": "tt_edge",
                "expires_in": 86400, "refresh_expires_in": 31536000, "scope": "user.info.basic"}  # fmt: skip


@pytest.mark.parametrize(
    "body",
    [
        {**TOKEN_ANSWER, "access_token": 12345},
        {**TOKEN_ANSWER, "access_token": ["act.New!6135.va"]},
        {**TOKEN_ANSWER, "access_token": {"value": "act.New!6135.va"}},
        {key: value for key, value in TOKEN_ANSWER.items() if key != "access_token"},
        {**TOKEN_ANSWER, "refresh_token": ["rft.New!6135.va"]},
        {**TOKEN_ANSWER, "open_id": {"id": "tt_edge"}},
        [TOKEN_ANSWER],
    ],
)
@pytest.mark.parametrize("grant", ["refresh", "exchange_code"])
def test_a_token_answer_in_an_unusable_shape_is_a_typed_error(grant, body):
    client = client_answering(200, body)
    with pytest.raises(PlatformUnavailable) as caught:
        if grant == "refresh":
            client.refresh(tokens=EXPIRED)
        else:
            client.exchange_code(code="code-1", redirect_uri="https://api.layers.test/cb")
    assert caught.value.code == "bad_response"


def test_a_token_answer_whose_scope_is_a_list_gives_those_scopes():
    fresh = client_answering(200, {**TOKEN_ANSWER, "scope": ["user.info.basic", "video.publish"]}).refresh(
        tokens=EXPIRED
    )
    assert fresh.scopes == ("user.info.basic", "video.publish")


# A revoke is done only when TikTok says so: a proxy's page with 200, an error envelope with 200 or a redirect
# are not, and raise (the disconnect then logs a warning and writes a line on the account's history).
@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, b"<html>Service temporarily unavailable</html>"),
        (200, b"[]"),
        (200, envelope("internal_error")),
        (200, {"error": "server_error", "error_description": "down"}),
        (302, b""),
    ],
)
def test_a_revoke_answer_that_is_not_tiktoks_success_is_not_a_revoke(status, body):
    with pytest.raises(PlatformError):
        client_answering(status, body).revoke(access_token=TOKEN)


@pytest.mark.parametrize("body", [b"", {}, {"error": {"code": "ok", "message": ""}}])
def test_tiktoks_revoke_success_is_a_revoke(body):
    assert client_answering(200, body).revoke(access_token=TOKEN) is True


# TikTok says a token is dead in its envelope (401 `access_token_invalid`, PLATFORMS.md): that flips the
# account to reauth_required. A bare 401 without it is a gateway's or a proxy's page, not TikTok judging the
# token: it used to flip the account too, so one misbehaving edge asked every customer to reconnect. It is an
# outage now (retried; a really dead token is still caught by the envelope or the refresh's invalid_grant),
# and one that did not carry the request out, so a publish may be sent again.
def test_a_401_in_tiktoks_envelope_is_a_dead_token():
    with pytest.raises(TokenInvalid):
        client_answering(401, envelope("access_token_invalid")).get_profile(access_token=TOKEN)


@pytest.mark.parametrize("body", [b"Unauthorized", b"<html>401 Authorization Required</html>", {"message": "no"}])
def test_a_bare_401_is_an_outage_not_a_dead_token(body):
    with pytest.raises(PlatformUnavailable) as caught:
        publish(client_answering(401, body))

    assert caught.value.outcome_unknown is False


# Once the init call has gone out, an answer that does not say what happened may hide a live post: the
# error must say so (outcome_unknown) so that the post is not sent again — a second video on the creator's
# profile.
@pytest.mark.parametrize(
    ("status", "body"),
    [
        (502, b"<html>Bad gateway</html>"),  # a gateway's page, the request may have reached TikTok
        (200, b"<html>cut short"),  # a 2xx that is not TikTok's JSON envelope
        (200, {"data": {}, "error": {"code": "ok", "message": ""}}),  # "ok" without a publish_id
    ],
)
def test_a_publish_whose_answer_is_lost_is_outcome_unknown(status, body):
    with pytest.raises(PlatformUnavailable) as caught:
        publish(client_answering(status, body))

    assert caught.value.outcome_unknown is True


# TikTok's status list has PROCESSING_UPLOAD as well as PROCESSING_DOWNLOAD: both mean "still working on it",
# the post stays publishing and is asked again — not an error about an unknown status.
@pytest.mark.parametrize("state", ["PROCESSING_UPLOAD", "PROCESSING_DOWNLOAD"])
def test_both_processing_states_are_processing(state):
    body = {"data": {"status": state}, "error": {"code": "ok", "message": ""}}

    status = client_answering(200, body).publish_status(
        access_token=TOKEN, platform_user_id="tt_edge", publish_id="v_pub~1"
    )

    assert status.state == "processing"


def creator_then_init(creator: dict, sent: list):
    """A TikTok client whose creator_info answers `creator` (its data) and whose init records what it was sent."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/creator_info/query/"):
            return httpx.Response(200, json={"data": creator, "error": {"code": "ok", "message": ""}})
        sent.append(json.loads(request.content))
        return httpx.Response(200, json={"data": {"publish_id": "v_pub_url~v2.1"}, "error": {"code": "ok"}})

    return get_client("tiktok", http=httpx.Client(transport=httpx.MockTransport(handler)))


# A creator_info answer Layers cannot read is no refusal of the post (that would fail it for good) and no crash
# (a ValueError, AttributeError... that the worker counted as a dead run: after 5, the post failed "the worker
# died or raised"): it is an unreadable answer, retried. Nothing was created: it is no unknown outcome.
@pytest.mark.parametrize(
    "options", [7, "PUBLIC_TO_EVERYONE", {"PUBLIC_TO_EVERYONE": True}], ids=["number", "string", "object"]
)
def test_a_creator_info_answer_whose_privacy_options_cannot_be_read_is_an_outage_retried(options):
    sent: list = []
    client = creator_then_init({"privacy_level_options": options}, sent)

    with pytest.raises(PlatformUnavailable) as caught:
        publish(client)

    assert caught.value.code == "bad_response" and caught.value.outcome_unknown is False
    assert sent == []


@pytest.mark.parametrize("creator", [[], "PUBLIC_TO_EVERYONE", 7, {}], ids=["array", "string", "number", "no options"])
def test_a_creator_info_answer_with_no_options_object_is_an_outage_with_nothing_created(creator):
    # A `data` that is not an object was read as a creator offering no privacy level: RequestRejected failed
    # the post for good, for an answer Layers could not read.
    sent: list = []
    with pytest.raises(PlatformUnavailable) as caught:
        publish(creator_then_init(creator, sent))
    assert caught.value.code == "bad_response" and caught.value.outcome_unknown is False
    assert sent == []


def test_a_creator_offering_no_privacy_level_is_still_a_refusal():
    with pytest.raises(RequestRejected):
        publish(creator_then_init({"privacy_level_options": []}, []))


# TikTok documents comment_disabled (and duet / stitch) as booleans. "false" as a string was read as true by
# bool(): comments turned off on a creator who allows them. What is not a yes or a no keeps them off (the
# creator may have turned them off: Layers must not turn them on).
@pytest.mark.parametrize(
    "value, disabled",
    [(False, False), (True, True), ("false", False), ("False", False), ("true", True), (0, False), (1, True),
     (None, False), ("maybe", True), ({}, True), ([], True)],
)  # fmt: skip
def test_comment_duet_and_stitch_settings_are_read_as_the_booleans_tiktok_means(value, disabled):
    sent: list = []
    creator = {
        "privacy_level_options": ["PUBLIC_TO_EVERYONE"],
        "comment_disabled": value,
        "duet_disabled": value,
        "stitch_disabled": value,
    }

    publish(creator_then_init(creator, sent))

    info = sent[0]["post_info"]
    assert (info["disable_comment"], info["disable_duet"], info["disable_stitch"]) == (disabled,) * 3


@pytest.mark.parametrize(
    "post_ids, expected",
    [([7513605806270863771], "7513605806270863771"), (["7513605806270863771"], "7513605806270863771"),
     (7513605806270863771, "7513605806270863771"), ([[7513605806270863771]], None), ([{"id": 75}], None),
     ([-75], None), ([2**63], None), ([7.5e18], None), ([True], None), (["75 13"], None), (["٣٤"], None)],
)  # fmt: skip
def test_a_public_post_id_is_read_only_as_the_int64_tiktok_documents(post_ids, expected):
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/user/info/"):
            return httpx.Response(200, json={"data": {"user": {"open_id": "tt_edge", "username": "edge"}}})
        data = {"status": "PUBLISH_COMPLETE", "publicaly_available_post_id": post_ids}
        return httpx.Response(200, json={"data": data, "error": {"code": "ok", "message": ""}})

    client = get_client("tiktok", http=httpx.Client(transport=httpx.MockTransport(handler)))
    status = client.publish_status(access_token=TOKEN, platform_user_id="tt_edge", publish_id="v_pub~1")

    assert (status.state, status.external_id) == ("published", expected)
    assert status.external_url == (f"https://www.tiktok.com/@edge/video/{expected}" if expected else None)


@pytest.mark.parametrize("username", ["ed ge", "edge\x00", "e" * 1100, "ed/../ge"])
def test_a_post_url_is_not_built_from_a_username_that_is_no_tiktok_handle(username):
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/user/info/"):
            return httpx.Response(200, json={"data": {"user": {"open_id": "tt_edge", "username": username}}})
        data = {"status": "PUBLISH_COMPLETE", "publicaly_available_post_id": [75]}
        return httpx.Response(200, json={"data": data, "error": {"code": "ok", "message": ""}})

    client = get_client("tiktok", http=httpx.Client(transport=httpx.MockTransport(handler)))
    status = client.publish_status(access_token=TOKEN, platform_user_id="tt_edge", publish_id="v_pub~1")

    assert (status.state, status.external_id, status.external_url) == ("published", "75", None)
