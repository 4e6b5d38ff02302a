"""What schema fuzzing (and the review around it) found, pinned as plain tests: each was a 500, an
undocumented status, or invalid input accepted."""

import json
import logging

import pytest
from django.test import Client

from accounts.models import IdempotencyKey
from tests.conftest import assert_error
from tests.hardening.routes import v1_routes
from tests.hardening.world import build


def content(tenant):
    return f"/v1/projects/{tenant.project.id}/content"


@pytest.mark.parametrize("key", [None, "deep-1"])
def test_absurdly_nested_json_is_400_not_500(owner, key):
    for n, body in enumerate(("[" * 100_000 + "]" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000)):
        headers = {"HTTP_IDEMPOTENCY_KEY": f"{key}-{n}"} if key else {}
        response = owner.client.post(content(owner), body, content_type="application/json", **headers)
        assert_error(response, 400, "MALFORMED_REQUEST")


def test_an_error_echoing_a_nul_is_answered_even_with_an_idempotency_key(owner):
    # PostgreSQL's jsonb cannot store the NUL that the 422 echoes (the unknown field's name): storing the
    # response for the Idempotency-Key used to fail after the view had answered, turning it into a 500.
    body = {"mediaType": "image", "mediaUrls": ["https://cdn.acme.test/a.jpg"], "bad\u0000field": 1}
    for _ in range(2):  # the key is forgotten, not stored: the same request is answered the same way
        response = owner.client.post(content(owner), body, format="json", HTTP_IDEMPOTENCY_KEY="nul-1")
        error = assert_error(response, 422, "VALIDATION")
        assert list(error["details"]["fields"]) == ["bad\u0000field"]
    assert not IdempotencyKey.objects.filter(organization=owner.org).exists()


def test_an_idempotency_key_with_control_characters_is_422(owner):
    body = {"mediaType": "image", "mediaUrls": ["https://cdn.acme.test/a.jpg"]}
    for key in ("a\tb", "a\x7fb", "\x1b[0m"):
        response = owner.client.post(content(owner), body, format="json", HTTP_IDEMPOTENCY_KEY=key)
        error = assert_error(response, 422, "VALIDATION")
        assert list(error["details"]["fields"]) == ["Idempotency-Key"]


def test_a_nul_in_a_free_text_filter_is_422_not_500(owner):
    error = assert_error(owner.client.get("/v1/events", {"type": "a\x00b"}), 422, "VALIDATION")
    assert list(error["details"]["fields"]) == ["type"]
    path = f"/v1/projects/{owner.project.id}/scheduled-posts"
    assert_error(owner.client.get(path, {"socialAccountId": "sa_\x00"}), 422, "VALIDATION")


def list_routes():
    """Each list of the API (a GET declaring its query parameters), with that GET."""
    for route in v1_routes():
        handler = getattr(route.view, "get", None)
        if handler is not None and getattr(handler, "query_parameters", None) is not None:
            yield route, handler


def test_lists_refuse_unknown_query_parameters_and_empty_filters(owner):
    world = build(owner, handle="query.owner")
    lists = 0
    for route, handler in list_routes():
        lists += 1
        path = route.path({name: world.ids[name] for _, name in route.params})
        error = assert_error(owner.client.get(path, {"limt": "5"}), 422, "VALIDATION")
        assert error["details"]["fields"] == {"limt": ["Unknown query parameter."]}, route.route
        for name in handler.query_parameters - {"limit", "cursor"}:
            assert owner.client.get(path, {name: "x" * 65}).status_code == 422, (route.route, name)
            if name not in ("type", "socialAccountId"):  # enums: an empty value is not one of them
                assert_error(owner.client.get(path, {name: ""}), 422, "VALIDATION")
        assert owner.client.get(path, {"limit": "1", "cursor": ""}).status_code == 200, route.route
    assert lists >= 9


def test_more_query_parameters_than_django_reads_is_400_on_every_list_and_the_docs(owner, caplog):
    # Django refuses to parse a query string of more than DATA_UPLOAD_MAX_NUMBER_FIELDS (1,000) fields: it
    # was a 500 wherever the query is read (every list, the document and its pages, open to anyone).
    many = "&".join(f"a{i}=1" for i in range(1001))
    lists = 0
    for route, _ in list_routes():
        lists += 1
        path = route.path({"projectId": owner.project.id})
        error = assert_error(owner.client.get(f"{path}?{many}"), 400, "MALFORMED_REQUEST")
        assert "1000" in error["message"], route.route
    assert lists >= 9
    anonymous = Client(raise_request_exception=False)
    assert_error(anonymous.get(f"/v1/openapi.json?{many}"), 400, "MALFORMED_REQUEST")
    for page in ("/docs/", "/docs/redoc/"):
        assert anonymous.get(f"{page}?{many}").status_code == 400, page
    # Each refusal is one line where Django logs what it refuses (django.security), never an ERROR traceback.
    refused = [r for r in caplog.records if r.name == "django.security.TooManyFieldsSent"]
    assert refused and not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_a_media_name_longer_than_the_file_system_takes_is_404_not_500(db, settings, tmp_path):
    # Production serves /media/ from a shared directory (LAYERS_MEDIA_ROOT_SHARED): a name over 255
    # characters made the file system refuse the lookup (ENAMETOOLONG), a 500 for anyone.
    settings.MEDIA_ROOT = str(tmp_path)
    (tmp_path / "avatars").mkdir()
    (tmp_path / "avatars" / "a.png").write_bytes(b"\x89PNG")
    client = Client(raise_request_exception=False)
    served = client.get("/media/avatars/a.png")
    assert served.status_code == 200 and b"".join(served.streaming_content) == b"\x89PNG"
    for name in ("a" * 256, "avatars/" + "b" * 256, "a" * 300 + "/a.png", "avatars/" * 600 + "a.png"):
        assert client.get(f"/media/{name}").status_code == 404, name[:20]


def test_json_is_answered_whatever_the_accept_header_or_format_query(owner):
    response = owner.client.get(f"/v1/projects/{owner.project.id}", HTTP_ACCEPT="text/html")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert response.json()["id"] == owner.project.id
    # `?format=` is no parameter of the API (URL_FORMAT_OVERRIDE is off): refused as any unknown one, on a
    # list and on a single object alike.
    for path in ("/v1/projects", f"/v1/projects/{owner.project.id}"):
        error = assert_error(owner.client.get(path, {"format": "xml"}), 422, "VALIDATION")
        assert error["details"]["fields"] == {"format": ["Unknown query parameter."]}, path


def test_a_reused_idempotency_key_is_a_documented_409_on_every_post(owner):
    schema = owner.client.get("/v1/openapi.json").json()
    body = {"mediaType": "image", "mediaUrls": ["https://cdn.acme.test/a.jpg"]}
    assert owner.client.post(content(owner), body, format="json", HTTP_IDEMPOTENCY_KEY="k").status_code == 201
    other = {**body, "caption": "another"}
    reused = owner.client.post(content(owner), other, format="json", HTTP_IDEMPOTENCY_KEY="k")
    assert_error(reused, 409, "IDEMPOTENCY_KEY_REUSED")
    for path, operations in schema["paths"].items():
        if "post" in operations:
            assert "IDEMPOTENCY_KEY_REUSED" in operations["post"]["responses"]["409"]["description"], path
    assert json.dumps(schema).count("IDEMPOTENCY_KEY_REUSED") >= 7


LONE_SURROGATES = [
    '{"mediaType": "\\ud800", "mediaUrls": ["https://cdn.acme.test/a.jpg"]}',  # echoed by "invalid choice"
    '{"mediaType": "image", "mediaUrls": ["https://cdn.acme.test/a.jpg"], "\\udfff": 1}',  # an unknown field
    '{"mediaType": "image", "mediaUrls": ["https://cdn.acme.test/a.jpg"], "caption": "a\\ud83d"}',  # half a pair
]


@pytest.mark.parametrize("body", LONE_SURROGATES)
@pytest.mark.django_db(transaction=True)
def test_a_lone_surrogate_is_400_and_the_idempotency_key_is_not_left_half_claimed(owner, body):
    # Python decodes "\ud800" into a string no database, log or UTF-8 encoder can take: it used to be a 500
    # (or a 422 the renderer then failed to write), and the key stayed claimed, so the retry got a 409.
    for _ in range(2):
        response = owner.client.post(content(owner), body, content_type="application/json", HTTP_IDEMPOTENCY_KEY="s-1")
        assert_error(response, 400, "MALFORMED_REQUEST")
    assert not IdempotencyKey.objects.filter(organization=owner.org).exclude(status_code__isnull=False).exists()


def test_a_real_surrogate_pair_is_text(owner):
    body = '{"mediaType": "image", "mediaUrls": ["https://cdn.acme.test/a.jpg"], "caption": "\\ud83d\\ude00"}'
    response = owner.client.post(content(owner), body, content_type="application/json")
    assert response.status_code == 201 and response.json()["caption"] == "\U0001f600"


def test_a_response_holding_a_lone_surrogate_is_still_written():
    # Nothing from a partner can carry one any more, but a platform's data is not ours to vouch for.
    from config.api.renderers import JSONRenderer

    assert json.loads(JSONRenderer().render({"handle": "x\ud800"})) == {"handle": "x\ud800"}


HUGE = "<1e309>"


def lease_body(tenant, **niche) -> dict:
    return {
        "projectId": tenant.project.id,
        "count": 1,
        "niche": {"vertical": "fitness", "language": "en-US", "geo": ["US"], **niche},
    }


@pytest.mark.parametrize(
    "path, body, field",
    [
        # DRF's text fields turned numbers into text: 1e309 was stored as the caption "inf"
        ("content", {"mediaType": "image", "mediaUrls": ["https://cdn.acme.test/a.jpg"], "caption": HUGE}, "caption"),
        ("content", {"mediaType": "image", "mediaUrls": ["https://cdn.acme.test/a.jpg"], "caption": 7}, "caption"),
        ("content", {"mediaType": "image", "mediaUrls": [7]}, "mediaUrls.0"),
        ("lease", {"niche": {"language": HUGE}}, "niche.language"),
        ("lease", {"niche": {"vertical": 2**64}}, "niche.vertical"),
        ("lease", {"niche": {"geo": ["US", 1]}}, "niche.geo.1"),
        ("lease", {"note": False}, "note"),
        # and its integer fields read text and booleans as numbers
        ("lease", {"count": "3"}, "count"),
        ("lease", {"count": "\u0661\u0662"}, "count"),  # Arabic-Indic "12"
        ("lease", {"count": True}, "count"),
        ("oauth", {"platform": "tiktok", "returnUrl": "https://app.acme.test/done", "usageNote": 5}, "usageNote"),
        ("oauth", {"platform": "tiktok", "returnUrl": "https://app.acme.test/done", "usagenote": "x"}, "usagenote"),
        ("webhook", {"url": "https://hooks.acme.test/x", "events": [1]}, "events.0"),
    ],
)
def test_a_value_of_the_wrong_json_type_is_422_and_nothing_is_stored(owner, path, body, field):
    from accounts.webhooks.models import WebhookEndpoint
    from leasing.models import LeaseRequest
    from scheduling.models import ContentContainer

    if path == "lease":
        niche = body.pop("niche", {})
        body = {**lease_body(owner, **niche), **body}
    url = {
        "content": content(owner),
        "lease": f"/v1/projects/{owner.project.id}/leased-accounts/request",
        "oauth": f"/v1/projects/{owner.project.id}/social/oauth-url",
        "webhook": "/v1/webhook-endpoints",
    }[path]
    raw = json.dumps(body).replace(json.dumps(HUGE), "1e309")  # a JSON number beyond any float
    error = assert_error(owner.client.post(url, raw, content_type="application/json"), 422, "VALIDATION")
    assert field in error["details"]["fields"], error
    assert not ContentContainer.objects.exists() and not LeaseRequest.objects.exists()
    assert not WebhookEndpoint.objects.exists()


def test_the_same_bodies_with_the_right_types_are_accepted(owner):
    assert (
        owner.client.post(
            content(owner),
            {"mediaType": "image", "mediaUrls": ["https://cdn.acme.test/a.jpg"], "caption": "7"},
            format="json",
        ).status_code
        == 201
    )
    response = owner.client.post(
        f"/v1/projects/{owner.project.id}/leased-accounts/request", {**lease_body(owner), "count": 12}, format="json"
    )
    assert response.status_code == 202, response.content
