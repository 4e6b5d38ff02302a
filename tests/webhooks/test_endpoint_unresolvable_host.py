"""A webhook destination is checked when it is created: one whose host does not resolve is refused then
(the partner is there to fix it), even though a managed provider's unresolvable host is only retried."""

import socket

import pytest

from tests.conftest import assert_error

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("error", [socket.EAI_AGAIN, socket.EAI_NONAME])
def test_creating_an_endpoint_whose_host_does_not_resolve_is_422(owner, settings, monkeypatch, error):
    settings.LAYERS_WEBHOOK_ALLOW_PRIVATE = False
    real = socket.getaddrinfo

    def unresolvable(host, *args, **kwargs):
        if host == "hooks.partner.test":
            raise socket.gaierror(error, "no answer")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", unresolvable)
    response = owner.client.post(
        "/v1/webhook-endpoints",
        {"url": "https://hooks.partner.test/layers", "events": ["scheduled_post.failed"]},
        format="json",
    )
    error_body = assert_error(response, 422, "VALIDATION")
    assert error_body["details"]["fields"] == {"url": ["Cannot resolve hooks.partner.test."]}
