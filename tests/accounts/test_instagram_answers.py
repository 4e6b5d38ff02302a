"""How Instagram answers are read where no other test pins them down."""

import httpx
import pytest

from accounts.platforms import get_client
from accounts.platforms.base import RateLimited


def instagram(handler):
    return get_client("instagram", http=httpx.Client(transport=httpx.MockTransport(handler)))


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
