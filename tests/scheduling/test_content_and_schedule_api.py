"""Content containers and schedules: every validation rule of the contract, all-or-none, tenancy."""

from datetime import timedelta

import pytest
from django.utils import timezone

from config.api.fields import datetime_output
from scheduling.models import ManagedProvider, ScheduledPost
from tests.accounts.oauth_helpers import connected_account
from tests.conftest import assert_error
from tests.factories import make_account
from tests.scheduling.publish_helpers import post, run_dispatcher, sandbox_posts, schedule_now

VIDEO = {"mediaType": "video", "mediaUrls": ["https://cdn.acme.test/clip.mp4"], "caption": "hello"}


def iso(dt) -> str:
    return datetime_output(dt)  # as the API writes it


def _within_a_year_in_a_one_digit_month():
    return next(d for d in (timezone.now() + timedelta(days=n) for n in range(2, 300)) if d.month < 10)


def soon() -> str:
    return iso(timezone.now() + timedelta(hours=1))


def create_container(tenant, body=VIDEO, project=None):
    project = project or tenant.project
    return tenant.client.post(f"/v1/projects/{project.id}/content", body, format="json")


@pytest.fixture
def container(owner):
    response = create_container(owner)
    assert response.status_code == 201, response.content
    return response.json()


def schedule(tenant, container_id, targets, scheduled_for=None, **extra):
    body = {"targets": targets, "scheduledFor": scheduled_for or soon(), **extra}
    return tenant.client.post(f"/v1/content/{container_id}/schedule", body, format="json")


def test_container_is_created_and_readable(owner, container):
    assert container["id"].startswith("cnt_")
    assert container["projectId"] == owner.project.id
    assert container["mediaType"] == "video" and container["mediaUrls"] == VIDEO["mediaUrls"]
    assert owner.client.get(f"/v1/content/{container['id']}").json() == container


@pytest.mark.parametrize("caption", ["\n\nLine one\n#tag  ", "   ", "  centred  "])
def test_the_caption_is_kept_exactly_as_sent(owner, caption):
    response = create_container(owner, {**VIDEO, "caption": caption})
    assert response.status_code == 201, response.content
    assert response.json()["caption"] == caption
    assert owner.client.get(f"/v1/content/{response.json()['id']}").json()["caption"] == caption


@pytest.mark.parametrize(
    "body, field",
    [
        ({**VIDEO, "mediaType": "gif"}, "mediaType"),
        ({**VIDEO, "mediaUrls": []}, "mediaUrls"),
        ({**VIDEO, "mediaUrls": ["http://cdn.acme.test/clip.mp4"]}, "mediaUrls.0"),
        ({**VIDEO, "mediaUrls": ["javascript:alert(1)"]}, "mediaUrls.0"),
        ({**VIDEO, "mediaUrls": ["https://a.test/1.mp4", "https://a.test/2.mp4"]}, "mediaUrls"),
        ({"mediaType": "carousel", "mediaUrls": ["https://a.test/1.jpg"]}, "mediaUrls"),
        ({**VIDEO, "caption": "x" * 4001}, "caption"),  # over the longest caption any target takes
        ({**VIDEO, "placement": "reels"}, "placement"),
    ],
)
def test_invalid_containers_are_422_naming_the_field(owner, body, field):
    error = assert_error(create_container(owner, body), 422, "VALIDATION")
    assert field in error["details"]["fields"], error


@pytest.mark.parametrize(
    "media_type, count, message",
    [
        ("image", 2, "An image takes exactly 1 URL."),
        ("video", 2, "A video takes exactly 1 URL."),
        ("carousel", 1, "A carousel takes 2 to 35 URLs."),
    ],
)
def test_a_wrong_number_of_media_urls_is_said_in_plain_english(owner, media_type, count, message):
    urls = [f"https://cdn.acme.test/{n}.jpg" for n in range(count)]
    error = assert_error(create_container(owner, {"mediaType": media_type, "mediaUrls": urls}), 422, "VALIDATION")
    assert error["details"]["fields"] == {"mediaUrls": [message]}


def test_schedule_creates_queued_posts_with_derived_placement(owner, container):
    tiktok = make_account(owner, platform="tiktok")
    insta = make_account(owner, platform="instagram")
    when = iso((timezone.now() + timedelta(days=1)).replace(microsecond=0))

    response = schedule(
        owner,
        container["id"],
        [{"socialAccountId": tiktok.pk, "mode": "publish"}, {"socialAccountId": insta.pk, "mode": "draft"}],
        when,
    )

    assert response.status_code == 201, response.content
    posts = response.json()["scheduledPosts"]
    assert [(p["socialAccountId"], p["mode"], p["status"]) for p in posts] == [
        (tiktok.pk, "publish", "queued"),
        (insta.pk, "draft", "queued"),
    ]
    assert posts[0]["scheduledFor"] == when
    assert posts[1]["placement"] == "reels"
    assert all(p["id"].startswith("sp_") and p["containerId"] == container["id"] for p in posts)


@pytest.mark.parametrize(
    "media_type, urls, placement",
    [
        ("image", ["https://a.test/1.jpg"], "feed"),
        ("carousel", ["https://a.test/1.jpg", "https://a.test/2.jpg"], "carousel"),
        ("video", ["https://a.test/1.mp4"], "reels"),
    ],
)
def test_instagram_placement_follows_media_type(owner, media_type, urls, placement):
    c = create_container(owner, {"mediaType": media_type, "mediaUrls": urls}).json()
    insta = make_account(owner, platform="instagram")
    posts = schedule(owner, c["id"], [{"socialAccountId": insta.pk, "mode": "publish"}]).json()["scheduledPosts"]
    assert posts[0]["placement"] == placement


def test_all_targets_or_none(owner, container):
    good = make_account(owner)
    gone = make_account(owner, status="disconnected")

    response = schedule(
        owner,
        container["id"],
        [{"socialAccountId": good.pk, "mode": "publish"}, {"socialAccountId": gone.pk, "mode": "publish"}],
    )

    error = assert_error(response, 422, "VALIDATION")
    assert list(error["details"]["fields"]) == ["targets.1.socialAccountId"]
    assert not ScheduledPost.objects.exists()


def test_reauth_required_accounts_are_accepted(owner, container):
    account = make_account(owner, status="reauth_required")
    assert schedule(owner, container["id"], [{"socialAccountId": account.pk, "mode": "publish"}]).status_code == 201


def test_accounts_of_another_project_or_organization_are_rejected(owner, sibling, container):
    other_project = make_account(owner, project=owner.projects[1])
    foreign = make_account(sibling)
    for account in (other_project, foreign):
        response = schedule(owner, container["id"], [{"socialAccountId": account.pk, "mode": "publish"}])
        assert "targets.0.socialAccountId" in assert_error(response, 422, "VALIDATION")["details"]["fields"]
    for bad in ("sa_nope", "", "prj_x"):
        response = schedule(owner, container["id"], [{"socialAccountId": bad, "mode": "publish"}])
        assert_error(response, 422, "VALIDATION")


@pytest.mark.parametrize(
    "target_extra, top_extra, field",
    [
        ({"placement": "feed"}, {}, "targets.0.placement"),
        ({"reels": True}, {}, "targets.0.reels"),
        ({}, {"feed": True}, "feed"),
        ({}, {"placement": "reels"}, "placement"),
        ({"mode": "shout"}, {}, "targets.0.mode"),
    ],
)
def test_placement_knobs_and_bad_modes_are_422(owner, container, target_extra, top_extra, field):
    account = make_account(owner, platform="instagram")
    target = {"socialAccountId": account.pk, "mode": "publish", **target_extra}
    error = assert_error(schedule(owner, container["id"], [target], **top_extra), 422, "VALIDATION")
    assert field in error["details"]["fields"], error


def test_managed_needs_a_configured_provider(owner, container):
    account = make_account(owner)
    response = schedule(owner, container["id"], [{"socialAccountId": account.pk, "mode": "managed"}])
    assert "targets.0.mode" in assert_error(response, 422, "VALIDATION")["details"]["fields"]
    ManagedProvider.objects.create(project=owner.project, name="Acme Boost", endpoint_url="https://boost.test/in")
    assert schedule(owner, container["id"], [{"socialAccountId": account.pk, "mode": "managed"}]).status_code == 201


def test_instagram_drafts_are_refused_where_no_draft_delivery_service_is_configured(owner, container, settings):
    # Live mode's default: Instagram has no draft API, and without a delivery service no Instagram draft can
    # ever be delivered. The schedule says so, instead of accepting the post and failing it at its time.
    instagram = make_account(owner, platform="instagram")
    tiktok = make_account(owner, platform="tiktok")
    targets = [{"socialAccountId": tiktok.pk, "mode": "draft"}, {"socialAccountId": instagram.pk, "mode": "draft"}]
    settings.LAYERS_INSTAGRAM_DRAFT_DELIVERY_URL = ""

    error = assert_error(schedule(owner, container["id"], targets), 422, "VALIDATION")
    assert list(error["details"]["fields"]) == ["targets.1.mode"], error
    assert "draft" in error["details"]["fields"]["targets.1.mode"][0].lower()
    assert not ScheduledPost.objects.exists()  # all or none: the TikTok draft is not created either
    publish = [targets[0], {"socialAccountId": instagram.pk, "mode": "publish"}]
    assert schedule(owner, container["id"], publish).status_code == 201

    settings.LAYERS_INSTAGRAM_DRAFT_DELIVERY_URL = "https://drafts.layers.test"
    assert schedule(owner, container["id"], targets).status_code == 201


ROCKET = "\U0001f680"  # one character, two UTF-16 code units


@pytest.mark.parametrize(
    "media_type, urls, caption, mode",
    [
        ("video", ["https://cdn.acme.test/clip.mp4"], ROCKET * 1101, "publish"),  # title: 2202 of 2200
        ("image", ["https://cdn.acme.test/a.jpg"], ROCKET * 2001, "publish"),  # description: 4002 of 4000
        ("carousel", ["https://cdn.acme.test/a.jpg", "https://cdn.acme.test/b.jpg"], ROCKET * 2001, "draft"),
    ],
)
def test_a_caption_too_long_for_tiktok_in_utf16_is_refused_when_scheduled(owner, media_type, urls, caption, mode):
    # TikTok counts a caption in UTF-16 code units: these fit our limit of 2200 characters, not TikTok's.
    body = {"mediaType": media_type, "mediaUrls": urls, "caption": caption}
    created = create_container(owner, body)
    assert created.status_code == 201, created.content
    instagram = make_account(owner, platform="instagram")
    tiktok = make_account(owner, platform="tiktok")
    targets = [{"socialAccountId": instagram.pk, "mode": "publish"}, {"socialAccountId": tiktok.pk, "mode": mode}]

    error = assert_error(schedule(owner, created.json()["id"], targets), 422, "VALIDATION")

    assert list(error["details"]["fields"]) == ["targets.1.socialAccountId"], error
    assert "UTF-16" in error["details"]["fields"]["targets.1.socialAccountId"][0]
    assert not ScheduledPost.objects.exists()


def test_captions_within_tiktoks_utf16_limits_are_scheduled(owner):
    tiktok = make_account(owner, platform="tiktok")
    cases = [
        ("video", ["https://cdn.acme.test/clip.mp4"], ROCKET * 1100, "publish"),  # 2200 units: just fits
        ("video", ["https://cdn.acme.test/clip.mp4"], ROCKET * 2000, "draft"),  # an inbox video takes no caption
        ("image", ["https://cdn.acme.test/a.jpg"], ROCKET * 2000, "publish"),  # 4000 units: just fits
    ]
    for media_type, urls, caption, mode in cases:
        created = create_container(owner, {"mediaType": media_type, "mediaUrls": urls, "caption": caption}).json()
        response = schedule(owner, created["id"], [{"socialAccountId": tiktok.pk, "mode": mode}])
        assert response.status_code == 201, (media_type, mode, response.content[:300])


def test_a_tiktok_photo_description_up_to_tiktoks_4000_units_is_scheduled_but_not_for_instagram(owner):
    # TikTok takes 4000 UTF-16 code units in a photo post's description; Instagram 2200 characters in any
    # caption. The container takes the longest; each target is held to its platform's limit.
    urls = ["https://cdn.acme.test/a.jpg", "https://cdn.acme.test/b.jpg"]
    created = create_container(owner, {"mediaType": "carousel", "mediaUrls": urls, "caption": "a" * 4000})
    assert created.status_code == 201, created.content
    tiktok = make_account(owner, platform="tiktok")
    instagram = make_account(owner, platform="instagram")

    for mode in ("publish", "draft"):
        response = schedule(owner, created.json()["id"], [{"socialAccountId": tiktok.pk, "mode": mode}])
        assert response.status_code == 201, response.content

    targets = [{"socialAccountId": tiktok.pk, "mode": "publish"}, {"socialAccountId": instagram.pk, "mode": "publish"}]
    error = assert_error(schedule(owner, created.json()["id"], targets), 422, "VALIDATION")
    assert list(error["details"]["fields"]) == ["targets.1.socialAccountId"], error
    [message] = error["details"]["fields"]["targets.1.socialAccountId"]
    assert "Instagram" in message and "2200" in message, message


def test_a_tiktok_photo_post_with_a_3000_character_description_is_published_with_all_of_it(owner):
    account = connected_account(owner, "tiktok", "long.description")
    description = "word " * 600

    scheduled = schedule_now(owner, account["id"], media_type="carousel", caption=description)
    run_dispatcher()

    assert post(owner, scheduled["id"])["status"] == "published"
    [received] = sandbox_posts("tiktok", "long.description")
    assert received.caption == description


@pytest.mark.parametrize("mode", ["publish", "draft", "managed"])
def test_an_instagram_caption_over_2200_characters_is_refused_in_every_mode(owner, settings, mode):
    # Whatever the mode the post ends on Instagram (a draft is posted there by the creator, a managed post by
    # the provider), which takes 2200 characters; 2200 fit.
    settings.LAYERS_INSTAGRAM_DRAFT_DELIVERY_URL = "https://drafts.layers.test"
    ManagedProvider.objects.create(project=owner.project, name="Acme Boost", endpoint_url="https://boost.test/in")
    instagram = make_account(owner, platform="instagram")
    too_long = create_container(owner, {**VIDEO, "caption": "a" * 2201}).json()
    fits = create_container(owner, {**VIDEO, "caption": "a" * 2200}).json()
    target = [{"socialAccountId": instagram.pk, "mode": mode}]

    error = assert_error(schedule(owner, too_long["id"], target), 422, "VALIDATION")

    assert "2200" in error["details"]["fields"]["targets.0.socialAccountId"][0], error
    assert schedule(owner, fits["id"], target).status_code == 201


def test_a_managed_tiktok_video_caption_is_held_to_the_length_of_a_tiktok_title(owner):
    # A managed post is not counted in UTF-16 (the provider gets it as it is), but a video's caption longer
    # than a TikTok title in characters is refused, as it was when every caption was 2200 at most.
    ManagedProvider.objects.create(project=owner.project, name="Acme Boost", endpoint_url="https://boost.test/in")
    tiktok = make_account(owner, platform="tiktok")
    too_long = create_container(owner, {**VIDEO, "caption": "a" * 2201}).json()
    fits = create_container(owner, {**VIDEO, "caption": ROCKET * 2200}).json()
    target = [{"socialAccountId": tiktok.pk, "mode": "managed"}]

    error = assert_error(schedule(owner, too_long["id"], target), 422, "VALIDATION")

    assert "2200" in error["details"]["fields"]["targets.0.socialAccountId"][0], error
    assert schedule(owner, fits["id"], target).status_code == 201


def test_a_carousel_of_more_than_ten_items_is_refused_for_instagram_not_for_tiktok(owner):
    # Instagram's carousels take 2 to 10 items, TikTok's photo posts up to 35.
    urls = [f"https://cdn.acme.test/{n}.jpg" for n in range(11)]
    created = create_container(owner, {"mediaType": "carousel", "mediaUrls": urls}).json()
    tiktok = make_account(owner, platform="tiktok")
    instagram = make_account(owner, platform="instagram")
    targets = [{"socialAccountId": tiktok.pk, "mode": "publish"}, {"socialAccountId": instagram.pk, "mode": "publish"}]

    error = assert_error(schedule(owner, created["id"], targets), 422, "VALIDATION")

    assert list(error["details"]["fields"]) == ["targets.1.socialAccountId"], error
    assert "10" in error["details"]["fields"]["targets.1.socialAccountId"][0]
    assert schedule(owner, created["id"], targets[:1]).status_code == 201


TAGS = " ".join(f"#tag{n}" for n in range(30))  # Instagram's most: 30 hashtags
HANDLES = " ".join(f"@friend.{n}" for n in range(20))  # and 20 @mentions


@pytest.mark.parametrize(
    "caption, what",
    [
        (f"{TAGS} #one_more", "hashtags"),
        (f"{HANDLES} and @one_more", "@mentions"),
    ],
)
def test_a_caption_over_instagrams_hashtag_or_mention_limit_is_refused_when_scheduled(owner, caption, what):
    # Instagram refuses the container of such a caption: said at schedule, not as a post failed at its time.
    created = create_container(owner, {**VIDEO, "caption": caption})
    assert created.status_code == 201, created.content
    tiktok = make_account(owner, platform="tiktok")
    instagram = make_account(owner, platform="instagram")
    targets = [{"socialAccountId": tiktok.pk, "mode": "publish"}, {"socialAccountId": instagram.pk, "mode": "publish"}]

    error = assert_error(schedule(owner, created.json()["id"], targets), 422, "VALIDATION")

    assert list(error["details"]["fields"]) == ["targets.1.socialAccountId"], error
    message = error["details"]["fields"]["targets.1.socialAccountId"][0]
    assert what in message and "Instagram" in message, message
    assert not ScheduledPost.objects.exists()  # all or none: the TikTok post is not created either


def test_captions_within_instagrams_hashtag_and_mention_limits_are_scheduled(owner):
    # 30 hashtags and 20 @mentions fit; what Instagram does not take for a hashtag or a mention does not count:
    # an e-mail address, a "#" inside a word, a number.
    caption = f"{TAGS}\n{HANDLES}\nWrite to press@acme.test about C# and issue #1 (#2024), 5 @ 10 each."
    created = create_container(owner, {**VIDEO, "caption": caption}).json()
    instagram = make_account(owner, platform="instagram")
    response = schedule(owner, created["id"], [{"socialAccountId": instagram.pk, "mode": "publish"}])
    assert response.status_code == 201, response.content[:300]


def test_instagrams_hashtag_and_mention_limits_leave_other_targets_alone(owner):
    # TikTok has no such limits; a managed post goes to the provider as it is; an Instagram draft is delivered to
    # the creator for manual posting, not sent to Instagram's API.
    ManagedProvider.objects.create(project=owner.project, name="Acme Boost", endpoint_url="https://boost.test/in")
    caption = f"{TAGS} #one_more {HANDLES} @one_more"
    created = create_container(owner, {**VIDEO, "caption": caption}).json()
    targets = [
        {"socialAccountId": make_account(owner, platform="tiktok").pk, "mode": "publish"},
        {"socialAccountId": make_account(owner, platform="instagram").pk, "mode": "managed"},
        {"socialAccountId": make_account(owner, platform="instagram").pk, "mode": "draft"},
    ]
    response = schedule(owner, created["id"], targets)
    assert response.status_code == 201, response.content[:300]


@pytest.mark.parametrize(
    "when",
    [
        "2026-04-20T17:00:00",  # no timezone
        lambda: f"{timezone.now() + timedelta(days=2):%Y-%m-%d}T7:00:00",  # no timezone, hour not zero-padded
        lambda: f"{_within_a_year_in_a_one_digit_month():%Y-%-m-%d}T17:00:00",  # no timezone, month not padded
        "tomorrow",
        lambda: iso(timezone.now() - timedelta(minutes=6)),
        lambda: iso(timezone.now() + timedelta(days=366)),
    ],
)
def test_scheduled_for_window_and_timezone(owner, container, when):
    account = make_account(owner)
    value = when() if callable(when) else when
    error = assert_error(
        schedule(owner, container["id"], [{"socialAccountId": account.pk, "mode": "publish"}], value), 422, "VALIDATION"
    )
    assert "scheduledFor" in error["details"]["fields"]


ARABIC_INDIC = str.maketrans("0123456789", "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669")


@pytest.mark.parametrize(
    "when",
    [
        "{day}T10:00:00\u0000Z",  # a NUL inside
        "{arabic}T10:00:00Z",  # other scripts' digits
        "{day}T10:00:00+00:60",  # read as +01:00: the post went out an hour early
        "{day}T10:00:00+05:30:15.5",  # an offset with seconds
        "{day}T10:00:00,5Z",  # a decimal comma
        "{day}T10:00:00 Z",
        "{day}T10:00Z",  # no seconds
        "{day}T10Z",
        "{day}T10:00:00+0100",
        "{day}T10:00:00+01",
        "{compact}T100000Z",  # ISO 8601's basic format
        "{week}T10:00:00Z",  # an ISO 8601 week date
        # In the grammar but no time: each was a 500
        "{year}-13-01T10:00:00Z",
        "{year}-02-30T10:00:00Z",
        "{day}T24:00:00Z",
    ],
)
def test_scheduled_for_refuses_what_is_not_rfc_3339(owner, container, when):
    # Python reads far more than RFC 3339 (API.md): other scripts' digits, a NUL, minutes of offset past 59
    # carried into the hour. Each was stored as a queued post (201), some for another time than meant.
    at = timezone.now() + timedelta(days=2)
    day, compact, week = f"{at:%Y-%m-%d}", f"{at:%Y%m%d}", f"{at:%G-W%V-%u}"
    value = when.format(day=day, arabic=day.translate(ARABIC_INDIC), compact=compact, week=week, year=at.year)
    account = make_account(owner)
    response = schedule(owner, container["id"], [{"socialAccountId": account.pk, "mode": "publish"}], value)
    error = assert_error(response, 422, "VALIDATION")
    assert list(error["details"]["fields"]) == ["scheduledFor"]
    assert "RFC 3339" in error["details"]["fields"]["scheduledFor"][0]
    assert not ScheduledPost.objects.exists()


@pytest.mark.parametrize(
    "when, said",
    [
        # RFC 3339 writes a leap second :60, which the partner read refused as "not RFC 3339": it is.
        ("{day}T23:59:60Z", "A leap second (:60) is not taken: send :59, or the next minute's :00."),
        # Past year 9999 once in UTC: the framework's "Datetime value out of range." spoke of no range.
        ("9999-12-31T23:30:00-01:00", "Must fall within the years 0001 to 9999 once converted to UTC."),
        ("0001-01-01T00:30:00+01:00", "Must fall within the years 0001 to 9999 once converted to UTC."),
    ],
)
def test_scheduled_for_in_the_grammar_but_not_taken_says_why(owner, container, when, said):
    day = f"{timezone.now() + timedelta(days=2):%Y-%m-%d}"
    account = make_account(owner)
    target = {"socialAccountId": account.pk, "mode": "publish"}
    error = assert_error(schedule(owner, container["id"], [target], when.format(day=day)), 422, "VALIDATION")
    assert error["details"]["fields"] == {"scheduledFor": [said]}
    assert not ScheduledPost.objects.exists()


@pytest.mark.parametrize(
    "when, stored",
    [
        ("{day}T10:00:00Z", "{day}T10:00:00.000Z"),
        ("{day} 10:00:00Z", "{day}T10:00:00.000Z"),  # RFC 3339 lets a space stand for the "T"
        ("{day}t10:00:00z", "{day}T10:00:00.000Z"),
        ("{day}T10:00:00.250Z", "{day}T10:00:00.250Z"),
        # any number of digits: read to the microsecond, written (as every time is) to the millisecond
        ("{day}T10:00:00.123456789Z", "{day}T10:00:00.123Z"),
        ("{day}T12:30:00+02:30", "{day}T10:00:00.000Z"),
        ("{day}T05:00:00-05:00", "{day}T10:00:00.000Z"),
        (" {day}T10:00:00Z\n", "{day}T10:00:00.000Z"),  # surrounding whitespace, as before
    ],
)
def test_scheduled_for_takes_every_form_of_rfc_3339(owner, container, when, stored):
    day = f"{timezone.now() + timedelta(days=2):%Y-%m-%d}"
    account = make_account(owner)
    target = {"socialAccountId": account.pk, "mode": "publish"}
    response = schedule(owner, container["id"], [target], when.format(day=day))
    assert response.status_code == 201, response.content
    assert response.json()["scheduledPosts"][0]["scheduledFor"] == stored.format(day=day)


def test_scheduled_for_accepts_offsets_and_slightly_past_times(owner, container):
    account = make_account(owner)
    past = iso(timezone.now() - timedelta(minutes=4))
    assert (
        schedule(owner, container["id"], [{"socialAccountId": account.pk, "mode": "publish"}], past).status_code == 201
    )
    offset = (timezone.now() + timedelta(hours=2)).astimezone(timezone.get_fixed_timezone(120)).isoformat()
    account2 = make_account(owner)
    assert (
        schedule(owner, container["id"], [{"socialAccountId": account2.pk, "mode": "draft"}], offset).status_code == 201
    )
    # RFC 3339 allows a lower-case "t" and "z"
    when = (timezone.now() + timedelta(hours=3)).replace(microsecond=0)
    lower = iso(when).replace("T", "t").replace("Z", "z")
    response = schedule(owner, container["id"], [{"socialAccountId": make_account(owner).pk, "mode": "draft"}], lower)
    assert response.status_code == 201, response.content
    assert response.json()["scheduledPosts"][0]["scheduledFor"] == iso(when)


def test_empty_and_duplicate_targets_are_422(owner, container):
    account = make_account(owner)
    assert_error(schedule(owner, container["id"], []), 422, "VALIDATION")
    response = schedule(owner, container["id"], [{"socialAccountId": account.pk, "mode": "publish"}] * 2)
    assert "targets.1.socialAccountId" in assert_error(response, 422, "VALIDATION")["details"]["fields"]


def test_cancel_only_queued_posts(owner, container):
    account = make_account(owner)
    post = schedule(owner, container["id"], [{"socialAccountId": account.pk, "mode": "publish"}]).json()[
        "scheduledPosts"
    ][0]

    canceled = owner.client.delete(f"/v1/scheduled-posts/{post['id']}")
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    assert_error(owner.client.delete(f"/v1/scheduled-posts/{post['id']}"), 409, "POST_NOT_CANCELABLE")
    ScheduledPost.objects.filter(pk=post["id"]).update(status="publishing")
    assert_error(owner.client.delete(f"/v1/scheduled-posts/{post['id']}"), 409, "POST_NOT_CANCELABLE")


def test_scheduled_post_list_filters_and_tenancy(owner, outsider, container):
    a, b = make_account(owner), make_account(owner)
    schedule(
        owner,
        container["id"],
        [{"socialAccountId": a.pk, "mode": "publish"}, {"socialAccountId": b.pk, "mode": "draft"}],
    )
    url = f"/v1/projects/{owner.project.id}/scheduled-posts"

    assert len(owner.client.get(url).json()["data"]) == 2
    only_b = owner.client.get(f"{url}?socialAccountId={b.pk}").json()["data"]
    assert [p["socialAccountId"] for p in only_b] == [b.pk]
    assert owner.client.get(f"{url}?status=published").json()["data"] == []
    assert_error(owner.client.get(f"{url}?status=bogus"), 422, "VALIDATION")
    assert_error(outsider.client.get(url), 404, "NOT_FOUND")
    post_id = only_b[0]["id"]
    assert_error(outsider.client.get(f"/v1/scheduled-posts/{post_id}"), 404, "NOT_FOUND")
    assert_error(outsider.client.delete(f"/v1/scheduled-posts/{post_id}"), 404, "NOT_FOUND")
    assert_error(outsider.client.get(f"/v1/content/{container['id']}"), 404, "NOT_FOUND")
    c_post = outsider.client.post(
        f"/v1/content/{container['id']}/schedule", {"targets": [], "scheduledFor": soon()}, format="json"
    )
    assert_error(c_post, 404, "NOT_FOUND")
    assert ScheduledPost.objects.get(pk=post_id).status == "queued"


@pytest.mark.parametrize("kind", ["malformed", "wrong_type", "upper_case", "unknown", "other_org", "other_project"])
def test_the_social_account_filter_refuses_an_account_it_can_never_match(owner, outsider, kind):
    # Every list answers an unknown filter value 422 (the OpenAPI "Lists"), as `?status=Queued` is: an id
    # that names no account of this project used to answer an empty page, which a dashboard reads as "this
    # account has no posts" when the partner sent the wrong id.
    value = {
        "malformed": "sa_nope",
        "wrong_type": "sp_0b21897a21cd4819a306b5f7d8fe4b68",
        "upper_case": make_account(owner).pk.upper(),
        "unknown": "sa_00000000-0000-0000-0000-000000000000",
        "other_org": make_account(outsider).pk,
        "other_project": make_account(owner, project=owner.projects[1]).pk,
    }[kind]
    url = f"/v1/projects/{owner.project.id}/scheduled-posts"
    error = assert_error(owner.client.get(url, {"socialAccountId": value}), 422, "VALIDATION")
    assert list(error["details"]["fields"]) == ["socialAccountId"]
    # Under another organization's project the answer stays 404, as for every other bad input there.
    assert_error(outsider.client.get(url, {"socialAccountId": value}), 404, "NOT_FOUND")


def test_the_social_account_filter_takes_an_account_of_the_project_with_no_posts_or_disconnected(owner, container):
    quiet = make_account(owner)
    gone = make_account(owner, status="disconnected")
    url = f"/v1/projects/{owner.project.id}/scheduled-posts"
    for account in (quiet, gone):
        response = owner.client.get(url, {"socialAccountId": account.pk})
        assert response.status_code == 200 and response.json()["data"] == [], response.content


def test_list_query_count_does_not_grow_with_page_size(owner, container):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    accounts = [make_account(owner) for _ in range(12)]
    schedule(owner, container["id"], [{"socialAccountId": a.pk, "mode": "publish"} for a in accounts])
    counts = []
    for limit in (2, 12):
        with CaptureQueriesContext(connection) as ctx:
            assert (
                len(owner.client.get(f"/v1/projects/{owner.project.id}/scheduled-posts?limit={limit}").json()["data"])
                == limit
            )
        counts.append(len(ctx.captured_queries))
    assert counts[0] == counts[1]
    for limit in (2, 12):
        with CaptureQueriesContext(connection) as ctx:
            owner.client.get(f"/v1/projects/{owner.project.id}/social-accounts?limit={limit}")
        counts.append(len(ctx.captured_queries))
    assert counts[2] == counts[3]


def test_published_posts_list_query_count_does_not_grow_with_page_size(owner, container):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    accounts = [make_account(owner) for _ in range(12)]
    schedule(owner, container["id"], [{"socialAccountId": a.pk, "mode": "publish"} for a in accounts])
    ScheduledPost.objects.update(status="published", published_at=timezone.now(), external_id="x1")
    counts = []
    for limit in (2, 12):
        with CaptureQueriesContext(connection) as ctx:
            data = owner.client.get(f"/v1/projects/{owner.project.id}/posts?limit={limit}").json()["data"]
        assert len(data) == limit
        counts.append(len(ctx.captured_queries))
    assert counts[0] == counts[1]


def test_a_project_moved_to_another_organization_does_not_open_the_first_ones_accounts(owner, outsider):
    """The admin no longer moves a project, but a project whose organization changed under its accounts (an
    UPDATE by hand, an old admin session) must not let the new organization schedule the old one's accounts:
    the targets are looked up in the container's organization too, and such an account is unknown to it."""
    from accounts.models import Project

    victim = make_account(owner)
    Project.objects.filter(pk=owner.project.pk).update(organization=outsider.org)
    created = create_container(outsider, project=owner.project)
    assert created.status_code == 201, created.content

    response = schedule(outsider, created.json()["id"], [{"socialAccountId": victim.pk, "mode": "publish"}])

    error = assert_error(response, 422, "VALIDATION")
    assert list(error["details"]["fields"]) == ["targets.0.socialAccountId"]
    assert not ScheduledPost.objects.filter(social_account=victim).exists()
