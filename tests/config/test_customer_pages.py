"""The pages an end-customer (the partner's user, often on a phone) can reach outside the API: when Django itself
answers (an address that matches no page, a request it refuses to read, a page someone may not open, an error
inside Layers), the page must still be readable on a phone and say what to do next, not Django's bare "Not
Found" / "Bad Request (400)" / "403 Forbidden" / "Server Error (500)". The API and the platforms' webhook
receivers keep answering API.md's JSON envelope."""

import pytest
from django.db import OperationalError
from django.test import Client

from tests.staff import signed_in_staff

pytestmark = pytest.mark.django_db

VIEWPORT = b'<meta name="viewport" content="width=device-width, initial-scale=1">'


def assert_customer_page(response, status: int, *phrases: str):
    assert response.status_code == status
    assert response["Content-Type"].startswith("text/html")
    body = response.content
    # Without the viewport a phone draws the page 980 px wide: the text is a few pixels high.
    assert VIEWPORT in body and b'<html lang="en">' in body and b"<title>" in body
    text = " ".join(body.decode().split())  # as a browser shows it: line breaks are spaces
    for phrase in phrases:
        assert phrase in text
    for django_words in (
        "The requested resource was not found on this server",
        "Server Error (500)",
        "Bad Request (400)",
        "403 Forbidden",
    ):
        assert django_words not in text


@pytest.mark.parametrize(
    "path",
    [
        "/data-deletion/",  # the code cut off the link
        "/data-deletion/ABCDEF0123456789ABCD/",  # a slash added after it (a chat app, a person retyping it)
        "/oauth/tiktok",  # the callback's address cut short
    ],
)
def test_an_address_that_matches_no_page_is_a_readable_page_saying_what_to_do(path):
    response = Client().get(path)

    assert_customer_page(response, 404, "Check the link you were given")


def test_an_error_inside_layers_at_the_oauth_callback_is_a_readable_page_saying_what_to_do(monkeypatch):
    # The database unreachable before the state is claimed (README: such requests answer 500): the customer,
    # back from TikTok, read "Server Error (500)" in a tiny font, and nothing about what to do.
    from accounts import services

    def unreachable(**kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(services, "oauth_callback", unreachable)

    response = Client(raise_request_exception=False).get("/oauth/tiktok/callback?code=abc&state=st_" + "0" * 40)

    assert_customer_page(response, 500, "Try again in a few minutes", "go back to the app you came from")
    assert "connection refused" not in response.content.decode()


MANY_FIELDS = "&".join(f"a{i}=1" for i in range(1001))


@pytest.mark.parametrize(
    "path, host",
    [
        # A link to the callback carrying more than the 1,000 query parameters Django reads (a broken redirect
        # appending to it): Django refuses to read it (TooManyFieldsSent).
        (f"/oauth/tiktok/callback?code=abc&state=st_{'0' * 40}&{MANY_FIELDS}", "testserver"),
        # A proxy that forwards a Host the settings do not name (DisallowedHost), on the customer's way back.
        (f"/oauth/tiktok/callback?code=abc&state=st_{'0' * 40}", "layers-internal.example"),
        ("/data-deletion/ABCDEF0123456789ABCD", "layers-internal.example"),
    ],
)
def test_a_request_django_refuses_to_read_is_a_readable_page_saying_what_to_do(path, host):
    # Django's own "Bad Request (400)": no viewport, and nothing about what to do.
    response = Client(HTTP_HOST=host, raise_request_exception=False).get(path)

    assert_customer_page(response, 400, "could not read this request", "go back to the app you came from")
    assert "layers-internal.example" not in response.content.decode()  # nothing of what was refused is echoed


def test_a_page_someone_may_not_open_is_a_readable_page_saying_what_to_do():
    # A staff member without the permission a back-office page needs read Django's bare "403 Forbidden",
    # on a phone too (the admin works there); the same page answers any PermissionDenied outside the API.
    _, client = signed_in_staff()

    response = client.get("/admin/accounts/organization/")

    assert_customer_page(response, 403, "You do not have access to this page", "ask a Layers superuser")


def test_staff_refused_by_a_back_office_page_asking_for_json_are_refused_not_told_it_does_not_exist():
    # The admin's autocomplete asks with Accept: application/json; a refusal there is still a 403, not the
    # API's "404: nothing here" envelope, which is kept for the JSON paths.
    _, client = signed_in_staff()

    response = client.get("/admin/accounts/organization/", HTTP_ACCEPT="application/json")

    assert response.status_code == 403


@pytest.mark.parametrize(
    "path, host, status, code",
    [
        ("/v1/projects", "layers-internal.example", 400, "MALFORMED_REQUEST"),
        (f"/v1/projects?{MANY_FIELDS}", "testserver", 400, "MALFORMED_REQUEST"),
        ("/platform-webhooks/tiktok", "layers-internal.example", 400, "MALFORMED_REQUEST"),
    ],
)
def test_the_api_keeps_answering_its_json_envelope_not_the_customer_pages(owner, path, host, status, code):
    client = Client(HTTP_HOST=host, HTTP_AUTHORIZATION=f"Bearer {owner.raw_key}", raise_request_exception=False)

    response = client.get(path)

    assert response.status_code == status and response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == code


def test_a_signed_in_staff_browser_posting_to_the_api_without_a_csrf_token_gets_the_apis_answer(owner):
    # Staff trying the API from the browser they use the admin in: the API authenticates by key only, so the
    # session cookie without a CSRF token must not turn its answer into a CSRF 403 page.
    _, staff = signed_in_staff()
    client = Client(
        enforce_csrf_checks=True, raise_request_exception=False, HTTP_AUTHORIZATION=f"Bearer {owner.raw_key}"
    )
    client.cookies = staff.cookies

    response = client.post("/v1/webhook-endpoints", {}, content_type="application/json")

    assert response.status_code == 422 and response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "VALIDATION"


@pytest.mark.urls("tests.config.forbidden_urls")
def test_a_permission_denied_outside_drf_answers_the_envelope_on_json_paths_and_the_page_elsewhere():
    client = Client(raise_request_exception=False)

    platform = client.post("/platform-webhooks/forbidden-probe", "{}", content_type="application/json")
    page = client.get("/oauth/forbidden-probe")

    # As inside the API (config.api.errors.exception_handler): never reveal that something exists.
    assert platform.status_code == 404 and platform["Content-Type"] == "application/json"
    assert platform.json()["error"]["code"] == "NOT_FOUND"
    assert_customer_page(page, 403, "You do not have access to this page")
    assert "rule 42" not in page.content.decode()
