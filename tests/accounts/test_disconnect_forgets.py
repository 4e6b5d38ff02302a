"""A customer whose account the partner disconnected: what Layers copied of them for the live binding goes with
it. Their profile picture stayed in media storage, served to anyone at its URL, forever; the partner's return
URL (often carrying the customer's id or e-mail) stayed on the account though OAuth sessions holding it are
purged after 30 days, and a disconnected account is never reauthorized."""

from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.core.files.storage import default_storage
from django.test import Client

from accounts import services
from accounts.models import Event, SocialAccount
from tests.accounts.oauth_helpers import connected_account

pytestmark = pytest.mark.django_db(transaction=True)

TRACKED = "https://app.acme.test/connected?customer=jane%40example.com"


def media_name(url: str) -> str:
    path = urlsplit(url).path
    assert path.startswith(settings.MEDIA_URL), url
    return path[len(settings.MEDIA_URL) :]


@pytest.mark.parametrize("platform", ["tiktok", "instagram"])
def test_a_disconnect_deletes_the_copied_avatar_and_forgets_the_return_url(owner, platform):
    account = connected_account(owner, platform, "leaver.avatar", return_url=TRACKED)
    row = SocialAccount.objects.get(pk=account["id"])
    assert row.avatar_url and row.return_url == TRACKED
    name = media_name(row.avatar_url)
    assert default_storage.exists(name) and Client().get(urlsplit(row.avatar_url).path).status_code == 200

    assert owner.client.delete(f"/v1/social-accounts/{account['id']}").status_code == 200

    assert not default_storage.exists(name)
    assert Client().get(urlsplit(row.avatar_url).path).status_code == 404
    after = SocialAccount.objects.get(pk=account["id"])
    assert (after.avatar_url, after.return_url) == ("", "")
    assert owner.client.get(f"/v1/social-accounts/{account['id']}").json()["avatarUrl"] is None
    disconnected = Event.objects.get(type="social_account.disconnected", data__id=account["id"])
    assert disconnected.data["avatarUrl"] is None


def test_an_avatar_copy_finishing_after_the_disconnect_is_not_kept(owner, monkeypatch):
    # The post-connect fan-out may be fetching the picture while the partner disconnects: its copy must not
    # land on the disconnected account, nor stay in storage.
    account = connected_account(owner, "tiktok", "late.avatar")
    first = media_name(SocialAccount.objects.get(pk=account["id"]).avatar_url)
    SocialAccount.objects.filter(pk=account["id"]).update(avatar_url="")
    default_storage.delete(first)
    real_fetch = __import__("config.netguard", fromlist=["fetch_limited"]).fetch_limited

    def fetch_then_disconnect(*args, **kwargs):
        fetched = real_fetch(*args, **kwargs)
        services.social_account_revoke(account_id=account["id"], api_key=owner.key)
        return fetched

    monkeypatch.setattr("config.netguard.fetch_limited", fetch_then_disconnect)
    assert services.social_account_rehost_avatar(account_id=account["id"]) is None

    assert SocialAccount.objects.get(pk=account["id"]).avatar_url == ""
    folder = f"avatars/{account['id']}"
    assert not default_storage.exists(folder) or default_storage.listdir(folder) == ([], [])
