"""The pages an end-customer (the partner's user, often on a phone) can reach outside the API: when Django itself
answers (an address that matches no page, an error inside Layers), the page must still be readable on a phone
and say what to do next, not Django's bare "Not Found" / "Server Error (500)"."""

import pytest
from django.db import OperationalError
from django.test import Client

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
    for django_words in ("The requested resource was not found on this server", "Server Error (500)"):
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
