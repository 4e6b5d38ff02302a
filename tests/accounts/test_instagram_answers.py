"""How Instagram answers are read where no other test pins them down."""

import httpx
import pytest
from django.utils import timezone

from accounts.platforms import get_client
from accounts.platforms.base import PlatformError, PlatformUnavailable, RateLimited, TokenSet


def instagram(handler):
    return get_client("instagram", http=httpx.Client(transport=httpx.MockTransport(handler)))


# DELETE /me/permissions answers {"success": true} when it withdrew the grant. Anything else is not a revoke:
# it raises, and the disconnect logs a warning and writes a line on the account's history.
@pytest.mark.parametrize("body", [{"success": False}, {}, {"success": "false"}])
def test_a_permission_revoke_without_success_true_is_not_a_revoke(body):
    with pytest.raises(PlatformError):
        instagram(lambda request: httpx.Response(200, json=body)).revoke(access_token="IG")


def test_a_permission_revoke_with_success_true_is_a_revoke():
    assert instagram(lambda request: httpx.Response(200, json={"success": True})).revoke(access_token="IG") is True


LONG_LIVED = {"access_token": "IGQVJlong", "token_type": "bearer", "expires_in": 5183944}


def token_endpoints(*, code_answer=None, long_lived=None, me=None):
    """Instagram's connect calls: the code exchange, the long-lived exchange, /me; each answer replaceable."""

    def handler(request):
        path = request.url.path
        if path.endswith("/oauth/access_token"):
            return httpx.Response(200, json=code_answer or {"access_token": "IGshort", "user_id": "ig_1"})
        if path.endswith("/access_token"):
            return httpx.Response(200, json=LONG_LIVED if long_lived is None else long_lived)
        if path.endswith("/refresh_access_token"):
            return httpx.Response(200, json=LONG_LIVED if long_lived is None else long_lived)
        return httpx.Response(200, json=me or {"user_id": "ig_1"})

    return instagram(handler)


# A token answer in a shape the client cannot use is a typed error (the connect ends platform_error through its
# own handling, a refresh is tried again later), never a TypeError or an access token stored as a number.
@pytest.mark.parametrize(
    "answers",
    [
        {"code_answer": {"access_token": 123, "user_id": "ig_1"}},
        {"code_answer": {"access_token": ["IGshort"], "user_id": "ig_1"}},
        {"long_lived": {**LONG_LIVED, "access_token": 42}},
        {"long_lived": {**LONG_LIVED, "access_token": {"t": "x"}}},
        {"long_lived": {"token_type": "bearer", "expires_in": 5183944}},
        {"me": {"user_id": {"id": "ig_1"}}, "code_answer": {"access_token": "IGshort", "user_id": ["ig_1"]}},
    ],
)
def test_an_instagram_token_answer_in_an_unusable_shape_is_a_typed_error(answers):
    with pytest.raises(PlatformUnavailable) as caught:
        token_endpoints(**answers).exchange_code(code="c", redirect_uri="https://api.layers.test/cb")
    assert caught.value.code == "bad_response"


@pytest.mark.parametrize("answer", [{**LONG_LIVED, "access_token": 42}, {"expires_in": 5183944}])
def test_an_instagram_refresh_answer_in_an_unusable_shape_is_a_typed_error(answer):
    tokens = TokenSet(access_token="IGold", expires_at=timezone.now(), platform_user_id="ig_1")
    with pytest.raises(PlatformUnavailable) as caught:
        token_endpoints(long_lived=answer).refresh(tokens=tokens)
    assert caught.value.code == "bad_response"


def test_media_not_ready_at_media_publish_keeps_the_post_processing():
    """Instagram may refuse media_publish of a container it had just reported FINISHED with 9007/2207027
    ("media not ready"): the post is still processing and is asked about again, not failed."""

    def handler(request):
        if request.url.path.endswith("/media_publish"):
            error = {
                "message": "The media is not ready for publishing, please wait for a moment",
                "type": "OAuthException",
                "code": 9007,
                "error_subcode": 2207027,
                "fbtrace_id": "A",
            }
            return httpx.Response(400, json={"error": error})
        return httpx.Response(200, json={"id": "c_1", "status_code": "FINISHED", "status": "Finished"})

    status = instagram(handler).publish_status(
        access_token="tok", platform_user_id="ig_1", publish_id="c_1", caption="hi"
    )

    assert status.state == "processing"


def test_a_bare_http_429_is_rate_limited_not_a_refusal():
    """A 429 without Meta's error body (a gateway or edge throttle) means "later", so the post is retried;
    read as a refusal it would fail the partner's post for good."""
    client = instagram(lambda request: httpx.Response(429, content=b"Too Many Requests"))

    with pytest.raises(RateLimited) as caught:
        client.get_profile(access_token="tok")

    assert caught.value.code == "http_429"


def test_a_429_with_a_graph_error_but_no_throttling_code_is_rate_limited_too():
    """A 429 whose body is a Graph error without one of the throttling codes: the post failed at once as refused
    content ("instagram None: Too Many Requests") where a later attempt would have gone through."""
    body = {"error": {"message": "Too Many Requests", "type": "OAuthException"}}
    client = instagram(lambda request: httpx.Response(429, json=body))

    with pytest.raises(RateLimited):
        client.get_profile(access_token="tok")


@pytest.mark.parametrize("code", [b"1e400", b"Infinity", b"-Infinity"])
def test_a_graph_error_whose_code_is_no_finite_number_is_a_typed_error(code):
    """Python's JSON reader takes 1e400 and Infinity as infinite floats, and int() of one raised OverflowError
    out of the Graph error reader: an untyped exception where a typed platform error is handled."""
    body = b'{"error": {"message": "Something odd", "type": "OAuthException", "code": ' + code + b"}}"
    client = instagram(lambda request: httpx.Response(400, content=body, headers={"content-type": "application/json"}))

    with pytest.raises(PlatformError):
        client.get_profile(access_token="tok")
