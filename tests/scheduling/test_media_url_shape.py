import pytest

from tests.conftest import assert_error

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "url",
    [
        "https://cdn.acme.test:99999/clip.mp4",  # no such port: no one can ever fetch it
        "https://cdn.acme.test:0/clip.mp4",
        "https://cdn.acme.test\\@evil.test/clip.mp4",  # '\' is no URI character; parsers disagree on the host
        "https://cdn.acme.test\\clip.mp4",
        "https://user:secret@cdn.acme.test/clip.mp4",  # credentials in an https URL (RFC 9110 forbids sending them)
        "https://user@cdn.acme.test/clip.mp4",
    ],
)
def test_a_media_url_no_platform_can_fetch_is_refused_when_the_container_is_created(owner, url):
    response = create_video(owner, url)
    error = assert_error(response, 422, "VALIDATION")
    assert "mediaUrls.0" in error["details"]["fields"], error


@pytest.mark.parametrize(
    "url",
    [
        "https://cdn.acme.test:8443/clip.mp4",
        "https://CDN.Acme.test/clip.mp4?sig=a%20b&exp=1#t=2",
        "https://[2001:db8::1]/clip.mp4",
    ],
)
def test_a_fetchable_media_url_is_kept_as_sent(owner, url):
    response = create_video(owner, url)
    assert response.status_code == 201, response.content
    assert response.json()["mediaUrls"] == [url]


def create_video(tenant, url: str):
    return tenant.client.post(
        f"/v1/projects/{tenant.project.id}/content",
        {"mediaType": "video", "mediaUrls": [url], "caption": ""},
        format="json",
    )
