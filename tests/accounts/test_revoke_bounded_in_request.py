"""Revoking accounts at incident scale from the admin (a platform invalidated thousands of tokens; a partner with
thousands of leased accounts churned): the web request does a bounded part itself and hands the rest to a worker
in a few tasks. Leased accounts make no platform call, and were all revoked in the request (10,000 leased accounts:
minutes, past gunicorn's timeout and any proxy's); the connected accounts past the request's platform calls were
queued one task each from the request (50,000 broker calls in one web request)."""

import math

import pytest
from django.contrib.admin.models import LogEntry
from django.test import Client

from accounts import services
from accounts.models import SocialAccount
from tests.accounts.test_admin_audit_at_scale import confirmed, many_accounts
from tests.platform_helpers import held_tasks
from tests.staff import staff_login, superuser

pytestmark = pytest.mark.django_db

IN_REQUEST = 50  # revokes made in the request (monkeypatched small: CI-cheap)
TASK_ROWS = 300  # account ids one worker task takes


@pytest.fixture(autouse=True)
def small_bounds(monkeypatch):
    monkeypatch.setattr("accounts.services.REVOKES_IN_REQUEST", IN_REQUEST, raising=False)
    monkeypatch.setattr("accounts.admin_bulk.TASK_ROWS", TASK_ROWS)


@pytest.fixture
def ops():
    return staff_login(Client(), superuser())


def leased(tenant, n: int) -> None:
    many_accounts(tenant, n)
    SocialAccount.objects.filter(organization=tenant.org).update(kind="leased")


def sent(held) -> list[tuple]:
    return [(task, args) for task, args in held if "revoke" in task.name]


def handed_ids(held) -> list[str]:
    return [pk for _, args in sent(held) for pk in (args[0] if isinstance(args[0], list) else [args[0]])]


def test_revoking_thousands_of_leased_accounts_revokes_a_bounded_number_in_the_request(owner, ops):
    leased(owner, 1_000)
    first = SocialAccount.objects.order_by("pk").first()

    with held_tasks() as held:
        told = confirmed(ops, "/admin/accounts/socialaccount/", "revoke_accounts", first.pk)

    in_request = SocialAccount.objects.filter(status="disconnected").count()
    assert in_request <= IN_REQUEST, in_request
    assert len(sent(held)) <= math.ceil(1_000 / TASK_ROWS), len(sent(held))
    handed = handed_ids(held)
    assert len(set(handed)) == len(handed) == 1_000 - in_request
    assert any(f"{len(handed):,} more" in m and "worker" in m for m in told), told


def test_revoking_thousands_of_connected_accounts_sends_a_few_tasks_from_the_request(owner, ops):
    many_accounts(owner, 2_000)
    first = SocialAccount.objects.order_by("pk").first()

    with held_tasks() as held:
        confirmed(ops, "/admin/accounts/socialaccount/", "revoke_accounts", first.pk)

    in_request = SocialAccount.objects.filter(status="disconnected").count()
    assert len(sent(held)) <= math.ceil(2_000 / TASK_ROWS), len(sent(held))
    assert len(set(handed_ids(held))) == 2_000 - in_request


def test_off_boarding_thousands_of_leased_accounts_is_bounded_in_the_request(owner, ops):
    leased(owner, 1_000)

    with held_tasks() as held:
        told = confirmed(ops, "/admin/accounts/organization/", "offboard_organizations", owner.org.pk)

    in_request = SocialAccount.objects.filter(status="disconnected").count()
    assert in_request <= IN_REQUEST, in_request
    assert len(sent(held)) <= math.ceil(1_000 / TASK_ROWS), len(sent(held))
    assert len(set(handed_ids(held))) == 1_000 - in_request
    assert any(f"A worker disconnects {1_000 - in_request} more account(s)" in m for m in told), told

    for task, args in sent(held) * 2:  # the worker; each task delivered twice
        task(*args)

    assert not SocialAccount.objects.exclude(status="disconnected").exists()
    for account in SocialAccount.objects.order_by("pk")[:3]:
        assert account.status_changes.filter(to_status="disconnected").count() == 1


def test_the_worker_revokes_each_handed_account_once_in_the_staff_members_name(
    owner, ops, monkeypatch, django_capture_on_commit_callbacks
):
    """The worker's half: each account disconnected once, its platform grant revoked by the worker, its history line
    under the staff member's name; one the partner disconnected meanwhile is not credited to staff; a task run twice
    (the broker delivering it again) does nothing more."""
    monkeypatch.setattr("accounts.services.REVOKES_IN_REQUEST", 2, raising=False)
    monkeypatch.setattr("accounts.admin_bulk.TASK_ROWS", 10)
    many_accounts(owner, 25)
    first = SocialAccount.objects.order_by("pk").first()
    with held_tasks() as held:
        confirmed(ops, "/admin/accounts/socialaccount/", "revoke_accounts", first.pk)
    handed = handed_ids(held)
    assert len(handed) == 25 - SocialAccount.objects.filter(status="disconnected").count()
    partner_gone = handed[-1]
    services.social_account_revoke(account_id=partner_gone, api_key=owner.key)
    revoked_at_platform = []
    real = services._revoke_at_platform
    monkeypatch.setattr(
        services, "_revoke_at_platform", lambda **kw: revoked_at_platform.append(kw["what"]) or real(**kw)
    )

    for task, args in sent(held) * 2:  # each task delivered twice
        with django_capture_on_commit_callbacks(execute=True):  # the revokes' platform calls, after each commit
            task(*args)

    assert not SocialAccount.objects.exclude(status="disconnected").exists()
    assert len(revoked_at_platform) == len(handed) - 1
    history = LogEntry.objects.filter(content_type__model="socialaccount")
    assert history.filter(object_id__in=handed).count() == len(handed) - 1
    assert set(history.values_list("user_id", flat=True)) == {int(ops.session["_auth_user_id"])}
    assert set(history.values_list("change_message", flat=True)) == {
        "Admin action: Revoke (disconnect) selected accounts"
    }
    assert not history.filter(object_id=partner_gone).exists()
    for pk in handed:
        assert SocialAccount.objects.get(pk=pk).status_changes.filter(to_status="disconnected").count() == 1
