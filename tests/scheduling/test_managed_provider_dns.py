"""The managed provider's host name not resolving for a moment is an outage like a refused connection: retried
with the usual backoff and attempt cap, not a refusal. An address found non-public stays a refusal."""

import socket

import pytest
import time_machine

from scheduling.models import ScheduledPost
from tests.accounts.oauth_helpers import connected_account
from tests.scheduling.publish_helpers import later, managed_provider, post, run_dispatcher, schedule_now

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_temporary_dns_failure_of_the_managed_provider_is_retried_not_a_rejection(owner, settings, monkeypatch):
    # Production: private fetches off. The provider's name cannot be resolved for a moment (EAI_AGAIN:
    # "Temporary failure in name resolution"), as during a resolver restart.
    def flaky(port):
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    scheduled = managed_post_with_provider_resolving(owner, settings, monkeypatch, "managed.dns", flaky)
    run_dispatcher()
    body = post(owner, scheduled["id"])
    # Retried with backoff like a connection error, not failed for good as "the provider refused it".
    assert body["status"] == "queued", (body["status"], body["error"])
    row = ScheduledPost.objects.get(pk=scheduled["id"])  # what ops see in the admin while it waits
    assert row.error_code == "PLATFORM_UNAVAILABLE" and "did not resolve" in row.error_message, row.error_message
    for minutes in range(5, 65, 5):
        with time_machine.travel(later(minutes=minutes)):
            run_dispatcher()
    body = post(owner, scheduled["id"])
    # Until the next try would fall past the post's retry window (an hour after its time).
    assert (body["status"], body["error"]["code"]) == ("failed", "PLATFORM_UNAVAILABLE"), body
    assert body["attempts"] > 5 and "(retry window: 60 minutes)" in body["error"]["message"], body


def test_a_managed_provider_on_a_private_address_is_still_refused_for_good(owner, settings, monkeypatch):
    def internal(port):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port))]

    scheduled = managed_post_with_provider_resolving(owner, settings, monkeypatch, "managed.private", internal)
    run_dispatcher()
    body = post(owner, scheduled["id"])
    assert (body["status"], body["error"]["code"]) == ("failed", "PLATFORM_REJECTED"), body


def managed_post_with_provider_resolving(owner, settings, monkeypatch, handle: str, answer):
    """A managed post due now in a project whose provider is https://provider.example, whose name lookups
    `answer(port)` gives (or raises); private fetches off, as in production."""
    account = connected_account(owner, "tiktok", handle)
    managed_provider(project=owner.project, name="Boost", endpoint_url="https://provider.example/in")
    scheduled = schedule_now(owner, account["id"], mode="managed")
    settings.LAYERS_ALLOW_PRIVATE_FETCH = False
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        return answer(port) if host == "provider.example" else real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return scheduled
