"""A data deletion request applied while other work on the same account is underway, and what Layers keeps
about the person elsewhere (the admin's history). Its status page says "completed" the moment Meta's request is
answered: nothing that started before may put the person's picture or name back afterwards."""

import time
from dataclasses import replace

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.files.storage import default_storage

from accounts import services
from accounts.models import PlatformIdentity, SocialAccount
from config import netguard
from tests.accounts.oauth_helpers import connected_account, reauthorize
from tests.accounts.test_instagram_deauthorization import DATA_DELETION, payload_for, post, signed_request
from tests.config.test_web_request_platform_calls import ops_browser

pytestmark = pytest.mark.django_db(transaction=True)


def delete_data_of(username: str) -> None:
    # issued a second from now: every token stored so far is older than the request
    answer = post(DATA_DELETION, signed_request(payload_for(username, issued_at=int(time.time()) + 1)))
    assert answer.status_code == 200, answer.content


def avatar_files(account_id: str) -> list[str]:
    try:
        return default_storage.listdir(f"avatars/{account_id}")[1]
    except FileNotFoundError:
        return []


def without_its_avatar_copy(account: dict) -> SocialAccount:
    """The account as it is while its post-connect avatar copy has not run yet (queued, or retrying)."""
    for name in avatar_files(account["id"]):
        default_storage.delete(f"avatars/{account['id']}/{name}")
    SocialAccount.objects.filter(pk=account["id"]).update(avatar_url="")
    return SocialAccount.objects.get(pk=account["id"])


def test_an_avatar_copy_underway_does_not_put_the_picture_back_after_the_deletion(owner, monkeypatch):
    row = without_its_avatar_copy(connected_account(owner, "instagram", "ig.race"))
    real_fetch = netguard.fetch_limited

    def fetch_then_delete(*args, **kwargs):
        fetched = real_fetch(*args, **kwargs)
        delete_data_of("ig.race")  # Meta's request lands while the copy holds the picture's bytes
        return fetched

    monkeypatch.setattr(netguard, "fetch_limited", fetch_then_delete)

    assert services.social_account_rehost_avatar(account_id=row.pk) is None

    row.refresh_from_db()
    assert (row.status, row.access_token_enc, row.avatar_url) == ("reauth_required", "", "")
    assert owner.client.get(f"/v1/social-accounts/{row.pk}").json()["avatarUrl"] is None
    # and the bytes it had written are not served at their URL either
    assert avatar_files(row.pk) == []


def test_an_avatar_copy_whose_token_was_renewed_meanwhile_copies_again_with_the_new_token(owner, monkeypatch):
    # The guard above compares the token the copy read: a refresh (or a reconnect) in between is no deletion,
    # and the picture is copied again by the task's retry rather than given up.
    row = without_its_avatar_copy(connected_account(owner, "instagram", "ig.renewed"))
    real_fetch = netguard.fetch_limited

    def fetch_then_renew(*args, **kwargs):
        fetched = real_fetch(*args, **kwargs)
        SocialAccount.objects.filter(pk=row.pk).update(token_version=row.token_version + 1)
        return fetched

    with monkeypatch.context() as renewing:
        renewing.setattr(netguard, "fetch_limited", fetch_then_renew)
        assert services.social_account_fan_out(account_id=row.pk) == ["avatar"]  # the task retries it
    assert SocialAccount.objects.get(pk=row.pk).avatar_url == ""

    assert services.social_account_fan_out(account_id=row.pk) == []
    body = owner.client.get(f"/v1/social-accounts/{row.pk}").json()
    assert body["avatarUrl"] and avatar_files(row.pk)


def test_a_reconnect_after_the_deletion_gets_a_fresh_copy_of_the_picture(owner):
    account = connected_account(owner, "instagram", "ig.back")
    delete_data_of("ig.back")
    assert avatar_files(account["id"]) == []

    assert reauthorize(owner, account["id"], "instagram", "ig.back").status_code == 302

    body = owner.client.get(f"/v1/social-accounts/{account['id']}").json()
    assert (body["status"], body["handle"]) == ("connected", "ig.back")
    assert body["avatarUrl"] and avatar_files(account["id"])


def test_a_health_check_underway_does_not_write_the_erased_name_back(owner, monkeypatch):
    account = connected_account(owner, "instagram", "ig.health")
    SocialAccount.objects.filter(pk=account["id"]).update(health_checked_at=None)
    client_class = type(services._client("instagram"))
    real = client_class.get_profile

    def profile_then_delete(self, *args, **kwargs):
        profile = real(self, *args, **kwargs)
        delete_data_of("ig.health")  # the profile is read; Meta's request lands before it is stored
        return profile

    monkeypatch.setattr(client_class, "get_profile", profile_then_delete)

    assert services.social_account_check_health(account_id=account["id"]) == "skipped"

    row = SocialAccount.objects.select_related("identity").get(pk=account["id"])
    assert (row.identity.handle, row.identity.display_name) == ("", "")
    body = owner.client.get(f"/v1/social-accounts/{row.pk}").json()
    assert (body["status"], body["handle"], body["displayName"]) == ("reauth_required", "", "")


def test_a_refresh_underway_does_not_bring_the_wiped_tokens_back(owner, monkeypatch):
    account = connected_account(owner, "instagram", "ig.refresh")
    client_class = type(services._client("instagram"))

    def refresh_then_delete(self, *args, tokens, **kwargs):
        delete_data_of("ig.refresh")  # Instagram answered the refresh; Meta's request lands before it is stored
        return replace(tokens, access_token="NEW-ACCESS-TOKEN")

    monkeypatch.setattr(client_class, "refresh", refresh_then_delete)

    assert services.social_account_refresh_token(account_id=account["id"]) == "skipped"
    row = SocialAccount.objects.get(pk=account["id"])
    assert (row.status, row.access_token_enc, row.refresh_token_enc) == ("reauth_required", "", "")


def test_the_admins_history_forgets_the_erased_handle(owner):
    """Every audited admin action (and Django's own change-form saves) keeps the object's name as it was in
    LogEntry.object_repr, shown on the object's History page and in the admin index's "Recent actions" to
    every staff member, forever. The deletion rewrites those names to what the rows are called now."""
    account = connected_account(owner, "instagram", "ig.logged")
    kept = connected_account(owner, "instagram", "ig.kept")
    row = SocialAccount.objects.get(pk=account["id"])
    _, ops = ops_browser()
    revoked = ops.post(
        "/admin/accounts/socialaccount/",
        {"action": "revoke_accounts", "post": "yes", "_selected_action": [account["id"], kept["id"]]},
        follow=True,
    )
    assert revoked.status_code == 200
    # the identity's own history: a change-form save, as Django logs it
    LogEntry.objects.log_actions(
        user_id=LogEntry.objects.first().user_id,
        queryset=[row.identity],
        action_flag=2,
        change_message="[]",
    )
    assert "ig.logged" in ops.get("/admin/").content.decode()  # what the test would miss otherwise

    delete_data_of("ig.logged")

    logged = LogEntry.objects.filter(
        content_type=ContentType.objects.get_for_model(SocialAccount), object_id=account["id"]
    ).values_list("object_repr", flat=True)
    assert list(logged) == [f"{account['id']} (instagram, no handle)"]
    identity_logged = LogEntry.objects.filter(
        content_type=ContentType.objects.get_for_model(PlatformIdentity), object_id=row.identity_id
    ).values_list("object_repr", flat=True)
    assert list(identity_logged) and not any("ig.logged" in r for r in identity_logged)
    recent = ops.get("/admin/").content.decode()
    history = ops.get(f"/admin/accounts/socialaccount/{account['id']}/history/").content.decode()
    assert "ig.logged" not in recent and "ig.logged" not in history
    assert account["id"] in history
    # someone else's history is left as it was
    assert "ig.kept" in recent


def test_connecting_again_after_the_deletion_gets_a_fresh_copy_of_the_picture(owner):
    # Not through reauth-url: the customer goes through the partner's connect flow again, which reuses the
    # project's binding of the same person (same id) as a reconnect.
    account = connected_account(owner, "instagram", "ig.again")
    delete_data_of("ig.again")

    again = connected_account(owner, "instagram", "ig.again")

    assert again["id"] == account["id"]
    assert (again["status"], again["handle"]) == ("connected", "ig.again")
    assert again["avatarUrl"] and avatar_files(account["id"])
