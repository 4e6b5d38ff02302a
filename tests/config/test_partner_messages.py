"""The validation messages a partner reads: each speaks JSON (never Python's `True`, `{'name': …}` or
"dict"), says what to send, and says one mistake one way on every endpoint, body fields and query filters alike."""

import json

import pytest

from accounts.services import EVENT_TYPES
from tests.conftest import assert_error
from tests.factories import make_account

RET = "https://app.acme.test/cb"
VIDEO = "https://x.test/a.mp4"
NICHE = {"vertical": "fitness", "language": "en-US", "geo": ["US"]}
EVENTS = ", ".join(sorted(EVENT_TYPES))


def fields(response) -> dict:
    return assert_error(response, 422, "VALIDATION")["details"]["fields"]


def _container(owner) -> str:
    r = owner.client.post(
        f"/v1/projects/{owner.project.id}/content", {"mediaType": "video", "mediaUrls": [VIDEO]}, format="json"
    )
    assert r.status_code == 201, r.content
    return r.json()["id"]


def _post(owner, where: str, value):
    """POST a body whose field `where` ("targets.0", "niche.geo") is `value`, every other field valid."""
    c, p = owner.client, owner.project.id
    if where in ("platform", "returnUrl"):
        return c.post(f"/v1/projects/{p}/social/oauth-url", {"platform": "tiktok", "returnUrl": RET, where: value})
    if where in ("mediaType", "mediaUrls"):
        body = {"mediaType": "video", "mediaUrls": [VIDEO], where: value}
        return c.post(f"/v1/projects/{p}/content", body, format="json")
    if where.startswith("targets"):
        target = {"socialAccountId": "sa_00000000-0000-0000-0000-000000000000", "mode": "publish"}
        targets = {"targets": value, "targets.0": [value], "targets.0.mode": [{**target, "mode": value}]}[where]
        body = {"targets": targets, "scheduledFor": "2030-01-01T00:00:00Z"}
        return c.post(f"/v1/content/{_container(owner)}/schedule", body, format="json")
    if where == "events":
        return c.post("/v1/webhook-endpoints", {"url": "https://example.com/h", "events": value}, format="json")
    if where == "scopes":
        sa = make_account(owner)
        return c.post(
            f"/v1/projects/{p}/social/reauth-url",
            {"socialAccountId": sa.id, "scopes": value, "returnUrl": RET},
            format="json",
        )
    if where in ("niche", "niche.geo", "count"):
        body = {"projectId": p, "count": 1, "niche": NICHE}
        if where == "niche.geo":
            body["niche"] = {**NICHE, "geo": value}
        else:
            body[where] = value
        return c.post(f"/v1/projects/{p}/leased-accounts/request", body, format="json")
    raise AssertionError(where)


def _post_json(owner, where, value):
    # format="json" everywhere: the oauth-url branch above sends a dict the test client would encode as a form.
    if where in ("platform", "returnUrl"):
        body = {"platform": "tiktok", "returnUrl": RET, where: value}
        return owner.client.post(f"/v1/projects/{owner.project.id}/social/oauth-url", body, format="json")
    return _post(owner, where, value)


# --- An unknown enum value: what was sent, as JSON, and every value accepted -----------------------------

BODY_ENUMS = {
    "platform": "tiktok, instagram",
    "mediaType": "video, image, carousel",
    "targets.0.mode": "publish, draft, managed",
    "events.0": EVENTS,
}
SENT = [("TikTok", '"TikTok"'), (True, "true"), ({"name": "tiktok"}, '{"name": "tiktok"}'), (["x"], '["x"]'), (3, "3")]


@pytest.mark.django_db
@pytest.mark.parametrize("where", list(BODY_ENUMS))
@pytest.mark.parametrize(("value", "as_json"), SENT)
def test_an_enum_in_a_body_names_what_was_sent_as_json_and_what_to_send(owner, where, value, as_json):
    field = "events" if where == "events.0" else where
    sent = [value] if where == "events.0" else value
    r = _post_json(owner, field, sent)
    assert fields(r) == {where: [f"{as_json} is not one of: {BODY_ENUMS[where]}."]}


QUERY_ENUMS = [
    ("/v1/events?type=foo", "type", EVENTS),
    ("/v1/projects/{p}/scheduled-posts?status=Queued", "status", "queued, publishing, published, failed, canceled"),
    ("/v1/projects/{p}/social-accounts?platform=TikTok", "platform", "tiktok, instagram"),
    ("/v1/projects/{p}/social-accounts?kind=pool", "kind", "connected, leased"),
    ("/v1/projects/{p}/social-accounts?status=ok", "status", "connected, reauth_required, disconnected"),
    ("/v1/wallet/entries?kind=topup", "kind", "top_up, lease_charge, adjustment"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("url", "name", "choices"), QUERY_ENUMS)
def test_an_enum_filter_says_it_as_a_body_does(owner, url, name, choices):
    r = owner.client.get(url.format(p=owner.project.id))
    sent = r.wsgi_request.GET[name]
    assert fields(r) == {name: [f'"{sent}" is not one of: {choices}.']}


@pytest.mark.django_db
def test_a_long_value_is_quoted_cut_not_whole(owner):
    msg = fields(_post_json(owner, "platform", "x" * 5000))["platform"][0]
    assert msg.startswith('"xxx') and msg.endswith(" is not one of: tiktok, instagram.") and len(msg) < 200, msg


# --- A value of another JSON type: the JSON types named ---------------------------------------------

OTHER_TYPES = [({"0": VIDEO}, "an object"), (True, "a boolean"), (3, "a number"), (2.5, "a number"), ("a", "a string")]


@pytest.mark.django_db
@pytest.mark.parametrize("where", ["mediaUrls", "targets", "events", "scopes", "niche.geo"])
@pytest.mark.parametrize(("value", "named"), OTHER_TYPES)
def test_a_list_given_another_json_type_names_the_json_types(owner, where, value, named):
    assert fields(_post(owner, where, value)) == {where: [f"Expected a JSON array, not {named}."]}


@pytest.mark.django_db
@pytest.mark.parametrize("where", ["niche", "targets.0"])
@pytest.mark.parametrize(("value", "named"), [(["fitness"], "an array"), ("fitness", "a string"), (1, "a number")])
def test_an_object_given_another_json_type_names_the_json_types(owner, where, value, named):
    assert fields(_post(owner, where, value)) == {where: [f"Expected a JSON object, not {named}."]}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("where", "value", "message"),
    [
        ("returnUrl", 3, "Expected a JSON string, not a number."),
        ("mediaUrls", [VIDEO, {"url": VIDEO}], "Expected a JSON string, not an object."),
        ("count", "2", "Expected an integer, not a string."),
        ("count", True, "Expected an integer, not a boolean."),
        ("count", [1], "Expected an integer, not an array."),
        ("count", {}, "Expected an integer, not an object."),
        ("count", 1.5, "Expected an integer, not a number with a fraction or out of range."),
        ("count", 1e20, "Expected a JSON integer."),  # a whole number DRF cannot read as one (str() is 1e+20)
    ],
)
def test_a_string_or_an_integer_given_another_json_type_names_the_json_types(owner, where, value, message):
    got = fields(_post_json(owner, where, value))
    assert list(got.values()) == [[message]], got


# --- Lists too short or too long: one wording --------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("where", ["mediaUrls", "targets", "events", "niche.geo"])
def test_an_empty_list_is_said_one_way_everywhere(owner, where):
    assert fields(_post(owner, where, [])) == {where: ["Give at least 1 item."]}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("where", "items", "most"),
    [("mediaUrls", [VIDEO] * 36, 35), ("scopes", ["video.publish"] * 21, 20), ("niche.geo", ["US"] * 51, 50)],
)
def test_a_list_too_long_is_said_one_way_everywhere(owner, where, items, most):
    assert fields(_post(owner, where, items)) == {where: [f"Give at most {most} items."]}


@pytest.mark.django_db
def test_too_many_targets_is_said_the_same_way(owner):
    target = {"socialAccountId": "sa_00000000-0000-0000-0000-000000000000", "mode": "publish"}
    assert fields(_post(owner, "targets", [target] * 101)) == {"targets": ["Give at most 100 items."]}


# --- Requests the API cannot read: say what to send ----------------------------------------------------


@pytest.mark.django_db
def test_no_api_key_says_how_to_send_one(anon):
    r = anon.get("/v1/projects")
    body = assert_error(r, 401, "UNAUTHENTICATED")
    assert body["message"] == "No API key: send it as 'Authorization: Bearer <api key>'."
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="layers"'


@pytest.mark.django_db
@pytest.mark.parametrize(("content_type", "named"), [("text/plain", "'text/plain'"), ("", "none")])
def test_a_body_of_another_media_type_says_to_send_json(owner, content_type, named):
    r = owner.client.generic(
        "POST", f"/v1/projects/{owner.project.id}/content", b'{"mediaType": "video"}', content_type=content_type
    )
    body = assert_error(r, 400, "MALFORMED_REQUEST")
    assert body["message"] == (
        f"Send the body as JSON with 'Content-Type: application/json' (this request's Content-Type: {named})."
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{'mediaType': 'video'}", "The request body is not valid JSON: line 1, column 2."),
        (b'{"mediaType": "video",\n "mediaUrls": [}', "The request body is not valid JSON: line 2, column 16."),
        (b'{"count": NaN}', "The request body is not valid JSON: NaN is not a JSON number."),
        (b'{"count": -Infinity}', "The request body is not valid JSON: -Infinity is not a JSON number."),
        (b'{"caption": "Caf\xe9"}', "The request body is not UTF-8 text (at byte offset 16)."),
    ],
)
def test_a_body_that_is_not_json_says_where_without_python_words(owner, raw, message):
    r = owner.client.post(f"/v1/projects/{owner.project.id}/content", data=raw, content_type="application/json")
    assert assert_error(r, 400, "MALFORMED_REQUEST")["message"] == message


@pytest.mark.django_db
@pytest.mark.parametrize(("body", "named"), [(b"[1]", "an array"), (b'"x"', "a string"), (b"null", "null")])
def test_a_body_of_another_json_type_names_it(owner, body, named):
    r = owner.client.post(f"/v1/projects/{owner.project.id}/content", data=body, content_type="application/json")
    assert (
        assert_error(r, 400, "MALFORMED_REQUEST")["message"] == f"The request body must be a JSON object, not {named}."
    )


# --- Small style -------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(("platform", "named"), [("tiktok", "a TikTok"), ("instagram", "an Instagram")])
def test_an_unknown_scope_names_the_platform_as_it_is_written(owner, platform, named):
    sa = make_account(owner, platform=platform)
    r = owner.client.post(
        f"/v1/projects/{owner.project.id}/social/reauth-url",
        {"socialAccountId": sa.id, "scopes": ["video.publish", "nope"], "returnUrl": RET},
        format="json",
    )
    assert fields(r)["scopes.1"][0].startswith(f"Not {named} scope; one of: "), fields(r)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://x.test:99999/a.mp4", "Not a valid URL."),
        ("https://x.test:0/a.mp4", "Not a valid URL: the port must be from 1 to 65535."),
        ("https://[x/a.mp4", "Not a valid URL."),
    ],
)
def test_a_media_url_message_has_a_subject(owner, url, message):
    assert fields(_post(owner, "mediaUrls", [url])) == {"mediaUrls.0": [message]}


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["https://app.acme.test:99999/cb", "https://[app/cb"])
def test_a_return_url_message_has_a_subject(owner, url):
    assert fields(_post_json(owner, "returnUrl", url)) == {"returnUrl": ["Not a valid URL."]}


def test_no_message_template_is_left_to_drf():
    """Every field of every partner input (bodies and filters) speaks as the tests above pin: a field added
    later inherits the wording, or this names it."""
    from rest_framework import fields as drf_fields
    from rest_framework import serializers as drf_serializers

    from accounts.apis import EventFilters, OAuthUrlInput, ReauthUrlInput, SocialAccountFilters
    from accounts.webhooks.apis import EndpointCreateInput
    from billing.apis import EntryFilter
    from config.api.fields import partner_fields
    from leasing.apis import LeaseRequestInput
    from scheduling.apis import ContainerInput, ScheduledPostFilters, ScheduleInput

    replaced = ("invalid_choice", "not_a_list", "not_a_dict", "empty", "min_length", "max_length", "invalid")
    drf_defaults = set()
    for module in (drf_fields, drf_serializers):
        for cls in vars(module).values():
            for key, text in getattr(cls, "default_error_messages", {}).items():
                if key in replaced:
                    drf_defaults.add(str(text))

    def walk(field, path):
        for key, text in field.error_messages.items():
            assert str(text) not in drf_defaults, (path, key, str(text))
        child = getattr(field, "child", None)
        if child is not None:
            yield from walk(child, f"{path}.*")
        if isinstance(field, drf_serializers.Serializer):
            for name, sub in field.fields.items():
                yield from walk(sub, f"{path}.{name}")
        yield path

    bodies = [OAuthUrlInput, ReauthUrlInput, EndpointCreateInput, LeaseRequestInput, ContainerInput, ScheduleInput]
    for cls in bodies:
        assert list(walk(cls(), cls.__name__))
    for cls in (EventFilters, SocialAccountFilters, EntryFilter, ScheduledPostFilters):
        serializer = cls()
        for name, field in partner_fields(serializer.fields).items():
            assert list(walk(field, f"{cls.__name__}.{name}"))


def test_json_excerpt_never_fails():
    from config.api.fields import json_excerpt

    deep = []
    for _ in range(100_000):
        deep = [deep]
    assert json_excerpt(deep) == "an array"
    assert json_excerpt("é\n") == json.dumps("é\n", ensure_ascii=False)
