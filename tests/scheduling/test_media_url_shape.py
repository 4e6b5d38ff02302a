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


# --- A carousel is images --------------------------------------------------------------------------


def create_carousel(tenant, urls: list[str]):
    return tenant.client.post(
        f"/v1/projects/{tenant.project.id}/content",
        {"mediaType": "carousel", "mediaUrls": urls, "caption": ""},
        format="json",
    )


@pytest.mark.parametrize(
    "video",
    [
        "https://cdn.acme.test/clip.mp4",
        "https://cdn.acme.test/Clip.MOV",
        "https://cdn.acme.test/v/clip.m4v?sig=abc&exp=1",
        "https://cdn.acme.test/clip.webm#t=2",
    ],
)
def test_a_video_in_a_carousel_is_refused_naming_its_place(owner, video):
    # Both platforms' carousels are photos, and each Instagram item is sent as an image: a video would be
    # accepted here and fail at its time. Refused now, at the URL that is a video.
    response = create_carousel(owner, ["https://cdn.acme.test/1.jpg", video, "https://cdn.acme.test/3.jpg"])

    error = assert_error(response, 422, "VALIDATION")

    assert list(error["details"]["fields"]) == ["mediaUrls.1"], error
    [message] = error["details"]["fields"]["mediaUrls.1"]
    assert "images" in message and "mediaType video" in message, message


@pytest.mark.parametrize(
    "image",
    [
        "https://cdn.acme.test/2.jpg",
        "https://cdn.acme.test/render?format=mp4-preview",  # only the path's ending counts
        "https://cdn.acme.test/clip.mp4.jpg",
        "https://cdn.acme.test/photo",  # no extension: not known to be a video
    ],
)
def test_a_carousel_of_urls_not_ending_in_a_video_extension_is_created(owner, image):
    response = create_carousel(owner, ["https://cdn.acme.test/1.jpg", image])
    assert response.status_code == 201, response.content
