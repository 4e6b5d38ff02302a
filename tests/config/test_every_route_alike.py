"""What every /v1 operation answers alike, whatever the route, its ids or the method: authentication first,
the rate-limit and cache headers, the query and body contracts, and no methods the OpenAPI does not list."""

import pytest

from tests.conftest import assert_error
from tests.hardening.routes import v1_routes

pytestmark = pytest.mark.django_db

UNKNOWN_SA = "sa_00000000-0000-0000-0000-000000000000"
# Paths no route matches: a malformed id, an id of another type, an upper-cased prefix, an unknown resource.
UNMATCHED = [
    "/v1/social-accounts/sa_nope",
    "/v1/social-accounts/sp_0b21897a21cd4819a306b5f7d8fe4b68",
    "/v1/social-accounts/SA_00000000-0000-0000-0000-000000000000",
    "/v1/no-such-thing",
    "/v1/projects/",
    "/v1",
]


@pytest.mark.parametrize("path", UNMATCHED)
@pytest.mark.parametrize("method", ["get", "post", "put", "patch", "delete", "options"])
def test_without_a_key_a_path_no_route_matches_is_401_like_any_other(anon, path, method):
    # A malformed id was a 404 before authentication, where a well-formed one was a 401: a client without
    # its key learnt nothing useful, and one probing ids learnt which shapes Layers accepts.
    response = getattr(anon, method)(path)
    assert_error(response, 401, "UNAUTHENTICATED")
    assert response["WWW-Authenticate"] == 'Bearer realm="layers"'


def test_well_formed_unknown_id_401_likewise(anon):
    assert_error(anon.get(f"/v1/social-accounts/{UNKNOWN_SA}"), 401, "UNAUTHENTICATED")


@pytest.mark.parametrize("path", UNMATCHED)
@pytest.mark.parametrize("method", ["get", "post", "put", "patch", "delete", "options"])
def test_with_a_key_a_path_no_route_matches_is_404_with_the_api_headers(owner, path, method):
    # The 404 of a malformed id had no RateLimit-* (a dashboard pacing itself on them lost count) and no
    # Cache-Control: no-store, unlike the 404 of a well-formed unknown id. Every method gets the 404, not a
    # 405: there is no resource there to have methods.
    response = getattr(owner.client, method)(path)
    assert_error(response, 404, "NOT_FOUND")
    assert response["Cache-Control"] == "no-store"
    assert {"RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"} <= set(response.headers)
    assert "Allow" not in response.headers  # no resource, so no methods to list


def test_a_path_no_route_matches_counts_against_the_key_like_any_call(owner):
    first = owner.client.get("/v1/social-accounts/sa_nope")
    second = owner.client.get(f"/v1/social-accounts/{UNKNOWN_SA}")
    assert int(second["RateLimit-Remaining"]) == int(first["RateLimit-Remaining"]) - 1


def test_a_path_no_route_matches_takes_any_body_without_a_csrf_page(owner):
    from rest_framework.test import APIClient

    csrf_checked = APIClient(enforce_csrf_checks=True, raise_request_exception=False)
    csrf_checked.credentials(HTTP_AUTHORIZATION=f"Bearer {owner.raw_key}")
    for method in ("post", "put", "patch", "delete"):
        assert_error(getattr(csrf_checked, method)("/v1/scheduled-posts/sp_bogus"), 404, "NOT_FOUND")
    # Neither an empty POST body (400 elsewhere) nor an Idempotency-Key make it anything but the 404.
    assert_error(owner.client.post("/v1/no-such-thing", HTTP_IDEMPOTENCY_KEY="k"), 404, "NOT_FOUND")
    assert_error(owner.client.post("/v1/no-such-thing", "x", content_type="text/plain"), 404, "NOT_FOUND")


def test_an_unknown_query_parameter_on_a_create_is_refused_and_nothing_is_created(owner):
    # `?dryRun=true` created the container (201): a partner testing a "dry run" made real objects.
    from scheduling.models import ContentContainer

    body = {"mediaType": "video", "mediaUrls": ["https://cdn.acme.test/a.mp4"]}
    response = owner.client.post(f"/v1/projects/{owner.project.id}/content?dryRun=true", body, format="json")
    error = assert_error(response, 422, "VALIDATION")
    assert error["details"]["fields"] == {"dryRun": ["Unknown query parameter."]}
    assert not ContentContainer.objects.filter(organization=owner.org).exists()


def test_an_unknown_query_parameter_is_refused_on_details_and_deletes(owner):
    subscription = {"url": "https://hooks.acme.test/layers", "events": ["scheduled_post.published"]}
    endpoint = owner.client.post("/v1/webhook-endpoints", subscription, format="json").json()["id"]
    for method, path in (
        ("get", f"/v1/projects/{owner.project.id}"),
        ("get", f"/v1/webhook-endpoints/{endpoint}"),
        ("delete", f"/v1/webhook-endpoints/{endpoint}"),
        ("get", "/v1/wallet"),
    ):
        error = assert_error(getattr(owner.client, method)(f"{path}?foo=1&format=json"), 422, "VALIDATION")
        assert error["details"]["fields"] == {
            "foo": ["Unknown query parameter."],
            "format": ["Unknown query parameter."],
        }, path
    # The DELETE was refused: the endpoint is still there.
    assert owner.client.get(f"/v1/webhook-endpoints/{endpoint}").status_code == 200


@pytest.fixture
def schema():
    from django.test import Client

    return Client().get("/v1/openapi.json").json()


def test_no_operation_but_the_lists_declares_a_query_parameter(schema):
    # What the 422 above relies on: an operation that reads a query parameter documents it, and only the
    # lists read any. A new one must be declared (config/api/schema.py list_schema) to be accepted.
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            query = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]
            if query:
                assert method == "get" and {"limit", "cursor"} <= set(query), (method, path, query)


def _route_paths():
    # Any well-formed id will do: OPTIONS is refused before the view reads it.
    samples = {
        "prj": "prj_00000000-0000-0000-0000-000000000000",
        "sa": UNKNOWN_SA,
        "st": "st_" + "0" * 40,
        "lreq": "lreq_" + "0" * 26,
    }
    for route in v1_routes():
        values = {name: samples.get(converter, f"{converter}_{'0' * 32}") for converter, name in route.params}
        yield route, route.path(values)


def test_options_is_405_in_the_envelope_on_every_route(owner):
    # DRF answered OPTIONS 200 with its metadata ({"name": "Endpoint List Api", "renders": …}): the Python
    # class name of a view, outside the envelope and the OpenAPI. Layers offers no CORS, so no browser
    # preflight needs it either.
    routes = 0
    for route, path in _route_paths():
        routes += 1
        response = owner.client.options(path)
        assert_error(response, 405, "METHOD_NOT_ALLOWED")
        assert "Api" not in response.content.decode(), route.route
        allowed = {m.strip() for m in response["Allow"].split(",")}
        assert "OPTIONS" not in allowed, (route.route, allowed)
        assert {m.upper() for m in route.methods} <= allowed, (route.route, allowed)
        assert response["Cache-Control"] == "no-store" and "RateLimit-Remaining" in response.headers
    assert routes >= 20


def test_the_allow_header_of_a_405_lists_the_routes_methods_only(owner):
    response = owner.client.delete("/v1/webhook-endpoints")
    assert_error(response, 405, "METHOD_NOT_ALLOWED")
    assert response["Allow"] == "GET, POST, HEAD"


@pytest.mark.parametrize("method", ["options", "delete"])
def test_without_a_key_options_is_401_like_any_method(anon, method):
    assert_error(getattr(anon, method)("/v1/webhook-endpoints"), 401, "UNAUTHENTICATED")


@pytest.fixture
def endpoint(owner):
    subscription = {"url": "https://hooks.acme.test/layers", "events": ["scheduled_post.published"]}
    response = owner.client.post("/v1/webhook-endpoints", subscription, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def rotate(owner, endpoint, *args, **kwargs):
    return owner.client.generic("POST", f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret", *args, **kwargs)


@pytest.mark.parametrize("body", [{"secret": "whsec_mine"}, {"gracePeriod": 0}])
def test_rotate_secret_refuses_fields_like_every_other_post(owner, endpoint, body):
    # {"secret": "whsec_mine"} answered 200 with a random secret: a partner believing they had set their own
    # secret failed every signature check afterwards.
    import json

    response = rotate(owner, endpoint, json.dumps(body), content_type="application/json")
    error = assert_error(response, 422, "VALIDATION")
    assert error["details"]["fields"] == {name: ["Unknown field."] for name in body}
    # Nothing rotated: the secret shown at creation still signs alone.
    from accounts.webhooks.models import WebhookEndpoint

    assert WebhookEndpoint.objects.get(pk=endpoint["id"]).secret_rotated_at is None


@pytest.mark.parametrize(
    ("body", "content_type"), [(b"", None), (b"{}", "application/json"), (b" { } ", "application/json")]
)
def test_rotate_secret_takes_no_body_or_an_empty_object(owner, endpoint, body, content_type):
    kwargs = {"content_type": content_type} if content_type else {}
    response = rotate(owner, endpoint, body, **kwargs)
    assert response.status_code == 200, response.content
    assert response.json()["secret"] != endpoint["secret"]


@pytest.mark.parametrize("body", [b"[]", b"not json", b'"secret"'])
def test_rotate_secret_refuses_a_body_that_is_not_a_json_object(owner, endpoint, body):
    assert_error(rotate(owner, endpoint, body, content_type="application/json"), 400, "MALFORMED_REQUEST")
