"""Staff revoking many accounts from the admin ("Select all", then the confirmation page's Yes): TikTok
invalidated the tokens of thousands of accounts, or a partner asked for all of theirs to go. The first
revokes are made in the request, a worker makes the others (services.RevokeBudget); the page says so in a few
messages, not one per account (5,000 accounts: a 1.4 MB wall of them), and says only what this staff member
did."""

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.models import LogEntry
from django.test import Client

from accounts import services
from accounts.admin_bulk import ROW_MESSAGES
from accounts.models import SocialAccount
from tests.factories import make_account
from tests.platform_helpers import held_tasks
from tests.staff import staff_login, superuser

pytestmark = pytest.mark.django_db

ACCOUNTS = "/admin/accounts/socialaccount/"


@pytest.fixture
def ops():
    return staff_login(Client(), superuser())


def confirmed(client, data):
    return [str(m) for m in client.post(ACCOUNTS, {**data, "post": "yes"}, follow=True).context["messages"]]


def test_revoking_many_accounts_counts_those_a_worker_disconnects_in_one_message(owner, ops):
    ids = [make_account(owner).pk for _ in range(40)]

    with held_tasks() as held:
        told = confirmed(
            ops,
            {"action": "revoke_accounts", ACTION_CHECKBOX_NAME: [ids[0]], "select_across": "1", "index": "0"},
        )

    queued = [pk for task, args in held if task.name.endswith("social_accounts_revoke_by_staff") for pk in args[0]]
    inline = len(ids) - len(queued)
    assert len(told) <= inline + 1, told
    assert sum("disconnected, 0 queued post(s) canceled" in m for m in told) == inline
    assert any(f"Social accounts: {len(queued)} more" in m and "worker" in m for m in told), told
    assert SocialAccount.objects.filter(status="disconnected").count() == inline


def test_a_few_accounts_are_still_named_one_message_each(owner, ops):
    ids = [make_account(owner).pk for _ in range(ROW_MESSAGES - 2)]

    with held_tasks():
        told = confirmed(ops, {"action": "revoke_accounts", ACTION_CHECKBOX_NAME: ids, "index": "0"})

    assert len(told) == len(ids), told
    assert all(any(pk in m for m in told) for pk in ids), told


def test_ops_revoking_an_account_the_partner_disconnected_a_moment_before_are_not_told_they_did(
    owner, ops, monkeypatch
):
    """The partner's DELETE lands between the list reading the account (still connected) and the staff member's
    revoke. She was told "disconnected, 0 queued post(s) canceled" and her history said she did it; the status
    history says the partner did. She is told it was disconnected already, and by whom."""
    account = make_account(owner)
    real = services.social_account_revoke

    def partner_first(**kwargs):
        real(account_id=account.pk, api_key=owner.key)  # the partner's DELETE /v1/social-accounts/…
        return real(**kwargs)

    monkeypatch.setattr(services, "social_account_revoke", partner_first)

    told = confirmed(ops, {"action": "revoke_accounts", ACTION_CHECKBOX_NAME: [account.pk], "index": "0"})

    assert not any("disconnected, " in m for m in told), told
    assert any("already disconnected" in m and f"API key {owner.key.name}" in m for m in told), told
    assert not LogEntry.objects.filter(object_id=account.pk).exists()  # her history: nothing done
    assert account.status_changes.filter(to_status="disconnected").count() == 1


def test_revoking_every_key_of_a_list_counts_them_in_one_message(owner, ops):
    from accounts.models import ApiKey

    for n in range(30):
        services.api_key_create(organization=owner.org, return_domains=[], name=f"batch {n}")
    ApiKey.objects.filter(name="batch 0").update(revoked_at=owner.key.created_at)
    data = {"action": "revoke_keys", ACTION_CHECKBOX_NAME: [owner.key.pk], "select_across": "1", "index": "0"}

    told = [
        str(m) for m in ops.post("/admin/accounts/apikey/", {**data, "post": "yes"}, follow=True).context["messages"]
    ]

    assert told == ["API keys: 30 revoked: every call made with them is refused (401) from now on."] + [
        m for m in told if "already revoked" in m
    ], told
    assert not ApiKey.objects.filter(revoked_at__isnull=True).exists()
    assert LogEntry.objects.filter(content_type__model="apikey").count() == 30
