"""A managed provider receives partner content (caption, media URLs, handle, post id), signed: outside dev it
must be https on a public address, checked before every call."""

import socket

import pytest

from config import netguard
from scheduling.models import ManagedProvider
from tests.accounts.oauth_helpers import connected_account
from tests.receivers import receiver
from tests.scheduling.publish_helpers import post, run_dispatcher, schedule_now


def resolving(monkeypatch, answers: dict):
    """Name lookups of the hosts in `answers` give that address (or raise it, an exception); others as usual."""
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in answers:
            return real(host, port, *args, **kwargs)
        if isinstance(answers[host], Exception):
            raise answers[host]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.mark.django_db(transaction=True)
def test_a_plain_http_provider_is_not_sent_partner_content_in_production(owner, settings, monkeypatch):
    account = connected_account(owner, "tiktok", "managed.cleartext")
    with receiver() as (base, received):
        port = base.rsplit(":", 1)[1]
        ManagedProvider.objects.create(
            project=owner.project, name="Boost", endpoint_url=f"http://provider.example:{port}/in"
        )
        scheduled = schedule_now(owner, account["id"], mode="managed")
        settings.LAYERS_ALLOW_PRIVATE_FETCH = False
        # The provider's name resolves to the receiver, counted as public: only the scheme is wrong.
        resolving(monkeypatch, {"provider.example": "127.0.0.1"})
        monkeypatch.setattr(netguard, "_ip_is_public", lambda ip: str(ip) == "127.0.0.1")
        run_dispatcher()
    assert received == [], f"sent in cleartext: {received[0]['body'][:80]!r}"
    body = post(owner, scheduled["id"])
    assert (body["status"], body["error"]["code"]) == ("failed", "PLATFORM_REJECTED"), body
    assert "https" in body["error"]["message"], body["error"]


@pytest.mark.django_db(transaction=True)
def test_in_dev_a_local_http_provider_still_gets_its_posts(owner, settings):
    account = connected_account(owner, "tiktok", "managed.dev")
    settings.LAYERS_ALLOW_PRIVATE_FETCH = True  # make run: providers run on 127.0.0.1 over http
    with receiver() as (base, received):
        ManagedProvider.objects.create(project=owner.project, name="Boost", endpoint_url=f"{base}/in")
        scheduled = schedule_now(owner, account["id"], mode="managed")
        run_dispatcher()
    assert len(received) == 1
    assert post(owner, scheduled["id"])["status"] == "published"
