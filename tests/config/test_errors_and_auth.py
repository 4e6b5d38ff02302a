"""Every auth failure and every error code leaves the API in API.md's envelope."""

import json
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts import services
from tests.conftest import assert_error

pytestmark = pytest.mark.urls("tests.config.plumbing_urls")


def test_missing_authorization_header_is_401(anon, owner):
    assert_error(anon.get("/v1/projects"), 401, "UNAUTHENTICATED")


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Token lyr_abc_def",
        "Bearer lyr_000000000000_nope",
        "Bearer nonsense",
        "Bearer lyr_\x00",  # PostgreSQL refuses a NUL: it must not reach the key lookup
        "Bearer lyr_\u00e9\u00e9_x",
    ],
)
def test_malformed_or_unknown_key_is_401(anon, owner, header):
    anon.credentials(HTTP_AUTHORIZATION=header)
    assert_error(anon.get("/v1/projects"), 401, "UNAUTHENTICATED")


def test_right_prefix_wrong_secret_is_401(anon, owner):
    prefix_part = "_".join(owner.raw_key.split("_", 2)[:2])
    anon.credentials(HTTP_AUTHORIZATION=f"Bearer {prefix_part}_{'x' * 43}")
    assert_error(anon.get("/v1/projects"), 401, "UNAUTHENTICATED")


def test_revoked_key_is_401(owner):
    assert owner.client.get("/v1/projects").status_code == 200
    services.api_key_revoke(key=owner.key)
    assert_error(owner.client.get("/v1/projects"), 401, "UNAUTHENTICATED")


def assert_asks_for_a_bearer_key(response):
    # RFC 9110 11.6.1: a 401 carries WWW-Authenticate, the scheme the client should use (RFC 6750's Bearer).
    assert_error(response, 401, "UNAUTHENTICATED")
    assert response["WWW-Authenticate"] == 'Bearer realm="layers"'


@pytest.mark.parametrize("header", [None, "Basic dXNlcjpwYXNz", "Bearer ", "Bearer lyr_000000000000_nope"])
def test_every_401_says_which_authentication_to_use(anon, owner, header):
    if header is not None:
        anon.credentials(HTTP_AUTHORIZATION=header)
    assert_asks_for_a_bearer_key(anon.get("/v1/projects"))
    assert_asks_for_a_bearer_key(anon.post(f"/v1/projects/{owner.project.id}/content", {}, format="json"))
    assert_asks_for_a_bearer_key(anon.delete(f"/v1/webhook-endpoints/we_{'0' * 32}"))


def test_a_revoked_keys_401_says_which_authentication_to_use_too(owner):
    services.api_key_revoke(key=owner.key)
    assert_asks_for_a_bearer_key(owner.client.get("/v1/projects"))


def test_answers_other_than_401_ask_for_no_authentication(owner, anon):
    assert "WWW-Authenticate" not in owner.client.get("/v1/projects")
    assert "WWW-Authenticate" not in owner.client.get("/v1/projects/prj_nope")
    assert "WWW-Authenticate" not in owner.client.get("/v1/no-such-thing")


def test_valid_key_records_last_used(owner):
    assert owner.key.last_used_at is None
    before = timezone.now()
    assert owner.client.get("/v1/projects").status_code == 200
    owner.key.refresh_from_db()
    assert owner.key.last_used_at >= before


def test_last_used_is_rewritten_at_most_once_a_minute(owner):
    from accounts.models import ApiKey

    assert owner.client.get("/v1/projects").status_code == 200
    first = ApiKey.objects.get(pk=owner.key.pk).last_used_at
    assert owner.client.get("/v1/projects").status_code == 200
    assert ApiKey.objects.get(pk=owner.key.pk).last_used_at == first  # no write on every request
    stale = first - services.LAST_USED_RESOLUTION - timedelta(seconds=1)
    ApiKey.objects.filter(pk=owner.key.pk).update(last_used_at=stale)
    assert owner.client.get("/v1/projects").status_code == 200
    assert ApiKey.objects.get(pk=owner.key.pk).last_used_at > first


def test_the_key_acts_for_its_own_organization_with_its_own_allowlist(owner, outsider):
    key = services.api_key_authenticate(raw=owner.raw_key)
    assert (key.pk, key.organization.pk, key.organization.name) == (owner.key.pk, owner.org.pk, owner.org.name)
    assert key.allowed_return_domains == ["app.acme.test", "localhost"]
    other = services.api_key_authenticate(raw=outsider.raw_key)
    assert other.organization.pk == outsider.org.pk != owner.org.pk
    # Columns the lookup does not read are still there when touched.
    assert key.name == "test" and key.prefix == owner.key.prefix


@pytest.mark.parametrize("debug", [False, True], ids=["deployed", "make-run"])
def test_unknown_route_is_404_envelope(owner, anon, settings, debug):
    # `make run` runs with DEBUG, where Django answers an unmatched URL with its HTML debug page (listing every
    # route) without calling handler404: the API's own catch-all answers first.
    settings.DEBUG = debug
    for path in ("/v1/no-such-thing", "/v1/social-accounts/sa_bogus", "/v1/projects/", "/v1"):
        assert_error(owner.client.get(path), 404, "NOT_FOUND")
    for method in ("post", "delete", "put", "patch"):  # no CSRF page for an API client's unsafe method
        csrf_checked = APIClient(enforce_csrf_checks=True)
        csrf_checked.credentials(HTTP_AUTHORIZATION=owner.client._credentials["HTTP_AUTHORIZATION"])
        assert_error(getattr(csrf_checked, method)("/v1/scheduled-posts/sp_bogus"), 404, "NOT_FOUND")
    # Without a key, what is not there is not told apart from what is: 401, as for every route.
    assert_asks_for_a_bearer_key(anon.get("/v1/no-such-thing"))


@pytest.mark.parametrize(
    "project_id",
    [
        "prj_00000000-0000-0000-0000-000000000000",  # well-formed, unknown
        "prj_not-a-uuid",  # malformed
        "sa_00000000-0000-0000-0000-000000000000",  # wrong type
        "prj_%00",  # NUL byte must not reach PostgreSQL
        "PRJ_00000000-0000-0000-0000-000000000000",
    ],
)
def test_bad_project_ids_are_404(owner, project_id):
    assert_error(owner.client.get(f"/v1/projects/{project_id}"), 404, "NOT_FOUND")


def test_another_organizations_project_is_404(owner, sibling, outsider):
    for other in (sibling, outsider):
        assert_error(owner.client.get(f"/v1/projects/{other.project.id}"), 404, "NOT_FOUND")
    assert owner.client.get(f"/v1/projects/{owner.project.id}").status_code == 200


def test_wrong_method_is_405(owner):
    assert_error(owner.client.delete("/v1/projects"), 405, "METHOD_NOT_ALLOWED")
    assert_error(owner.client.post("/v1/projects", {}, format="json"), 405, "METHOD_NOT_ALLOWED")


@pytest.mark.parametrize(
    "path",
    ["/v1/projects", "/v1/wallet", "/v1/events", "/v1/projects/{prj}", "/v1/projects/{prj}/social-accounts"],
)
def test_a_method_the_route_does_not_have_is_405_whatever_the_body(owner, settings, path):
    # `curl -X POST` with no body, or a body over the cap, was a 400 "empty body" / 413 from the body checks,
    # which ran before the method was looked at (and a POST with an Idempotency-Key stored that answer).
    path = path.format(prj=owner.project.id)
    assert_error(owner.client.post(path, HTTP_IDEMPOTENCY_KEY="k-405"), 405, "METHOD_NOT_ALLOWED")
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    oversized = b'{"x": "' + b"a" * 200 + b'"}'
    assert_error(owner.client.post(path, oversized, content_type="application/json"), 405, "METHOD_NOT_ALLOWED")
    from accounts.models import IdempotencyKey

    assert not IdempotencyKey.objects.filter(organization=owner.org).exists()


@pytest.mark.parametrize(
    "path", ["scheduled-posts", "posts", "social-accounts", "leased-accounts", "leased-accounts/requests"]
)
@pytest.mark.parametrize("query", ["limit=0", "cursor=zzz", "bogus=1"])
def test_another_organizations_project_is_404_whatever_the_query(owner, outsider, path, query):
    # The query was checked before the project: 422 on another organization's project, whose lists are 404
    # with a good query (API.md: another organization's ids are 404).
    assert_error(owner.client.get(f"/v1/projects/{outsider.project.id}/{path}"), 404, "NOT_FOUND")
    assert_error(owner.client.get(f"/v1/projects/{outsider.project.id}/{path}?{query}"), 404, "NOT_FOUND")
    assert_error(owner.client.get(f"/v1/projects/{owner.project.id}/{path}?{query}"), 422, "VALIDATION")


@pytest.mark.parametrize(
    "path, body",
    [
        ("content", {"mediaType": "video"}),
        ("social/oauth-url", {"platform": "myspace", "returnUrl": "https://app.acme.test/cb"}),
        ("social/reauth-url", {"socialAccountId": "sa_nope"}),
        ("leased-accounts/request", {"count": 0}),
    ],
)
def test_another_organizations_project_is_404_whatever_the_body(owner, outsider, path, body):
    assert_error(owner.client.post(f"/v1/projects/{outsider.project.id}/{path}", body, format="json"), 404, "NOT_FOUND")
    assert_error(
        owner.client.post(f"/v1/projects/{outsider.project.id}/{path}", b"{nope", content_type="application/json"),
        404,
        "NOT_FOUND",
    )
    assert_error(owner.client.post(f"/v1/projects/{owner.project.id}/{path}", body, format="json"), 422, "VALIDATION")


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[1, 2]", b'"a string"', b"42", b"null"],
)
def test_body_not_a_json_object_is_400(owner, body):
    response = owner.client.post("/v1/_probe", body, content_type="application/json")
    assert_error(response, 400, "MALFORMED_REQUEST")


@pytest.mark.parametrize(
    "body, key",
    [
        (b'{"note": "a", "note": "b"}', "note"),
        (b'{"note": "a", "count": 1, "count": 1}', "count"),  # the same value twice too
        (b'{"note": "a", "extra": {"x": 1, "x": 2}}', "x"),  # at any depth
        (b'{"note": "a", "extra": [{"x": 1}, {"y": {"z": [], "z": []}}]}', "z"),
    ],
)
def test_a_key_repeated_in_one_json_object_is_400_naming_it(owner, body, key):
    # Python's decoder kept the last copy (others keep the first): the partner never learnt which one counted.
    response = owner.client.post("/v1/_probe", body, content_type="application/json")
    error = assert_error(response, 400, "MALFORMED_REQUEST")
    assert f'"{key}"' in error["message"], error


def test_a_repeated_key_is_named_readably_whatever_it_holds(owner):
    # Quoted as JSON writes it: a control character or a quote in the name cannot break the message.
    body = b'{"note": "a", "we\\"ird\\n": 1, "we\\"ird\\n": 2}'
    error = assert_error(
        owner.client.post("/v1/_probe", body, content_type="application/json"), 400, "MALFORMED_REQUEST"
    )
    assert '"we\\"ird\\n"' in error["message"], error


def test_a_body_repeating_thousands_of_keys_is_answered_at_once_naming_twenty(owner):
    pairs = ", ".join(f'"k{n}": 1, "k{n}": 2' for n in range(30_000))  # about 700 kB
    body = ('{"note": "a", ' + pairs + "}").encode()
    started = time.monotonic()
    error = assert_error(
        owner.client.post("/v1/_probe", body, content_type="application/json"), 400, "MALFORMED_REQUEST"
    )
    assert time.monotonic() - started < 5
    assert '"k0", "k1"' in error["message"] and '"k19"' in error["message"] and '"k20"' not in error["message"]
    assert "(and 29980 more)" in error["message"]


@pytest.mark.parametrize("body", [b"", b"  "])
def test_an_empty_body_is_400_like_any_other_body_that_is_not_a_json_object(owner, body):
    # DRF reads an empty body as `{}`: it used to be 422 "platform: required", where two spaces were a 400.
    response = owner.client.generic(
        "POST", f"/v1/projects/{owner.project.id}/social/oauth-url", body, content_type="application/json"
    )
    assert_error(response, 400, "MALFORMED_REQUEST")


def test_an_operation_that_takes_no_body_still_answers_an_empty_post(owner):
    subscription = {"url": "https://hooks.acme.test/layers", "events": ["scheduled_post.published"]}
    endpoint = owner.client.post("/v1/webhook-endpoints", subscription, format="json")
    assert endpoint.status_code == 201, endpoint.content

    rotated = owner.client.generic("POST", f"/v1/webhook-endpoints/{endpoint.json()['id']}/rotate-secret", b"")

    assert rotated.status_code == 200 and rotated.json()["secret"] != endpoint.json()["secret"]


def test_non_json_content_type_is_400(owner):
    response = owner.client.post("/v1/_probe", "note=x", content_type="application/x-www-form-urlencoded")
    assert_error(response, 400, "MALFORMED_REQUEST")


def test_validation_error_is_422_with_fields(owner):
    response = owner.client.post("/v1/_probe", {"count": 9}, format="json")
    error = assert_error(response, 422, "VALIDATION")
    assert set(error["details"]["fields"]) == {"note", "count"}


def test_invalid_limit_is_422(owner):
    for limit in ("0", "201", "abc", "-1"):
        error = assert_error(owner.client.get(f"/v1/projects?limit={limit}"), 422, "VALIDATION")
        assert "limit" in error["details"]["fields"]


def test_invalid_cursor_is_422(owner):
    error = assert_error(owner.client.get("/v1/events?cursor=%%%garbage"), 422, "VALIDATION")
    assert "cursor" in error["details"]["fields"]


def test_rate_limit_is_429_with_retry_after(owner, settings):
    from django.core.cache import cache

    cache.clear()
    settings.LAYERS_API_RATE = "3/min"
    for _ in range(3):
        assert owner.client.get("/v1/projects").status_code == 200
    response = owner.client.get("/v1/projects")
    assert_error(response, 429, "RATE_LIMITED")
    assert int(response["Retry-After"]) >= 1
    cache.clear()


def test_rate_limit_is_per_key(owner, sibling, settings):
    from django.core.cache import cache

    cache.clear()
    settings.LAYERS_API_RATE = "2/min"
    for _ in range(2):
        owner.client.get("/v1/projects")
    assert owner.client.get("/v1/projects").status_code == 429
    assert sibling.client.get("/v1/projects").status_code == 200
    # a second key of the same organization (another of its services) has its own budget too
    _, raw = services.api_key_create(organization=owner.org, return_domains=["acme.test"], name="batch jobs")
    second = APIClient()
    second.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert second.get("/v1/projects").status_code == 200
    cache.clear()


def test_wrong_keys_from_one_address_get_429_while_valid_keys_there_are_served(owner, anon, settings):
    from django.core.cache import cache

    cache.clear()
    settings.LAYERS_AUTH_FAILURE_RATE = "3/min"
    wrong = f"Bearer {owner.raw_key[:-4]}XXXX"
    for _ in range(3):
        assert_error(anon.get("/v1/projects", HTTP_AUTHORIZATION=wrong), 401, "UNAUTHENTICATED")

    limited = anon.get("/v1/projects", HTTP_AUTHORIZATION=wrong)
    assert_error(limited, 429, "RATE_LIMITED")
    assert 1 <= int(limited["Retry-After"]) <= 60
    assert_error(anon.get("/v1/projects", HTTP_AUTHORIZATION="Token nonsense"), 429, "RATE_LIMITED")
    # A valid key from the same address is served; a wrong key from another address is still told 401.
    assert owner.client.get("/v1/projects").status_code == 200
    other = anon.get("/v1/projects", HTTP_AUTHORIZATION=wrong, REMOTE_ADDR="203.0.113.9")
    assert_error(other, 401, "UNAUTHENTICATED")
    cache.clear()


def test_crash_is_500_without_internals(owner):
    response = owner.client.get("/v1/_boom")
    assert_error(response, 500, "INTERNAL")
    text = response.content.decode()
    assert "secret-internal-detail" not in text and "SELECT" not in text and "Traceback" not in text


def test_healthz_and_readyz_need_no_key(anon, db):
    assert anon.get("/healthz").json() == {"status": "ok"}
    ready = anon.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}


CAPTION = "Café 日本 🚀"


@pytest.mark.parametrize("charset", ["ISO-8859-1", "windows-1252", "bogus-charset", "utf-8", "UTF-8"])
def test_a_json_body_is_read_as_utf8_whatever_charset_its_content_type_names(owner, charset):
    # RFC 8259: JSON is UTF-8 and a charset parameter has no effect. Decoded by the label, a UTF-8 caption
    # sent as ISO-8859-1 was stored (and would have been posted) as "CafÃ© æ—¥æœ¬ ðŸš€".
    body = json.dumps(
        {"mediaType": "video", "mediaUrls": ["https://cdn.acme.test/c.mp4"], "caption": CAPTION}, ensure_ascii=False
    ).encode()
    response = owner.client.post(
        f"/v1/projects/{owner.project.id}/content", body, content_type=f"application/json; charset={charset}"
    )
    assert response.status_code == 201, response.json()
    assert owner.client.get(f"/v1/content/{response.json()['id']}").json()["caption"] == CAPTION


def test_a_body_written_in_latin1_is_400_not_read_as_something_else(owner):
    body = '{"mediaType": "video", "mediaUrls": ["https://cdn.acme.test/c.mp4"], "caption": "Café"}'.encode("latin-1")
    response = owner.client.post(
        f"/v1/projects/{owner.project.id}/content", body, content_type="application/json; charset=ISO-8859-1"
    )
    assert_error(response, 400, "MALFORMED_REQUEST")
