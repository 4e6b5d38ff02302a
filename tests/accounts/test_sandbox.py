"""The platform sandbox itself: the consent page, the wire envelopes it answers, its control endpoints and
state machines, as a client that is not ours would see them (django.test.Client, raw HTTP)."""

import json
import struct
import zlib
from datetime import timedelta
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
import time_machine
from django.test import Client
from django.utils import timezone

from accounts.platforms import get_client
from accounts.platforms.base import MediaItem
from accounts.platforms.http import InProcessWSGIHandler, platform_http_client
from accounts.platforms.sandbox import avatars, publishing
from accounts.platforms.sandbox.identities import instagram_user_id, tiktok_open_id
from accounts.platforms.sandbox.models import Post
from tests.platform_helpers import (
    callback_uri,
    connect,
    consent,
    inject_fault,
    invalidate_tokens,
    redirect_params,
    sandbox_control,
    sandbox_posts,
)

TT = "/sandbox/tiktok"
IG_GRAPH = "/sandbox/instagram/graph/v23.0"


def tiktok_authorize(**overrides) -> str:
    params = {
        "client_key": "sandbox-tiktok-client",
        "scope": "user.info.basic,video.publish",
        "response_type": "code",
        "redirect_uri": "https://app.layers.test/oauth/tiktok/callback",
        "state": "abc",
        **overrides,
    }
    return f"{TT}/v2/auth/authorize/?{urlencode({k: v for k, v in params.items() if v is not None})}"


def instagram_authorize(**overrides) -> str:
    params = {
        "client_id": "sandbox-instagram-client",
        "scope": "instagram_business_basic,instagram_business_content_publish",
        "response_type": "code",
        "redirect_uri": "https://app.layers.test/oauth/instagram/callback",
        "state": "xyz",
        **overrides,
    }
    return f"/sandbox/instagram/oauth/authorize?{urlencode({k: v for k, v in params.items() if v is not None})}"


def bearer(token: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def tt_post(path: str, token: str, body: dict | None = None):
    return Client().post(f"{TT}{path}", json.dumps(body or {}), content_type="application/json", **bearer(token))


# --- Consent page ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        tiktok_authorize(layers_usage_note="Acme posts for you"),
        instagram_authorize(layers_usage_note="Acme posts for you"),
    ],
)
def test_consent_page_shows_the_app_the_scopes_the_note_and_the_form(db, url):
    page = Client().get(url)

    html = page.content.decode()
    assert page.status_code == 200
    assert 'name="username"' in html and 'type="text"' in html
    assert html.count('name="decision"') == 2 and 'value="approve"' in html and 'value="deny"' in html
    assert "Acme posts for you" in html
    assert ("video.publish" in html) or ("instagram_business_content_publish" in html)
    assert "<script" not in html and "https://" not in html.split("</head>")[0]  # self-contained, no CDN


def test_consent_form_needs_no_csrf_token_and_no_api_key(db):
    browser = Client(enforce_csrf_checks=True)

    answer = browser.post(tiktok_authorize(), {"username": "jane", "decision": "approve"})

    assert answer.status_code == 302


def test_tiktok_approval_redirects_with_code_scopes_and_state(db):
    answer = Client().post(tiktok_authorize(), {"username": "@Jane", "decision": "approve"})

    parts = urlsplit(answer["Location"])
    params = redirect_params(answer["Location"])
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "https://app.layers.test/oauth/tiktok/callback"
    assert params["state"] == "abc" and params["scopes"] == "user.info.basic,video.publish"
    assert "*" in params["code"] and "!" in params["code"]  # TikTok codes need URL-decoding
    assert not parts.fragment


def test_instagram_approval_redirects_with_code_state_and_the_fragment(db):
    answer = Client().post(instagram_authorize(), {"username": "jane", "decision": "approve"})

    assert answer["Location"].endswith("#_")
    params = redirect_params(answer["Location"])
    assert set(params) == {"code", "state"} and params["state"] == "xyz"


@pytest.mark.parametrize(
    "url",
    [
        tiktok_authorize(client_key="someone-else"),
        tiktok_authorize(response_type="token"),
        tiktok_authorize(redirect_uri=None),
        tiktok_authorize(redirect_uri="https://app.layers.test/cb?x=1"),  # TikTok: no query allowed
        tiktok_authorize(redirect_uri="javascript:alert(1)"),
        tiktok_authorize(scope="user.info.basic,instagram_business_basic"),
        instagram_authorize(client_id="someone-else"),
        instagram_authorize(redirect_uri="https://app.layers.test/cb#frag"),
        instagram_authorize(scope=""),
    ],
)
def test_consent_refuses_bad_authorize_requests_without_redirecting(db, url):
    for answer in (Client().get(url), Client().post(url, {"username": "jane", "decision": "approve"})):
        assert answer.status_code == 400
        assert "Location" not in answer


@pytest.mark.parametrize("authorize", [tiktok_authorize, instagram_authorize])
@pytest.mark.parametrize("redirect_uri", ["http://[abc/cb", "https://[::1/cb", "https://app.layers.test]/cb"])
def test_consent_answers_an_unreadable_redirect_uri_with_its_page_not_a_server_error(db, redirect_uri, authorize):
    # Reading such a URI's host raised ValueError (Invalid IPv6 URL): a 500 instead of the page's own 400.
    url = authorize(redirect_uri=redirect_uri)
    for answer in (Client().get(url), Client().post(url, {"decision": "deny"})):
        assert answer.status_code == 400
        assert "redirect_uri is missing or not valid" in answer.content.decode()
        assert "Location" not in answer


@pytest.mark.parametrize("form", [{"username": "no spaces allowed", "decision": "approve"}, {"username": "jane"}])
def test_consent_redisplays_the_form_for_a_bad_submission(db, form):
    answer = Client().post(tiktok_authorize(), form)

    assert answer.status_code == 400
    assert 'name="username"' in answer.content.decode()


def test_instagram_redirect_uri_with_a_query_keeps_it(db):
    answer = Client().post(
        instagram_authorize(redirect_uri="https://app.layers.test/cb?tenant=1"), {"username": "j_1", "decision": "deny"}
    )

    assert answer["Location"].startswith("https://app.layers.test/cb?tenant=1&error=access_denied&")


# --- Identities and tokens -------------------------------------------------------------------------------


def test_platform_ids_derive_from_the_handle_only():
    assert tiktok_open_id("jane") == tiktok_open_id("jane") != tiktok_open_id("john")
    assert instagram_user_id("jane").isdigit() and instagram_user_id("jane").startswith("17841")
    assert instagram_user_id("jane") != instagram_user_id("john")


def test_tiktok_invalid_token_answers_the_v2_envelope_with_401(db):
    tokens = connect("tiktok", "envelope")
    invalidate_tokens("tiktok", "envelope")

    answer = Client().get(f"{TT}/v2/user/info/?fields=open_id", **bearer(tokens.access_token))
    refresh = Client().post(
        f"{TT}/v2/oauth/token/",
        {
            "client_key": "sandbox-tiktok-client",
            "client_secret": "sandbox-tiktok-secret",
            "grant_type": "refresh_token",
            "refresh_token": tokens.refresh_token,
        },
    )

    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "access_token_invalid" and answer.json()["error"]["log_id"]
    assert refresh.json()["error"] == "invalid_grant"


def test_instagram_invalidated_token_answers_190_463_with_http_400(db):
    tokens = connect("instagram", "ig_envelope")
    invalidate_tokens("instagram", "ig_envelope")

    answer = Client().get(f"{IG_GRAPH}/me", {"fields": "user_id", "access_token": tokens.access_token})

    assert answer.status_code == 400
    error = answer.json()["error"]
    assert (error["code"], error["error_subcode"], error["type"]) == (190, 463, "OAuthException")
    assert error["fbtrace_id"]


def test_instagram_me_answers_both_ids_and_accepts_any_version_or_a_bearer_header(db):
    tokens = connect("instagram", "versions")

    for path in ("/sandbox/instagram/graph/v21.0/me", "/sandbox/instagram/graph/me"):
        answer = Client().get(path, {"fields": "user_id,username"}, **bearer(tokens.access_token))
        assert answer.status_code == 200
        body = answer.json()
        assert body["user_id"] == instagram_user_id("versions") != body["id"]
        assert body["username"] == "versions"


def test_instagram_unknown_field_is_a_graph_error(db):
    tokens = connect("instagram", "fields")

    answer = Client().get(f"{IG_GRAPH}/me", {"fields": "email", "access_token": tokens.access_token})

    assert answer.status_code == 400 and answer.json()["error"]["code"] == 100


def test_tiktok_user_info_without_the_profile_scope_cannot_read_the_username(db):
    client = get_client("tiktok")
    uri = callback_uri("tiktok")
    url = client.authorize_url(state="s", redirect_uri=uri, scopes=["user.info.basic"])
    code = redirect_params(consent("tiktok", url, "narrow"))["code"]
    tokens = client.exchange_code(code=code, redirect_uri=uri)

    basic = Client().get(f"{TT}/v2/user/info/?fields=open_id,display_name", **bearer(tokens.access_token))
    profile = Client().get(f"{TT}/v2/user/info/?fields=username", **bearer(tokens.access_token))
    publish = tt_post("/v2/post/publish/creator_info/query/", tokens.access_token)

    assert basic.json()["data"]["user"] == {"open_id": tiktok_open_id("narrow"), "display_name": "Narrow"}
    # TikTok's v2 error codes: a field the token's scopes do not cover is scope_permission_missed (400, "some fields
    # need additional scopes"); an endpoint the token has no scope for, scope_not_authorized (401).
    assert profile.status_code == 400 and profile.json()["error"]["code"] == "scope_permission_missed"
    assert publish.status_code == 401 and publish.json()["error"]["code"] == "scope_not_authorized"


# --- Avatars ---------------------------------------------------------------------------------------------


def test_avatar_is_a_real_png_in_the_handles_colour(db):
    data = avatars.png("jane")

    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (64, 64)
    idat_length = struct.unpack(">I", data[33:37])[0]
    pixels = zlib.decompress(data[41 : 41 + idat_length])
    assert len(pixels) == 64 * (1 + 64 * 3)
    assert avatars.png("jane") == data != avatars.png("john")


def test_avatar_with_a_forged_signature_is_forbidden(db):
    good = f"{TT}/avatar/jane.png?x-expires={int(timezone.now().timestamp()) + 60}&x-signature=forged"

    assert Client().get(good).status_code == 403
    assert Client().get(f"{TT}/avatar/jane.png").status_code == 403


# --- Control endpoints -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "body", "field"),
    [
        ("faults", {"username": "jane", "kind": "meteor", "count": 1}, "kind"),
        ("faults", {"username": "jane", "kind": "timeout", "count": 0}, "count"),
        ("faults", {"username": "jane", "kind": "timeout", "count": True}, "count"),
        ("faults", {"kind": "timeout"}, "username"),
        ("invalidate-tokens", {"username": ""}, "username"),
        ("invalidate-tokens", {"username": 12}, "username"),
    ],
)
def test_control_endpoints_refuse_bad_bodies_with_422(db, action, body, field):
    answer = sandbox_control("tiktok", action, body)

    assert answer.status_code == 422
    assert field in answer.json()["fields"]


def test_control_endpoint_refuses_a_body_that_is_not_a_json_object(db):
    answer = Client().post(f"{TT}/_control/faults", "[1]", content_type="application/json")

    assert answer.status_code == 422


DEEP = "[" * 5000 + "]" * 5000


@pytest.mark.parametrize(
    "path",
    [
        f"{TT}/_control/faults",
        f"{TT}/_control/invalidate-tokens",
        f"{TT}/_control/deauthorize",
        f"{TT}/_control/stall",
        "/sandbox/instagram/_control/faults",
        f"{IG_GRAPH}/me/media",
    ],
)
def test_a_body_nested_too_deeply_for_python_is_refused_not_a_server_error(db, path):
    # "[[[[…" a few thousand deep stops Python's JSON decoder with a RecursionError, not a ValueError:
    # it was an HTML 500 where any other body that is not a JSON object is the endpoint's own refusal.
    answer = Client(raise_request_exception=False).post(path, DEEP, content_type="application/json")

    assert answer.status_code in (400, 422), answer.status_code
    assert answer["Content-Type"] == "application/json"


def test_the_platform_endpoints_refuse_json_nested_too_deeply_as_the_platform_would(db):
    tiktok = connect("tiktok", "deep_json", scopes=["user.info.basic", "video.publish"])
    answer = Client(raise_request_exception=False).post(
        f"{TT}/v2/post/publish/video/init/", DEEP, content_type="application/json", **bearer(tiktok.access_token)
    )
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_params"

    instagram = connect("instagram", "ig_deep_json")
    path = f"{IG_GRAPH}/{instagram.platform_user_id}/layers_draft_deliveries"
    answer = Client(raise_request_exception=False).post(
        path, {"media_type": "video", "media": DEEP, "access_token": instagram.access_token}
    )
    assert answer.status_code == 400 and answer.json()["error"]["code"] == 100
    assert sandbox_posts("instagram", "ig_deep_json") == []


def test_invalidate_tokens_reports_how_many_died(db):
    connect("instagram", "counted")

    answer = sandbox_control("instagram", "invalidate-tokens", {"username": "Counted"})

    # the short-lived token of the code exchange and the long-lived one
    assert answer.json() == {"username": "counted", "invalidated": 2}


def test_posts_control_endpoint_lists_what_was_received(db):
    tokens = connect("tiktok", "lister")
    result = get_client("tiktok").publish(
        access_token=tokens.access_token,
        platform_user_id=tokens.platform_user_id,
        mode="publish",
        media_type="video",
        media=[MediaItem(url="https://cdn.layers.test/a.mp4", kind="video")],
        caption="Listed",
    )

    answer = Client().get(f"{TT}/_control/posts", {"username": "lister"})
    others = Client().get(f"{TT}/_control/posts", {"username": "nobody"})

    assert [(p["publishId"], p["caption"], p["kind"]) for p in answer.json()["data"]] == [
        (result.publish_id, "Listed", "post")
    ]
    assert others.json() == {"data": []}


def test_a_reject_fault_waits_for_a_content_call(db):
    tokens = connect("tiktok", "patient_reject")
    inject_fault("tiktok", "patient_reject", "reject")
    inject_fault("tiktok", "patient_reject", "server_error")

    first = Client().get(f"{TT}/v2/user/info/?fields=open_id", **bearer(tokens.access_token))
    second = Client().get(f"{TT}/v2/user/info/?fields=open_id", **bearer(tokens.access_token))
    init = tt_post(
        "/v2/post/publish/video/init/",
        tokens.access_token,
        {
            "post_info": {"title": "t", "privacy_level": "PUBLIC_TO_EVERYONE"},
            "source_info": {"source": "PULL_FROM_URL", "video_url": "https://cdn.layers.test/v.mp4"},
        },
    )

    assert first.status_code == 500 and first.json()["error"]["code"] == "internal_error"
    assert second.status_code == 200
    assert init.status_code == 200
    assert sandbox_posts("tiktok", "patient_reject")[0].fail_reason == "spam_risk"


def test_an_instagram_container_error_fault_fails_the_next_container_on_instagrams_side(db):
    tokens = connect("instagram", "ig_hiccup")
    uid = tokens.platform_user_id
    inject_fault("instagram", "ig_hiccup", "container_error")

    def container(url: str) -> str:
        made = Client().post(f"{IG_GRAPH}/{uid}/media", {"image_url": url, "access_token": tokens.access_token})
        assert made.status_code == 200, made.content  # accepted: the failure shows in the container's status
        return made.json()["id"]

    profile = Client().get(f"{IG_GRAPH}/me", {"fields": "user_id", "access_token": tokens.access_token})
    failed, fine = container("https://cdn.layers.test/a.jpg"), container("https://cdn.layers.test/b.jpg")

    def status(ig_id: str) -> dict:
        query = {"fields": "status_code,status", "access_token": tokens.access_token}
        return Client().get(f"{IG_GRAPH}/{ig_id}", query).json()

    assert profile.status_code == 200  # not a content call: the fault waits for one
    assert status(failed)["status_code"] == "ERROR" and "error code 2207001" in status(failed)["status"]
    assert status(fine)["status_code"] == "FINISHED"


def test_an_instagram_container_that_failed_for_its_media_answers_the_documented_bare_subcode(db):
    """Meta's IG Container reference: "If status_code is ERROR, this value will be an error subcode". The
    container_error fault above answers the sentence seen in practice; media failures answer the subcode."""
    tokens = connect("instagram", "ig_broken_media")
    uid = tokens.platform_user_id
    broken = _ig_create(tokens.access_token, uid, image_url="https://cdn.layers.test/invalid.jpg").json()["id"]

    def status(ig_id: str) -> dict:
        query = {"fields": "status_code,status", "access_token": tokens.access_token}
        return Client().get(f"{IG_GRAPH}/{ig_id}", query).json()

    with time_machine.travel(timezone.now() + timedelta(seconds=5)):
        assert status(broken) == {"id": broken, "status_code": "ERROR", "status": "2207052"}


def test_an_instagram_reject_fault_refuses_the_media_publish_as_meta_does_not_the_container(db):
    """Meta sends 2207051 ("The publishing action is suspected to be spam", with code 4) as the answer to the
    publishing call (Instagram Platform > Error Codes, https://developers.facebook.com/docs/instagram-platform/
    instagram-graph-api/reference/error-codes); the sandbox failed the container with it instead (status ERROR,
    "2207051"), a shape no client meets live. The container is accepted and finishes; media_publish of it is
    refused once, and it is still unpublished."""
    tokens = connect("instagram", "ig_spammy")
    uid = tokens.platform_user_id
    inject_fault("instagram", "ig_spammy", "reject")
    made = _ig_create(tokens.access_token, uid, image_url="https://cdn.layers.test/fine.jpg")

    def status(ig_id: str) -> dict:
        query = {"fields": "status_code", "access_token": tokens.access_token}
        return Client().get(f"{IG_GRAPH}/{ig_id}", query).json()

    with time_machine.travel(timezone.now() + timedelta(seconds=5)):
        container = made.json()["id"]
        finished = status(container)
        refused = _ig_publish(tokens.access_token, uid, container)
        after = status(container)
        again = _ig_publish(tokens.access_token, uid, container)

    assert made.status_code == 200 and finished["status_code"] == "FINISHED", (made.content, finished)
    assert refused.status_code == 400, refused.content
    error = refused.json()["error"]
    assert (error["code"], error["error_subcode"], error["type"]) == (4, 2207051, "OAuthException"), error
    assert "suspected to be spam" in error["message"] or "restrict certain activity" in error["message"], error
    assert after["status_code"] == "FINISHED", after  # nothing was published
    # One call refused (count 1): the next media_publish goes through, once.
    assert again.status_code == 200 and [p.external_id for p in sandbox_posts("instagram", "ig_spammy")] == [
        again.json()["id"]
    ]


SOURCE = {"source": "PULL_FROM_URL", "video_url": "https://cdn.layers.test/v.mp4"}
PHOTOS = {"source": "PULL_FROM_URL", "photo_images": ["https://cdn.layers.test/p.jpg"], "photo_cover_index": 0}


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v2/post/publish/creator_info/query/", None),
        ("/v2/post/publish/video/init/", {"post_info": {"privacy_level": "SELF_ONLY"}, "source_info": SOURCE}),
        ("/v2/post/publish/inbox/video/init/", {"source_info": SOURCE}),
        (
            "/v2/post/publish/content/init/",
            {"media_type": "PHOTO", "post_mode": "MEDIA_UPLOAD", "post_info": {}, "source_info": PHOTOS},
        ),
        ("/v2/post/publish/status/fetch/", "publish_id"),
        ("/v2/video/query/?fields=id", {"filters": {"video_ids": ["7000"]}}),
    ],
)
def test_tiktok_json_endpoints_refuse_a_post_that_is_not_json(db, path, body):
    """TikTok documents every Content Posting and video query call with `Content-Type: application/json;
    charset=UTF-8` (creator_info too, which has no body): the sandbox refuses other requests, so a client
    that stopped sending it would fail here as it would on TikTok."""
    tokens = connect(
        "tiktok", "content_typed", scopes=["user.info.basic", "video.publish", "video.upload", "video.list"]
    )
    if body == "publish_id":
        body = {"publish_id": video_init(tokens)}
    raw = json.dumps(body).encode() if body is not None else b""
    auth = bearer(tokens.access_token)

    def send(content_type: str | None):
        # as META, so that it is sent without a body too (creator_info)
        extra = {"CONTENT_TYPE": content_type} if content_type else {}
        return Client().generic("POST", f"{TT}{path}", raw, **extra, **auth)

    refused = [send(None), send("text/plain"), send("application/x-www-form-urlencoded")]
    accepted = [send("application/json; charset=UTF-8"), send("application/json")]

    for answer in refused:
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_params", answer.content
    for answer in accepted:
        assert answer.status_code == 200 and answer.json()["error"]["code"] == "ok", answer.content


def test_a_container_error_fault_is_instagrams_only(db):
    answer = sandbox_control("tiktok", "faults", {"username": "someone", "kind": "container_error"})
    assert answer.status_code == 422 and "kind" in answer.content.decode()


def test_tiktok_counts_a_title_in_utf16_code_units(db):
    tokens = connect("tiktok", "emoji_title")

    def init(title: str):
        return tt_post(
            "/v2/post/publish/video/init/",
            tokens.access_token,
            {
                "post_info": {"title": title, "privacy_level": "PUBLIC_TO_EVERYONE"},
                "source_info": {"source": "PULL_FROM_URL", "video_url": "https://cdn.layers.test/v.mp4"},
            },
        )

    too_long, fits = init("\U0001f680" * 1101), init("\U0001f680" * 1100)  # 2202 and 2200 code units

    assert too_long.status_code == 400 and too_long.json()["error"]["code"] == "invalid_params"
    assert fits.status_code == 200, fits.content


def test_a_timeout_fault_raises_a_real_httpx_timeout_in_process(db):
    tokens = connect("tiktok", "slowpoke")
    inject_fault("tiktok", "slowpoke", "timeout")

    with platform_http_client() as http, pytest.raises(httpx.ReadTimeout):
        http.get(
            "http://127.0.0.1:8000/sandbox/tiktok/v2/user/info/",
            params={"fields": "open_id"},
            headers={"Authorization": f"Bearer {tokens.access_token}"},
        )


def test_in_process_calls_keep_the_callers_transaction_and_connection(db):
    connect("tiktok", "txn")
    from django.db import connection

    assert connection.in_atomic_block  # the test transaction survived the in-process requests
    assert Post.objects.count() == 0


def test_in_process_handler_answers_sandbox_errors_as_responses_not_exceptions(db):
    with httpx.Client(transport=httpx.WSGITransport(app=InProcessWSGIHandler())) as http:
        answer = http.post("http://127.0.0.1:8000/sandbox/tiktok/v2/post/publish/status/fetch/", json={})

    assert answer.status_code == 401 and answer.json()["error"]["code"] == "access_token_invalid"


# --- Publish state machines ------------------------------------------------------------------------------


def test_tiktok_private_post_completes_without_a_public_post_id(db):
    tokens = connect("tiktok", "private_poster")
    init = tt_post(
        "/v2/post/publish/video/init/",
        tokens.access_token,
        {
            "post_info": {"title": "only me", "privacy_level": "SELF_ONLY"},
            "source_info": {"source": "PULL_FROM_URL", "video_url": "https://cdn.layers.test/v.mp4"},
        },
    )
    publish_id = init.json()["data"]["publish_id"]

    fetched = tt_post("/v2/post/publish/status/fetch/", tokens.access_token, {"publish_id": publish_id}).json()
    status = get_client("tiktok").publish_status(
        access_token=tokens.access_token, platform_user_id=tokens.platform_user_id, publish_id=publish_id
    )

    assert fetched["data"]["status"] == "PUBLISH_COMPLETE"
    assert fetched["data"]["publicaly_available_post_id"] == []
    assert status.state == "published" and status.external_id is None


def test_tiktok_init_refuses_a_privacy_level_outside_the_options_and_file_upload(db):
    tokens = connect("tiktok", "strict")
    source = {"source": "PULL_FROM_URL", "video_url": "https://cdn.layers.test/v.mp4"}

    bad_privacy = tt_post(
        "/v2/post/publish/video/init/",
        tokens.access_token,
        {"post_info": {"privacy_level": "EVERYONE"}, "source_info": source},
    )
    file_upload = tt_post(
        "/v2/post/publish/video/init/",
        tokens.access_token,
        {"post_info": {"privacy_level": "SELF_ONLY"}, "source_info": {"source": "FILE_UPLOAD", "video_size": 10}},
    )
    unknown = tt_post("/v2/post/publish/status/fetch/", tokens.access_token, {"publish_id": "v_pub_url~nope"})

    assert bad_privacy.status_code == 403 and bad_privacy.json()["error"]["code"] == "privacy_level_option_mismatch"
    assert file_upload.status_code == 400 and file_upload.json()["error"]["code"] == "invalid_params"
    assert unknown.status_code == 400
    assert sandbox_posts("tiktok", "strict") == []


def video_init(tokens) -> str:
    """A public TikTok video post started through the sandbox: its publish_id."""
    init = tt_post(
        "/v2/post/publish/video/init/",
        tokens.access_token,
        {
            "post_info": {"title": "t", "privacy_level": "PUBLIC_TO_EVERYONE"},
            "source_info": {"source": "PULL_FROM_URL", "video_url": "https://cdn.layers.test/v.mp4"},
        },
    )
    return init.json()["data"]["publish_id"]


def test_tiktok_status_moves_from_processing_to_complete_after_the_delay(db, settings):
    settings.LAYERS_SANDBOX_PUBLISH_DELAY_SECONDS = 2
    tokens = connect("tiktok", "stepper")
    body = {"publish_id": video_init(tokens)}

    before = tt_post("/v2/post/publish/status/fetch/", tokens.access_token, body).json()["data"]
    with time_machine.travel(timezone.now() + timedelta(seconds=3)):
        after = tt_post("/v2/post/publish/status/fetch/", tokens.access_token, body).json()["data"]

    assert before["status"] == "PROCESSING_DOWNLOAD" and "publicaly_available_post_id" not in before
    assert after["status"] == "PUBLISH_COMPLETE"
    assert str(after["publicaly_available_post_id"][0]) == sandbox_posts("tiktok", "stepper")[0].external_id


def test_tiktok_public_post_id_is_filled_only_after_moderation(db, settings):
    settings.LAYERS_SANDBOX_TIKTOK_MODERATION_SECONDS = 60
    tokens = connect("tiktok", "moderated")
    body = {"publish_id": video_init(tokens)}

    complete = tt_post("/v2/post/publish/status/fetch/", tokens.access_token, body).json()["data"]
    with time_machine.travel(timezone.now() + timedelta(seconds=61)):
        moderated = tt_post("/v2/post/publish/status/fetch/", tokens.access_token, body).json()["data"]

    # PLATFORMS.md: the post is live at PUBLISH_COMPLETE, its public id comes after moderation.
    assert complete["status"] == "PUBLISH_COMPLETE" and complete["publicaly_available_post_id"] == []
    assert moderated["status"] == "PUBLISH_COMPLETE"
    assert str(moderated["publicaly_available_post_id"][0]) == sandbox_posts("tiktok", "moderated")[0].external_id


def _ig_create(token: str, user_id: str, **params):
    return Client().post(f"{IG_GRAPH}/{user_id}/media", {**params, "access_token": token})


def _ig_publish(token: str, user_id: str, creation_id: str):
    return Client().post(f"{IG_GRAPH}/{user_id}/media_publish", {"creation_id": creation_id, "access_token": token})


def test_instagram_container_cannot_be_published_before_it_is_finished(db, settings):
    settings.LAYERS_SANDBOX_PUBLISH_DELAY_SECONDS = 10
    tokens = connect("instagram", "too_early")
    uid = tokens.platform_user_id
    container = _ig_create(tokens.access_token, uid, image_url="https://cdn.layers.test/p.jpg").json()["id"]

    early = _ig_publish(tokens.access_token, uid, container)
    status = Client().get(f"{IG_GRAPH}/{container}", {"fields": "status_code", "access_token": tokens.access_token})

    error = early.json()["error"]
    assert (early.status_code, error["code"], error["error_subcode"]) == (400, 9007, 2207027)
    assert status.json() == {"status_code": "IN_PROGRESS", "id": container}
    with time_machine.travel(timezone.now() + timedelta(seconds=11)):
        assert _ig_publish(tokens.access_token, uid, container).status_code == 200


def test_instagram_refuses_a_second_media_publish_of_one_container(db):
    tokens = connect("instagram", "twice")
    uid = tokens.platform_user_id
    container = _ig_create(tokens.access_token, uid, image_url="https://cdn.layers.test/p.jpg").json()["id"]

    first = _ig_publish(tokens.access_token, uid, container)
    second = _ig_publish(tokens.access_token, uid, container)
    status = Client().get(f"{IG_GRAPH}/{container}", {"fields": "status_code", "access_token": tokens.access_token})

    assert first.status_code == 200
    assert second.status_code == 400 and "error" in second.json()
    assert status.json()["status_code"] == "PUBLISHED"
    assert [p.external_id for p in sandbox_posts("instagram", "twice")] == [first.json()["id"]]


def test_instagram_carousel_needs_2_to_10_own_carousel_items(db):
    tokens = connect("instagram", "carousel_rules")
    other = connect("instagram", "someone_else")
    uid, token = tokens.platform_user_id, tokens.access_token
    item = _ig_create(token, uid, image_url="https://cdn.layers.test/a.jpg", is_carousel_item="true").json()["id"]
    plain = _ig_create(token, uid, image_url="https://cdn.layers.test/b.jpg").json()["id"]
    foreign = _ig_create(
        other.access_token, other.platform_user_id, image_url="https://cdn.layers.test/c.jpg", is_carousel_item="true"
    ).json()["id"]

    one = _ig_create(token, uid, media_type="CAROUSEL", children=item)
    not_items = _ig_create(token, uid, media_type="CAROUSEL", children=f"{item},{plain}")
    stolen = _ig_create(token, uid, media_type="CAROUSEL", children=f"{item},{foreign}")
    alone = _ig_publish(token, uid, item)

    for answer in (one, not_items, stolen, alone):
        assert answer.status_code == 400 and answer.json()["error"]["code"] == 100


def test_instagram_publishing_paths_of_another_account_are_refused(db):
    tokens = connect("instagram", "intruder")

    answer = _ig_create(tokens.access_token, instagram_user_id("victim"), image_url="https://cdn.layers.test/p.jpg")

    assert answer.status_code == 400
    assert (answer.json()["error"]["code"], answer.json()["error"]["error_subcode"]) == (100, 33)


def test_instagram_containers_expire_after_24_hours(db):
    tokens = connect("instagram", "forgetful")
    uid = tokens.platform_user_id
    container = _ig_create(tokens.access_token, uid, image_url="https://cdn.layers.test/p.jpg").json()["id"]

    with time_machine.travel(timezone.now() + timedelta(hours=24, seconds=1)):
        status = get_client("instagram").publish_status(
            access_token=tokens.access_token, platform_user_id=uid, publish_id=container
        )

    assert status.state == "failed" and status.fail_code == "EXPIRED"


def test_instagram_content_publishing_limit_reports_usage_and_config(db, settings):
    settings.LAYERS_SANDBOX_INSTAGRAM_QUOTA_TOTAL = 25
    tokens = connect("instagram", "quota_reader")
    uid = tokens.platform_user_id
    container = _ig_create(tokens.access_token, uid, image_url="https://cdn.layers.test/p.jpg").json()["id"]
    _ig_publish(tokens.access_token, uid, container)

    answer = Client().get(
        f"{IG_GRAPH}/{uid}/content_publishing_limit",
        {"fields": "quota_usage,config", "access_token": tokens.access_token},
    )

    assert answer.json() == {"data": [{"config": {"quota_total": 25, "quota_duration": 86400}, "quota_usage": 1}]}


def test_instagram_insights_need_the_insights_permission(db):
    client = get_client("instagram")
    uri = callback_uri("instagram")
    url = client.authorize_url(
        state="s", redirect_uri=uri, scopes=["instagram_business_basic", "instagram_business_content_publish"]
    )
    tokens = client.exchange_code(
        code=redirect_params(consent("instagram", url, "no_insights"))["code"], redirect_uri=uri
    )
    uid = tokens.platform_user_id
    container = _ig_create(tokens.access_token, uid, image_url="https://cdn.layers.test/p.jpg").json()["id"]
    media_id = _ig_publish(tokens.access_token, uid, container).json()["id"]

    denied = Client().get(f"{IG_GRAPH}/{media_id}/insights", {"metric": "views", "access_token": tokens.access_token})
    with time_machine.travel(timezone.now() + timedelta(days=2)):
        metrics = client.fetch_metrics(access_token=tokens.access_token, platform_user_id=uid, external_ids=[media_id])

    assert denied.status_code == 403 and denied.json()["error"]["code"] == 10
    # fell back to the public counts; views and shares are unknown, not 0
    assert metrics[media_id].views is None and metrics[media_id].shares is None and metrics[media_id].likes > 0


def test_instagram_insights_are_an_empty_data_set_in_a_medias_first_hour(db):
    """Meta: insights that do not exist yet or are currently unavailable are an empty data set, not 0 (they
    can be up to 48 h late). The sandbox has none in a media's first hour; its public counts are there."""
    tokens = connect("instagram", "early_insights")
    uid = tokens.platform_user_id
    container = _ig_create(tokens.access_token, uid, image_url="https://cdn.layers.test/p.jpg").json()["id"]
    with time_machine.travel(timezone.now() + timedelta(seconds=5)):
        media_id = _ig_publish(tokens.access_token, uid, container).json()["id"]
    query = {"metric": "views,likes", "access_token": tokens.access_token}
    counts = {"fields": "like_count,comments_count", "access_token": tokens.access_token}

    with time_machine.travel(timezone.now() + timedelta(minutes=50)):
        early = Client().get(f"{IG_GRAPH}/{media_id}/insights", query)
        early_counts = Client().get(f"{IG_GRAPH}/{media_id}", counts)
        metrics = get_client("instagram").fetch_metrics(
            access_token=tokens.access_token, platform_user_id=uid, external_ids=[media_id]
        )
    with time_machine.travel(timezone.now() + timedelta(hours=2)):
        later = Client().get(f"{IG_GRAPH}/{media_id}/insights", query)

    assert early.status_code == 200 and early.json() == {"data": []}
    assert early_counts.status_code == 200 and "like_count" in early_counts.json()
    assert metrics[media_id].views is None and metrics[media_id].likes == early_counts.json()["like_count"]
    assert [m["name"] for m in later.json()["data"]] == ["views", "likes"]


def test_instagram_media_list_is_newest_first_with_the_asked_fields(db):
    tokens = connect("instagram", "lister_ig")
    uid = tokens.platform_user_id
    ids = []
    for n in range(3):
        with time_machine.travel(timezone.now() + timedelta(minutes=n)):
            container = _ig_create(
                tokens.access_token, uid, image_url=f"https://cdn.layers.test/{n}.jpg", caption=f"n{n}"
            ).json()["id"]
            ids.append(_ig_publish(tokens.access_token, uid, container).json()["id"])

    answer = Client().get(
        f"{IG_GRAPH}/{uid}/media", {"fields": "id,caption", "limit": 2, "access_token": tokens.access_token}
    )

    assert answer.json() == {"data": [{"id": ids[2], "caption": "n2"}, {"id": ids[1], "caption": "n1"}]}


def test_instagram_draft_delivery_is_recorded_and_a_reject_refuses_it(db):
    tokens = connect("instagram", "ig_drafts")
    uid = tokens.platform_user_id
    media = json.dumps([{"url": "https://cdn.layers.test/v.mp4", "kind": "video"}])
    path = f"{IG_GRAPH}/{uid}/layers_draft_deliveries"

    delivered = Client().post(
        path, {"media_type": "video", "media": media, "caption": "c", "access_token": tokens.access_token}
    )
    inject_fault("instagram", "ig_drafts", "reject")
    refused = Client().post(
        path, {"media_type": "video", "media": media, "caption": "c", "access_token": tokens.access_token}
    )

    assert delivered.status_code == 200
    assert refused.status_code == 400 and refused.json()["error"]["error_subcode"] == 2207051
    assert [(p.kind, p.publish_id) for p in sandbox_posts("instagram", "ig_drafts")] == [
        ("delivery", delivered.json()["id"])
    ]


# --- Metrics ---------------------------------------------------------------------------------------------


def test_engagement_is_deterministic_and_never_decreases():
    published = timezone.now()
    with time_machine.travel(published, tick=False):
        at_zero = publishing.engagement(external_id="7123", published_at=published)
    figures = []
    for hours in (1, 6, 24, 72, 240):
        with time_machine.travel(published + timedelta(hours=hours), tick=False):
            figures.append(publishing.engagement(external_id="7123", published_at=published))
            assert figures[-1] == publishing.engagement(external_id="7123", published_at=published)

    assert at_zero["views"] == 0
    assert [f["views"] for f in figures] == sorted(f["views"] for f in figures)
    assert figures[-1]["views"] > 0 and figures[-1]["likes"] > 0


@pytest.mark.parametrize(
    "method, path, data, content_type",
    [
        ("post", "/sandbox/tiktok/v2/oauth/token/", {"grant_type": "authorization_code", "code": "a\x00b"}, None),
        (
            "post",
            "/sandbox/instagram/api/oauth/access_token",
            {"grant_type": "authorization_code", "code": "a\x00"},
            None,
        ),
        ("post", "/sandbox/tiktok/v2/post/publish/status/fetch/", json.dumps({"publish_id": "a\x00"}), "json"),
        ("post", "/sandbox/instagram/graph/v23.0/me/media_publish", {"creation_id": "1\x00"}, None),
        ("get", "/sandbox/tiktok/_control/posts", {"username": "a\x00b"}, None),
    ],
)
def test_a_nul_byte_anywhere_in_a_sandbox_request_is_a_400_not_a_500(db, method, path, data, content_type):
    client = Client(raise_request_exception=False)
    kwargs = {"content_type": "application/json"} if content_type == "json" else {}
    response = getattr(client, method)(path, data, **kwargs)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_params"


def test_a_stall_path_longer_than_the_sandbox_stores_is_a_422(db):
    response = Client(raise_request_exception=False).post(
        "/sandbox/tiktok/_control/stall", {"path": "p" * 201, "seconds": 1}, content_type="application/json"
    )
    assert response.status_code == 422 and "path" in response.json()["fields"]
