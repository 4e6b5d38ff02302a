"""A webhook destination is checked when it is created: one whose host does not resolve, or resolves to a
private address, is refused then (the partner is there to fix it), even though a managed provider's
unresolvable host is only retried. Refused with one message for both: which names exist in Layers' own DNS
(split-horizon: internal service names resolving to private addresses) is none of a partner's business,
and telling "cannot resolve" from "resolves privately" would let one enumerate them. Staff get the detail
in the log."""

import logging
import socket

import pytest

from accounts.webhooks.models import WebhookEndpoint
from tests.conftest import assert_error

pytestmark = pytest.mark.django_db

NOT_PUBLIC = "The URL's host must resolve to public addresses only; check its name and DNS records."


@pytest.fixture
def internal_dns(settings, monkeypatch):
    """Layers' resolver: one internal service name (private address), names that do not exist, and a name
    whose resolver does not answer."""
    settings.LAYERS_WEBHOOK_ALLOW_PRIVATE = False
    real = socket.getaddrinfo

    def resolver(host, port, *args, **kwargs):
        if host == "postgres.layers.internal":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.3.7", port))]
        if host in ("nothing.layers.internal", "hooks.partner.test"):
            raise socket.gaierror(socket.EAI_NONAME, "no such name")
        if host == "slow.partner.test":
            raise socket.gaierror(socket.EAI_AGAIN, "no answer")
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)


def create(owner, url: str):
    return owner.client.post("/v1/webhook-endpoints", {"url": url, "events": ["scheduled_post.failed"]}, format="json")


@pytest.mark.parametrize(
    "host", ["hooks.partner.test", "slow.partner.test", "nothing.layers.internal", "postgres.layers.internal"]
)
def test_a_host_that_does_not_resolve_or_resolves_privately_is_422_with_one_message(owner, internal_dns, host):
    error_body = assert_error(create(owner, f"https://{host}/layers"), 422, "VALIDATION")
    assert error_body["details"]["fields"] == {"url": [NOT_PUBLIC]}
    assert WebhookEndpoint.objects.count() == 0


def test_staff_find_why_a_destination_was_refused_in_the_log(owner, internal_dns, caplog):
    with caplog.at_level(logging.INFO, logger="accounts.webhooks"):
        assert_error(create(owner, "https://postgres.layers.internal/layers"), 422, "VALIDATION")
        assert_error(create(owner, "https://nothing.layers.internal/layers"), 422, "VALIDATION")
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("accounts.webhooks")]
    assert any("postgres.layers.internal resolves to a non-public address" in m and owner.org.id in m for m in logged)
    assert any("cannot resolve nothing.layers.internal" in m for m in logged)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://10.0.3.7/hooks", "10.0.3.7 is not a public address."),
        ("https://[fd00::1]/hooks", "fd00::1 is not a public address."),
        ("https://localhost/hooks", "localhost is not a public address."),
        ("http://93.184.216.34/hooks", "The URL must use https."),  # not re-cased into "The url"
    ],
)
def test_what_reveals_nothing_about_our_dns_is_refused_with_a_message_that_says_what_is_wrong(
    owner, internal_dns, url, message
):
    error_body = assert_error(create(owner, url), 422, "VALIDATION")
    assert error_body["details"]["fields"] == {"url": [message]}
