"""A managed provider's secret that no longer decrypts (encrypted under a key removed from LAYERS_TOKEN_KEYS
before `rotate_token_keys` re-encrypted it), or that was never stored (a row made outside the admin, which
requires one: the ORM, a data migration). Before, its posts were signed with an empty key, every one failed
"The provider refused the post (HTTP 401)." and nothing was logged: it read as the provider's fault."""

import hashlib
import hmac
import logging

import pytest
from cryptography.fernet import Fernet

from accounts import crypto
from scheduling import services
from scheduling.models import ManagedProvider, ScheduledPostAttempt
from tests.accounts.oauth_helpers import connected_account
from tests.receivers import receiver
from tests.scheduling.publish_helpers import post, run_dispatcher, schedule_now
from tests.scheduling.test_ops_admin import staff  # noqa: F401 - the fixture
from tests.staff import admin_object_url

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "shared-with-provider"


def verifying(request):
    """The provider: 200 for a request signed with SECRET, 401 otherwise."""
    header = request["headers"]["Layers-Signature"]
    t = header.split(",")[0].removeprefix("t=")
    good = hmac.new(SECRET.encode(), f"{t}.".encode() + request["body"], hashlib.sha256).hexdigest()
    return (200, {"id": "mp-1"}, {}) if f"v1={good}" in header else (401, {"error": "bad signature"}, {})


def test_a_managed_post_failed_for_a_lost_provider_secret_is_not_counted_as_the_providers_refusal(owner):
    # The admin's "Platforms now" counts an attempt with a platform as that platform's answer: the provider
    # was never called, so it must not read as the provider refusing the post.
    account = connected_account(owner, "tiktok", "managed.lostkey2")
    provider = ManagedProvider.objects.create(project=owner.project, name="Boost", endpoint_url="https://p.example/")
    lost = Fernet(Fernet.generate_key()).encrypt(SECRET.encode()).decode()
    ManagedProvider.objects.filter(pk=provider.pk).update(secret_enc=lost)
    scheduled = schedule_now(owner, account["id"], mode="managed")
    run_dispatcher()

    assert post(owner, scheduled["id"])["status"] == "failed"
    [attempt] = ScheduledPostAttempt.objects.filter(post_id=scheduled["id"])
    assert attempt.platform is None


# How a provider can be stored without a secret Layers can sign with, and what its ERROR line says of it.
UNUSABLE_SECRETS = {
    # Under a key Layers no longer has.
    "lost key": (lambda: Fernet(Fernet.generate_key()).encrypt(SECRET.encode()).decode(), "no longer decrypts"),
    "none stored": (lambda: "", "no secret is stored"),
    "empty secret": (lambda: crypto.encrypt(""), "no secret is stored"),
}


@pytest.mark.parametrize("stored", UNUSABLE_SECRETS)
def test_a_provider_secret_that_cannot_be_signed_with_is_never_used_and_says_so(owner, caplog, staff, stored):  # noqa: F811
    stored_form, cause = UNUSABLE_SECRETS[stored]
    account = connected_account(owner, "tiktok", "managed.lostkey")
    caplog.set_level(logging.INFO)
    with receiver(verifying) as (url, received):
        provider = ManagedProvider.objects.create(project=owner.project, name="Boost", endpoint_url=url)
        ManagedProvider.objects.filter(pk=provider.pk).update(secret_enc=stored_form())
        scheduled = schedule_now(owner, account["id"], mode="managed")
        run_dispatcher()

        assert received == [], "the provider was called without its secret"
        body = post(owner, scheduled["id"])
        assert (body["status"], body["error"]["code"]) == ("failed", "PLATFORM_REJECTED"), body
        assert "secret is missing or cannot be read" in body["error"]["message"], body
        assert "admin" in body["error"]["message"], body
        [line] = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert line.name == "scheduling.services"
        for named in (provider.pk, owner.project.pk, cause):
            assert str(named) in line.getMessage(), line.getMessage()

        # Staff enter the secret again in the admin, then retry the post (the admin's retry action's service).
        saved = staff.post(
            admin_object_url(ManagedProvider, provider.pk),
            {"name": "Boost", "endpoint_url": url, "enabled": "on", "new_secret": SECRET},
        )
        assert saved.status_code == 302, saved.content.decode()[:2000]
        services.post_retry(post_id=scheduled["id"])
        run_dispatcher()

        assert len(received) == 1
        assert post(owner, scheduled["id"])["status"] == "published"
    assert SECRET not in caplog.text
