import pytest

from scheduling.apis import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
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


def create_content(tenant, media_type: str, urls: list[str]):
    return tenant.client.post(
        f"/v1/projects/{tenant.project.id}/content",
        {"mediaType": media_type, "mediaUrls": urls, "caption": ""},
        format="json",
    )


def create_video(tenant, url: str):
    return create_content(tenant, "video", [url])


# --- A carousel is images --------------------------------------------------------------------------


def create_carousel(tenant, urls: list[str]):
    return create_content(tenant, "carousel", urls)


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


@pytest.mark.parametrize(
    ("media_type", "url", "told"),
    [
        ("image", "https://cdn.acme.test/clip.mp4", "mediaType video"),
        ("image", "https://cdn.acme.test/v/Clip.MOV?sig=abc", "mediaType video"),
        ("video", "https://cdn.acme.test/cover.jpg", "mediaType image"),
        ("video", "https://cdn.acme.test/p/Shot.PNG#x", "mediaType image"),
        ("video", "https://cdn.acme.test/still.webp", "mediaType image"),
        *[("video", f"https://cdn.acme.test/still{ext}", "mediaType image") for ext in IMAGE_EXTENSIONS],
        *[("image", f"https://cdn.acme.test/clip{ext.upper()}", "mediaType video") for ext in VIDEO_EXTENSIONS],
    ],
)
def test_a_url_of_the_other_kind_is_refused_when_the_container_is_created(owner, media_type, url, told):
    # mediaType picks the platform call (a video init or a photo post; a reel or a feed image): a URL of the
    # other kind would be accepted and fail at the post's time as MEDIA_INVALID, after the partner's slot.
    error = assert_error(create_content(owner, media_type, [url]), 422, "VALIDATION")
    [message] = error["details"]["fields"]["mediaUrls.0"]
    assert told in message, message


@pytest.mark.parametrize(
    ("media_type", "url"),
    [
        ("video", "https://cdn.acme.test/clip.mp4"),
        ("video", "https://cdn.acme.test/v/8c1f2a"),  # no extension: a CDN id, taken as it is
        ("video", "https://cdn.acme.test/render?format=jpg"),  # only the path's ending counts
        ("image", "https://cdn.acme.test/photo.jpeg"),
        ("image", "https://cdn.acme.test/i/8c1f2a"),
    ],
)
def test_a_url_not_known_to_be_of_the_other_kind_is_taken(owner, media_type, url):
    response = create_content(owner, media_type, [url])
    assert response.status_code == 201, response.content
