"""Revoke accounts, revoke API keys and off-board organizations over a whole list ("Select all", then the
confirmation page's Yes), in an incident: a leaked key's partner with thousands of keys, TikTok killing every
token of a platform, a partner terminated with all its accounts. Each selected row done gets its history line
(LogEntry, "Admin action: …", by the staff member) and the page counts them; what must not happen is the web
process reading the whole selection at once for it (50,000 accounts, tokens and all: hundreds of MB in one
web process, swapped or killed mid-way with no one knowing which rows were done). Every read of those tables
takes at most a batch of rows (config.batches.BATCH_ROWS, made small here so that a few thousand rows show it)."""

import uuid
from contextlib import contextmanager

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.models import LogEntry
from django.db import connection
from django.test import Client
from django.utils import timezone

from accounts import crypto
from accounts.models import ApiKey, Organization, PlatformIdentity, SocialAccount
from tests.platform_helpers import held_tasks
from tests.staff import staff_login, superuser

pytestmark = pytest.mark.django_db

BATCH = 200


@pytest.fixture(autouse=True)
def small_batches(monkeypatch):
    monkeypatch.setattr("config.batches.BATCH_ROWS", BATCH)


@pytest.fixture
def ops():
    return staff_login(Client(), superuser())


@contextmanager
def rows_read(table: str):
    """The number of rows each SELECT from `table` brought into this process, as they ran (a client-side
    cursor holds a query's whole result once it has run: `rowcount`)."""
    counts: list[int] = []

    def count(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if sql.lstrip().upper().startswith("SELECT") and f'FROM "{table}"' in sql:
            counts.append(context["cursor"].rowcount)
        return result

    with connection.execute_wrapper(count):
        yield counts


def confirmed(client, url, action, pk):
    data = {"action": action, ACTION_CHECKBOX_NAME: [pk], "select_across": "1", "index": "0", "post": "yes"}
    return [str(m) for m in client.post(url, data, follow=True).context["messages"]]


def many_keys(tenant, n: int) -> None:
    ApiKey.objects.bulk_create(
        ApiKey(organization=tenant.org, name=f"leaked {i}", prefix=uuid.uuid4().hex[:16], key_hash="0" * 64)
        for i in range(n)
    )


def many_accounts(tenant, n: int, *, organization=None, project=None) -> None:
    organization = organization or tenant.org
    project = project or tenant.project
    tag = uuid.uuid4().hex[:8]
    identities = PlatformIdentity.objects.bulk_create(
        PlatformIdentity(organization=organization, platform="tiktok", platform_user_id=f"u{tag}{i}", handle=f"h{i}")
        for i in range(n)
    )
    token = crypto.encrypt("fake-token")
    SocialAccount.objects.bulk_create(
        SocialAccount(
            organization=organization,
            project=project,
            identity=identity,
            platform="tiktok",
            kind="connected",
            status="connected",
            access_token_enc=token,
        )
        for identity in identities
    )


def test_revoking_thousands_of_keys_reads_them_a_batch_at_a_time_and_audits_each(owner, ops):
    many_keys(owner, 3_000)
    ApiKey.objects.filter(name="leaked 0").update(revoked_at=owner.key.created_at)  # revoked before: left alone
    total = ApiKey.objects.count()

    with rows_read("accounts_apikey") as reads:
        told = confirmed(ops, "/admin/accounts/apikey/", "revoke_keys", owner.key.pk)

    assert not ApiKey.objects.filter(revoked_at__isnull=True).exists()
    assert told[0] == f"API keys: {total - 1:,} revoked: every call made with them is refused (401) from now on."
    assert "API key leaked 0 (" in told[1] and "already revoked" in told[1], told
    history = LogEntry.objects.filter(content_type__model="apikey")
    assert history.count() == total - 1  # each key revoked, not the one revoked before
    assert set(history.values_list("change_message", flat=True)) == {"Admin action: Revoke selected keys"}
    assert not history.filter(object_repr__startswith="leaked 0 (").exists()
    assert history.filter(object_repr__startswith="leaked 2999 (").exists()
    assert max(reads) <= BATCH, sorted(reads)[-5:]


def test_revoking_thousands_of_accounts_reads_them_a_batch_at_a_time_and_audits_each(owner, ops):
    many_accounts(owner, 2_500)
    first = SocialAccount.objects.order_by("pk").first()
    # Disconnected before: left alone.
    SocialAccount.objects.filter(pk=first.pk).update(status="disconnected", disconnected_at=timezone.now())

    with held_tasks() as held, rows_read("accounts_socialaccount") as reads:
        told = confirmed(ops, "/admin/accounts/socialaccount/", "revoke_accounts", first.pk)

    queued = [pk for task, args in held if task.name.endswith("social_accounts_revoke_by_staff") for pk in args[0]]
    done = SocialAccount.objects.filter(status="disconnected").exclude(pk=first.pk)
    assert done.count() + len(queued) == 2_499 and len(set(queued)) == len(queued)
    assert any(f"Social accounts: {len(queued):,} more are disconnected by a worker" in m for m in told), told
    assert any("Social accounts: 1 already disconnected" in m or f"{first.pk}: already disconnected" in m for m in told)
    # Each account revoked in the request has its line at the click; the worker writes the others' when it
    # revokes them (tests/accounts/test_revoke_bounded_in_request.py); the one left alone none.
    history = LogEntry.objects.filter(content_type__model="socialaccount")
    assert history.count() == done.count()
    assert not history.filter(object_id=first.pk).exists()
    some = done.select_related("identity").order_by("-pk").first()
    assert history.get(object_id=some.pk).object_repr == str(some)  # its label, the handle included
    assert max(reads) <= BATCH, sorted(reads)[-5:]


def test_off_boarding_a_partner_with_thousands_of_accounts_reads_them_a_batch_at_a_time(owner, ops):
    many_accounts(owner, 2_000)
    others = Organization.objects.bulk_create(Organization(name=f"Churned {i}") for i in range(BATCH + 5))

    accounts_read, organizations_read = rows_read("accounts_socialaccount"), rows_read("accounts_organization")
    with held_tasks() as held, accounts_read as accounts_read, organizations_read as organizations_read:
        told = confirmed(ops, "/admin/accounts/organization/", "offboard_organizations", owner.org.pk)

    queued = [pk for task, args in held if task.name.endswith("social_accounts_revoke_offboarded") for pk in args[0]]
    disconnected = SocialAccount.objects.filter(status="disconnected").count()
    assert disconnected + len(queued) == SocialAccount.objects.count() == 2_000
    assert Organization.objects.filter(offboarded_at__isnull=True).count() == 0
    assert any(f"A worker disconnects {len(queued)} more account(s)" in m for m in told), told
    history = LogEntry.objects.filter(content_type__model="organization")
    assert history.count() == len(others) + 1
    assert set(history.values_list("change_message", flat=True)) == {"Admin action: Off-board selected organizations"}
    assert max(accounts_read) <= BATCH, sorted(accounts_read)[-5:]
    assert max(organizations_read) <= BATCH, sorted(organizations_read)[-5:]
