"""A single-valued input sent more than once is refused, not silently read as one of its copies.

`?limit=1&limit=2` was read as `limit=2` (Django's QueryDict.get takes the last copy), so a partner whose
client appended a parameter twice got pages other than the ones it asked for and never knew. A JSON body's
object with a key written twice (`{"mediaType": "image", "mediaType": "video"}`) was read as its last copy
(Python's decoder, as most) where other decoders take the first. Two
`Idempotency-Key` headers reach the application as one value joined by a comma (the WSGI server, gunicorn
in production, joins repeated header lines), so the request was keyed by `a,b`, a key the partner never
sent: a retry with either key then did the work again."""

import http.client
import json
import re
import urllib.parse
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import IdempotencyKey
from config.api.pagination import _encode
from tests.conftest import assert_error, make_tenant
from tests.factories import make_account
from tests.hardening.routes import snapshot, v1_routes
from tests.hardening.world import HOOK_URL, build

LISTS = {
    route.name: route for route in v1_routes() if getattr(getattr(route.view, "get", None), "query_parameters", None)
}
POSTS = {route.name: route for route in v1_routes() if "post" in route.methods}


def schema_path(route) -> str:
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route.route)


def two_valid_values(name: str, parameter: dict, world) -> tuple[str, str]:
    """Two values of the list parameter `name` that the list accepts one at a time."""
    if name == "limit":
        return "1", "2"
    if name == "cursor":
        now = timezone.now()
        return _encode(now, "zz_1"), _encode(now, "zz_2")
    if name == "socialAccountId":
        return world.ids["accountId"], world.ids["socialAccountId"]
    enum = parameter["schema"].get("enum")
    assert enum, f"give the test two valid values of the new filter {name!r}"
    return enum[0], enum[-1]


def query(*pairs) -> str:
    return urllib.parse.urlencode(pairs)


def test_every_list_is_covered():
    assert len(LISTS) >= 9 and len(POSTS) >= 7


@pytest.mark.parametrize("name", sorted(LISTS))
def test_a_list_parameter_given_twice_is_422_naming_it(owner, name):
    route = LISTS[name]
    world = build(owner, handle="repeat.owner")
    path = route.path(world.ids)
    operation = owner.client.get("/v1/openapi.json").json()["paths"][schema_path(route)]["get"]
    documented = {p["name"]: p for p in operation["parameters"] if p["in"] == "query"}
    assert set(documented) == route.view.get.query_parameters

    for parameter, spec in sorted(documented.items()):
        first, second = two_valid_values(parameter, spec, world)
        for value in (first, second):  # each copy alone is a good request...
            assert owner.client.get(f"{path}?{query((parameter, value))}").status_code == 200, (parameter, value)
        # ...but both together ask for two things at once: refused, whether the copies differ or not.
        for copies in ((first, second), (first, first)):
            response = owner.client.get(f"{path}?{query(*((parameter, v) for v in copies))}")
            error = assert_error(response, 422, "VALIDATION")
            assert list(error["details"]["fields"]) == [parameter], (name, copies)
            assert "more than once" in error["details"]["fields"][parameter][0]


def test_every_repeated_and_unknown_parameter_is_named_at_once(owner):
    response = owner.client.get("/v1/events?limit=1&limit=2&cursor=&cursor=&limt=3&type=a&type=b")
    error = assert_error(response, 422, "VALIDATION")
    assert sorted(error["details"]["fields"]) == ["cursor", "limit", "limt", "type"]
    assert error["details"]["fields"]["limt"] == ["Unknown query parameter."]


# --- Idempotency-Key -------------------------------------------------------------------------------------

# What the WSGI server hands the application for `Idempotency-Key: k-1` + `Idempotency-Key: k-2` (gunicorn
# and Django's own server join with ",", some proxies with ", ").
JOINED = ("k-1,k-2", "k-1, k-2")


def realistic_posts(world):
    project = world.ids["projectId"]
    return {
        "content": (
            f"/v1/projects/{project}/content",
            {"mediaType": "image", "mediaUrls": ["https://cdn.acme.test/a.jpg"]},
        ),
        "webhook endpoint": ("/v1/webhook-endpoints", {"url": HOOK_URL, "events": ["scheduled_post.failed"]}),
        "oauth url": (
            f"/v1/projects/{project}/social/oauth-url",
            {"platform": "tiktok", "returnUrl": "https://app.acme.test/back"},
        ),
    }


@pytest.mark.parametrize("operation", ["content", "webhook endpoint", "oauth url"])
@pytest.mark.parametrize("joined", JOINED)
def test_two_idempotency_keys_are_422_and_nothing_is_done(owner, operation, joined):
    world = build(owner, handle="keys.owner")
    path, body = realistic_posts(world)[operation]
    before = snapshot(owner.org)

    response = owner.client.post(path, body, format="json", HTTP_IDEMPOTENCY_KEY=joined)

    error = assert_error(response, 422, "VALIDATION")
    assert list(error["details"]["fields"]) == ["Idempotency-Key"]
    assert "one Idempotency-Key header" in error["details"]["fields"]["Idempotency-Key"][0]
    assert snapshot(owner.org) == before  # no key claimed, nothing created
    # The partner fixes its client and sends one of the keys: the work is done once, then replayed.
    first = owner.client.post(path, body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code in (200, 201), first.content
    again = owner.client.post(path, body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert again["Idempotent-Replayed"] == "true" and again.json() == first.json()


@pytest.mark.parametrize("name", sorted(POSTS))
def test_every_post_refuses_a_key_sent_twice_before_anything_else(owner, name):
    world = build(owner, handle="everypost.owner")
    path = POSTS[name].path(world.ids)
    before = snapshot(owner.org)
    response = owner.client.post(path, {}, format="json", HTTP_IDEMPOTENCY_KEY=JOINED[0])
    error = assert_error(response, 422, "VALIDATION")
    assert list(error["details"]["fields"]) == ["Idempotency-Key"], name
    assert snapshot(owner.org) == before


def test_the_documented_key_pattern_is_the_one_enforced(owner):
    schema = owner.client.get("/v1/openapi.json").json()
    posts = [op["post"] for op in schema["paths"].values() if "post" in op]
    headers = [p for op in posts for p in op["parameters"] if p["in"] == "header" and p["name"] == "Idempotency-Key"]
    assert len(headers) == len(posts) >= 7
    for header in headers:
        pattern = header["schema"]["pattern"]
        assert re.fullmatch(pattern, "0b7c8a6e-3f9a-4c1e-9a8e-2b1f4d5c6e7f")
        assert not re.fullmatch(pattern, "k-1,k-2")
        assert "comma" in header["description"]


def test_two_idempotency_key_header_lines_on_the_wire_are_422(transactional_db, live_server):
    # Over real HTTP, so that the WSGI server's joining is the one under test, not a value made up here.
    tenant = make_tenant("Wire")
    url = urllib.parse.urlsplit(live_server.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=20)
    body = b'{"mediaType": "image", "mediaUrls": ["https://cdn.acme.test/a.jpg"]}'
    try:
        connection.putrequest("POST", f"/v1/projects/{tenant.project.id}/content")
        connection.putheader("Authorization", f"Bearer {tenant.raw_key}")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(len(body)))
        connection.putheader("Idempotency-Key", "k-1")
        connection.putheader("Idempotency-Key", "k-2")
        connection.endheaders(body)
        response = connection.getresponse()
        payload = response.read()
    finally:
        connection.close()
    assert response.status == 422, payload
    assert b'"Idempotency-Key"' in payload and b'"VALIDATION"' in payload
    assert not IdempotencyKey.objects.filter(organization=tenant.org).exists()


# --- a key repeated in a JSON body ---------------------------------------------------------------------


def post_raw(client, path, text, **headers):
    return client.post(path, text.encode(), content_type="application/json", **headers)


@pytest.mark.parametrize("operation", ["content", "webhook endpoint", "oauth url"])
def test_a_key_repeated_in_the_body_is_400_naming_it_and_nothing_is_done(owner, operation):
    world = build(owner, handle="jsonkeys.owner")
    path, body = realistic_posts(world)[operation]
    first = next(iter(body))
    before = snapshot(owner.org)
    # The body with its first key written twice, the valid value last (what the decoder used to keep): first
    # with another value, then with the same value twice.
    for value in ("not this one", body[first]):
        text = "{" + f"{json.dumps(first)}: {json.dumps(value)}, " + json.dumps(body)[1:]

        error = assert_error(post_raw(owner.client, path, text), 400, "MALFORMED_REQUEST")

        assert f'"{first}"' in error["message"] and "more than once" in error["message"], error
        assert snapshot(owner.org) == before


def test_a_key_repeated_at_any_depth_is_refused_and_every_one_is_named(owner):
    world = build(owner, handle="jsonkeys.deep")
    account = json.dumps(world.ids["accountId"])
    when = json.dumps((timezone.now() + timedelta(hours=1)).isoformat())
    target = "{" + f'"socialAccountId": {account}, "mode": "draft", "mode": "publish"' + "}"
    text = "{" + f'"targets": [{target}], "scheduledFor": {when}, "scheduledFor": {when}' + "}"
    before = snapshot(owner.org)

    response = post_raw(owner.client, f"/v1/content/{world.ids['containerId']}/schedule", text)

    error = assert_error(response, 400, "MALFORMED_REQUEST")
    assert '"mode"' in error["message"] and '"scheduledFor"' in error["message"], error
    assert snapshot(owner.org) == before


def test_the_same_key_in_different_objects_is_no_repetition(owner):
    # Each object has its own keys: two targets both with "mode" are two objects, not a repeated key.
    world = build(owner, handle="jsonkeys.siblings")
    other = make_account(owner, platform="tiktok")
    targets = [
        {"socialAccountId": world.ids["accountId"], "mode": "draft"},
        {"socialAccountId": other.pk, "mode": "draft"},
    ]
    body = {"targets": targets, "scheduledFor": (timezone.now() + timedelta(hours=1)).isoformat()}

    response = post_raw(owner.client, f"/v1/content/{world.ids['containerId']}/schedule", json.dumps(body))

    assert response.status_code == 201, response.content


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_a_body_with_a_non_json_number_is_400_and_nothing_is_done(owner, constant):
    """NaN and Infinity are not JSON (RFC 8259 6): Python's decoder takes them unless told not to, as DRF's
    strict parser told it; the parser written today must still refuse them as malformed."""
    world = build(owner, handle="nan.owner")
    path, body = realistic_posts(world)["content"]
    before = snapshot(owner.org)
    text = json.dumps(body)[:-1] + f', "extra": {constant}}}'

    error = assert_error(post_raw(owner.client, path, text), 400, "MALFORMED_REQUEST")

    assert constant.lstrip("-") in error["message"], error
    assert snapshot(owner.org) == before


def test_the_message_naming_repeated_keys_is_bounded(owner):
    """A body repeating many long keys gets a message naming at most 20 of them, each cut, not the keys back."""
    world = build(owner, handle="manykeys.owner")
    path, _ = realistic_posts(world)["content"]
    keys = [f"{n:02d}" + "k" * 500 for n in range(30)]
    text = "{" + ", ".join(f'"{k}": 1, "{k}": 2' for k in keys) + "}"

    error = assert_error(post_raw(owner.client, path, text), 400, "MALFORMED_REQUEST")

    assert error["message"].count("…") == 20 and "(and 10 more)" in error["message"], error["message"][:300]
    assert len(error["message"]) < 20 * 110 + 200
