"""A managed provider receives partner content (caption, media URLs, handle, post id), signed: outside dev it
must be https on a public address, checked before every call and when staff save it in the admin, so the
admin cannot save a provider that every dispatch then refuses."""

import socket

import pytest

from config import netguard
from scheduling.models import ManagedProvider
from tests.accounts.oauth_helpers import connected_account
from tests.receivers import receiver
from tests.scheduling.publish_helpers import managed_provider, post, run_dispatcher, schedule_now
from tests.scheduling.test_ops_admin import PROVIDER_ADD, staff  # noqa: F401 - the fixture
from tests.staff import admin_object_url

PUBLIC_IP = "93.184.215.14"


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
        managed_provider(project=owner.project, name="Boost", endpoint_url=f"http://provider.example:{port}/in")
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
    # Only Layers staff can mend a provider: the partner reading the post is told so, not left to guess.
    assert "Layers staff must correct it in the admin" in body["error"]["message"], body["error"]


@pytest.mark.django_db(transaction=True)
def test_in_dev_a_local_http_provider_still_gets_its_posts(owner, settings):
    account = connected_account(owner, "tiktok", "managed.dev")
    settings.LAYERS_ALLOW_PRIVATE_FETCH = True  # make run: providers run on 127.0.0.1 over http
    with receiver() as (base, received):
        managed_provider(project=owner.project, name="Boost", endpoint_url=f"{base}/in")
        scheduled = schedule_now(owner, account["id"], mode="managed")
        run_dispatcher()
    assert len(received) == 1
    assert post(owner, scheduled["id"])["status"] == "published"


def add_provider(staff, owner, url, **fields):  # noqa: F811
    data = {"project": owner.project.pk, "name": "Boost", "endpoint_url": url, "enabled": "on"}
    return staff.post(PROVIDER_ADD, {**data, "new_secret": "shared-secret", **fields})


def endpoint_url_errors(response) -> list[str]:
    return list(response.context["adminform"].form.errors.get("endpoint_url", []))


@pytest.mark.parametrize(
    "url, address, problem",
    [
        ("https://10.0.0.7/in", None, "non-public"),
        ("https://internal.example/in", "10.0.0.7", "non-public"),
        ("http://provider.example/in", PUBLIC_IP, "https"),
    ],
)
def test_staff_cannot_save_a_provider_url_that_every_dispatch_will_refuse(
    owner,
    settings,
    monkeypatch,
    staff,  # noqa: F811
    url,
    address,
    problem,
):
    settings.LAYERS_ALLOW_PRIVATE_FETCH = False
    resolving(monkeypatch, {"internal.example": "10.0.0.7", "provider.example": PUBLIC_IP})

    response = add_provider(staff, owner, url)

    assert response.status_code == 200 and not ManagedProvider.objects.exists()
    assert any(problem in error for error in endpoint_url_errors(response)), endpoint_url_errors(response)


def test_staff_save_an_https_provider_on_a_public_address(owner, settings, monkeypatch, staff):  # noqa: F811
    settings.LAYERS_ALLOW_PRIVATE_FETCH = False
    resolving(monkeypatch, {"provider.example": PUBLIC_IP})

    response = add_provider(staff, owner, "https://provider.example/in")

    assert response.status_code == 302, response.content.decode()[:2000]
    assert ManagedProvider.objects.get().endpoint_url == "https://provider.example/in"


def test_in_dev_staff_save_a_local_http_provider(owner, settings, staff):  # noqa: F811
    settings.LAYERS_ALLOW_PRIVATE_FETCH = True

    response = add_provider(staff, owner, "http://127.0.0.1:9000/in")

    assert response.status_code == 302, response.content.decode()[:2000]
    assert ManagedProvider.objects.get().endpoint_url == "http://127.0.0.1:9000/in"


def test_a_provider_whose_host_does_not_resolve_now_is_saved_with_a_warning(owner, settings, monkeypatch, staff):  # noqa: F811
    settings.LAYERS_ALLOW_PRIVATE_FETCH = False
    resolving(monkeypatch, {"new-provider.example": socket.gaierror(socket.EAI_NONAME, "no answer")})

    response = add_provider(staff, owner, "https://new-provider.example/in")

    assert response.status_code == 302, response.content.decode()[:2000]
    assert ManagedProvider.objects.get().endpoint_url == "https://new-provider.example/in"
    page = staff.get(response.url).content.decode()
    assert "new-provider.example" in page and "retried" in page, page[:3000]


def test_a_provider_saved_before_the_check_can_still_be_disabled(owner, settings, monkeypatch, staff):  # noqa: F811
    """Ops disable a provider that every dispatch refuses without first having to find a URL that passes."""
    settings.LAYERS_ALLOW_PRIVATE_FETCH = False
    resolving(monkeypatch, {"provider.example": PUBLIC_IP})
    provider = ManagedProvider.objects.create(
        project=owner.project, name="Boost", endpoint_url="http://provider.example/in"
    )
    url = admin_object_url(ManagedProvider, provider.pk)
    data = {"name": "Boost", "endpoint_url": provider.endpoint_url}

    refused = staff.post(url, {**data, "enabled": "on"})
    assert refused.status_code == 200 and any("https" in e for e in endpoint_url_errors(refused))

    response = staff.post(url, data)  # "enabled" unticked

    assert response.status_code == 302, response.content.decode()[:2000]
    provider.refresh_from_db()
    assert provider.enabled is False


@pytest.mark.parametrize(
    "private_ok, enabled",
    [(False, "on"), (True, "on"), (True, "")],
    ids=["production", "dev", "dev, disabled"],
)
def test_a_provider_url_with_a_port_out_of_range_is_a_form_error_everywhere(
    owner,
    settings,
    monkeypatch,
    staff,  # noqa: F811
    private_ok,
    enabled,
):
    # Django's URL field takes any five digits as a port; reading one past 65535 raised ValueError in the
    # address check, a 500 in production, and in dev (no address check) the provider was saved, every
    # dispatch of its posts then failing. A port out of range is no URL anywhere, enabled or not.
    settings.LAYERS_ALLOW_PRIVATE_FETCH = private_ok
    resolving(monkeypatch, {"provider.example": PUBLIC_IP})

    response = add_provider(staff, owner, "https://provider.example:99999/hook", enabled=enabled)

    assert response.status_code == 200 and not ManagedProvider.objects.exists()
    assert any("port" in error for error in endpoint_url_errors(response)), endpoint_url_errors(response)


@pytest.mark.parametrize("allow_private", [False, True])
def test_the_address_check_calls_a_port_out_of_range_an_unsafe_url(allow_private):
    with pytest.raises(netguard.UnsafeURL, match="port"):
        netguard.assert_public_url("https://provider.example:99999/hook", allow_private=allow_private)
    # Port 0 was read as "no port" and checked as 443: saved, and every dispatch then refused a connection.
    with pytest.raises(netguard.UnsafeURL, match="port"):
        netguard.assert_public_url("https://provider.example:0/hook", allow_private=allow_private)
    with pytest.raises(netguard.UnsafeURL):
        netguard.assert_public_url("http://[abc/cb", allow_private=allow_private)


def test_a_provider_url_typed_without_its_scheme_is_saved_as_https(owner, settings, monkeypatch, staff):  # noqa: F811
    """Ops paste the provider's address as it is often written, without `https://`: Django's URL field
    took it for plain http, and the page then refused a URL ops never typed ("the URL must use https")."""
    settings.LAYERS_ALLOW_PRIVATE_FETCH = False
    resolving(monkeypatch, {"provider.example": PUBLIC_IP})

    response = add_provider(staff, owner, "provider.example/in")

    assert response.status_code == 302, endpoint_url_errors(response)
    assert ManagedProvider.objects.get().endpoint_url == "https://provider.example/in"
