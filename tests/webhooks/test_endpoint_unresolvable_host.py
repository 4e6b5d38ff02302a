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


@pytest.mark.django_db(transaction=True)
def test_one_organization_looks_up_one_webhook_host_at_a_time(owner, sibling, settings, monkeypatch):
    """A creation resolves the URL's host in the web request, and a name whose nameserver never answers holds
    the request's thread for the resolver's whole timeout (seconds, not bounded by us). A partner sending such
    creations side by side, within its request budget, took every web thread: the API stopped answering every
    partner. An organization now has one lookup at a time; another creation meanwhile is a 429 at once (with
    Retry-After), and other organizations' creations are not held up."""
    import threading

    from tests.concurrency import run_in_threads

    settings.LAYERS_WEBHOOK_ALLOW_PRIVATE = False
    looking_up, answer = threading.Event(), threading.Event()
    real = socket.getaddrinfo

    def resolver(host, port, *args, **kwargs):
        if host == "blackhole.partner.test":  # the nameserver that never answers, until the test lets it
            looking_up.set()
            answer.wait(30)
            raise socket.gaierror(socket.EAI_AGAIN, "no answer")
        if host.endswith(".test"):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)

    def stuck():
        return create(owner, "https://blackhole.partner.test/layers").status_code

    def meanwhile():
        assert looking_up.wait(30)
        try:
            return create(owner, "https://hooks2.partner.test/layers"), create(sibling, "https://b.partner.test/in")
        finally:
            answer.set()

    first, (second, other) = run_in_threads(stuck, meanwhile)

    assert first == 422
    assert_error(second, 429, "RATE_LIMITED")
    assert second.headers["Retry-After"].isdigit()
    assert other.status_code == 201, other.content
    assert create(owner, "https://hooks2.partner.test/layers").status_code == 201  # once the lookup is over


def test_an_organization_at_its_endpoint_cap_is_refused_before_any_lookup(owner, settings, monkeypatch):
    from accounts import crypto
    from accounts.webhooks.services import MAX_ENDPOINTS_PER_ORGANIZATION

    settings.LAYERS_WEBHOOK_ALLOW_PRIVATE = False
    WebhookEndpoint.objects.bulk_create(
        WebhookEndpoint(organization=owner.org, url=f"https://h{i}.test/", events=["scheduled_post.failed"],
                        secret_enc=crypto.encrypt("whsec_x"))
        for i in range(MAX_ENDPOINTS_PER_ORGANIZATION)
    )  # fmt: skip
    lookups = []
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: lookups.append(host) or [])

    assert_error(create(owner, "https://hooks.partner.test/layers"), 422, "VALIDATION")
    assert lookups == []
