"""A request fulfilled with fewer accounts than asked (`partial`) is topped up later: from the admin and the
command line, billed per new account, announced again with every assigned id, and never touching what is
already leased. A top-up that fails leaves the partner's request `partial` with its leases, not `failed`."""

import json
import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management.base import CommandError
from django.test import Client
from django.utils import timezone

from accounts.models import Event, SocialAccount
from billing.models import LedgerEntry
from leasing import services
from leasing.models import Lease, LeaseRequest, PoolAccount
from tests.concurrency import run_in_threads
from tests.leasing.helpers import add_pool, command, get_request, request_accounts
from tests.staff import admin_object_url, staff_login, with_mfa

pytestmark = pytest.mark.django_db(transaction=True)


def ops(name: str) -> Client:
    user = with_mfa(get_user_model().objects.create_superuser(name, f"{name}@layers.test", f"pw-{name}-12345"))
    return staff_login(Client(), user)


def page_text(response) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", response.content.decode()).split())


def kill_token(pool_id: str) -> None:
    handle = PoolAccount.objects.get(pk=pool_id).handle
    Client().post("/sandbox/tiktok/_control/invalidate-tokens", {"username": handle}, content_type="application/json")


def leases_as_they_are(request_id: str) -> dict:
    return {
        lease.pk: (lease.social_account_id, lease.pool_account_id, lease.assigned_at, lease.released_at)
        for lease in Lease.objects.filter(request_id=request_id)
    }


def test_staff_top_up_a_partial_request_from_the_admin_and_it_becomes_assigned(owner):
    add_pool(2)
    rid = request_accounts(owner, 3)["requestId"]
    alice = ops("alice")
    url = admin_object_url(LeaseRequest, rid)
    alice.post(url, {"action": "auto"})
    first = get_request(owner, rid)
    assert first["status"] == "partial" and first["assignedCount"] == 2
    before = leases_as_they_are(rid)

    # A third warm account arrives in the niche: the page offers it for the one still to assign.
    (third,) = add_pool(1)
    page = page_text(alice.get(url))
    assert "1 still to assign" in page and "Auto-assign best 1" in page
    assert "Reject request" not in page  # a partial request has leases: it is not rejected (README)
    alice.post(url, {"action": "auto"})

    detail = get_request(owner, rid)
    assert detail["status"] == "assigned" and detail["assignedCount"] == 3
    assert set(first["socialAccountIds"]) < set(detail["socialAccountIds"])
    assert PoolAccount.objects.get(pk=third).status == "leased"
    # what was leased before is untouched; the new account is billed on its assignment, once
    after = leases_as_they_are(rid)
    assert {pk: after[pk] for pk in before} == before
    (new,) = set(after) - set(before)
    assert LedgerEntry.objects.filter(lease_id=new).count() == 1
    assert LedgerEntry.objects.filter(lease_id__in=before).count() == 2
    # the partner is told again, with every assigned id
    events = list(Event.objects.filter(type="lease_request.assigned").order_by("created_at"))
    assert [e.data["status"] for e in events] == ["partial", "assigned"]
    assert sorted(events[-1].data["socialAccountIds"]) == sorted(detail["socialAccountIds"])
    # all assigned: nothing more to assign
    with pytest.raises(services.LeaseError, match="assigned"):
        services.lease_assign(request_id=rid, auto=True)


def test_the_command_tops_up_a_partial_request_with_picked_accounts_up_to_what_is_still_to_assign(owner):
    (one,) = add_pool(1)
    rid = request_accounts(owner, 3)["requestId"]
    assert command("lease_assign", rid, "--pool-account", one)["status"] == "partial"
    more = add_pool(3)

    with pytest.raises(CommandError, match="2 still to assign"):
        command("lease_assign", rid, *[arg for pk in more for arg in ("--pool-account", pk)])
    assert command("lease_assign", rid, "--pool-account", more[0])["assignedCount"] == 2
    printed = command("lease_assign", rid, "--auto")

    assert printed == get_request(owner, rid) and printed["status"] == "assigned" and printed["assignedCount"] == 3
    assert Lease.objects.filter(request_id=rid, released_at__isnull=True).count() == 3


def test_a_failed_top_up_keeps_the_request_partial_with_its_leases_and_tells_staff_why(owner, capsys):
    from leasing.management.commands.lease_assign import Command

    (good,) = add_pool(1)
    rid = request_accounts(owner, 2)["requestId"]
    services.lease_assign(request_id=rid, pool_account_ids=[good])
    leased = get_request(owner, rid)
    before = leases_as_they_are(rid)
    (dead,) = add_pool(1)
    kill_token(dead)

    with pytest.raises(SystemExit) as exited:
        Command().run_from_argv(["manage.py", "lease_assign", rid, "--pool-account", dead, "--json"])

    # The partner still has the account leased and reads exactly that: not `failed` with "nothing was leased".
    detail = get_request(owner, rid)
    assert detail["status"] == "partial" and detail["failureReason"] is None
    assert detail["socialAccountIds"] == leased["socialAccountIds"]
    assert leases_as_they_are(rid) == before
    assert SocialAccount.objects.get(pk=leased["socialAccountIds"][0]).status == "connected"
    # The operator's script learns that nothing more was leased, and which account failed and why.
    assert exited.value.code == 1
    out, err = capsys.readouterr()
    assert json.loads(out) == detail
    assert PoolAccount.objects.get(pk=dead).handle in err and "nothing more was leased" in err
    assert PoolAccount.objects.get(pk=dead).status == "retired"
    # Staff read it on the request's page, which still offers the top-up.
    page = page_text(ops("bob").get(admin_object_url(LeaseRequest, rid)))
    assert "token is no longer valid" in page and "1 still to assign" in page
    # A healthy account afterwards completes it.
    (fresh,) = add_pool(1)
    assert services.lease_assign(request_id=rid, pool_account_ids=[fresh]).status == "assigned"


def test_a_top_up_interrupted_by_a_dead_process_is_given_back_and_the_request_stays_partial(owner, monkeypatch):
    (good,) = add_pool(1)
    rid = request_accounts(owner, 2)["requestId"]
    services.lease_assign(request_id=rid, pool_account_ids=[good])
    (other,) = add_pool(1)

    def process_killed(accounts):
        raise SystemExit("worker killed while checking tokens")

    with monkeypatch.context() as dying:
        dying.setattr(services, "_check_tokens", process_killed)
        with pytest.raises(SystemExit):
            services.lease_assign(request_id=rid, auto=True)
    assert get_request(owner, rid)["status"] == "provisioning"

    assert services.lease_requests_recover_interrupted(now=timezone.now() + timedelta(minutes=16)) == 1

    detail = get_request(owner, rid)
    assert detail["status"] == "partial" and detail["failureReason"] is None and detail["assignedCount"] == 1
    assert PoolAccount.objects.get(pk=other).status == "available"
    assert PoolAccount.objects.get(pk=good).status == "leased"


def test_two_staff_topping_up_the_same_partial_request_at_once_never_lease_more_than_asked(owner):
    (first,) = add_pool(1)
    rid = request_accounts(owner, 2)["requestId"]
    services.lease_assign(request_id=rid, pool_account_ids=[first])
    picks = add_pool(2)

    def staff(pool_id: str) -> str:
        try:
            return str(services.lease_assign(request_id=rid, pool_account_ids=[pool_id]).status)
        except services.LeaseError as exc:
            return exc.message

    outcomes = run_in_threads(lambda: staff(picks[0]), lambda: staff(picks[1]))

    assert outcomes.count("assigned") == 1, outcomes
    assert Lease.objects.filter(request_id=rid).count() == 2
    assert get_request(owner, rid)["status"] == "assigned"
    assert sorted(PoolAccount.objects.filter(pk__in=picks).values_list("status", flat=True)) == ["available", "leased"]


def test_a_partial_request_is_not_rejected_and_its_leases_stay(owner):
    (pool_id,) = add_pool(1)
    rid = request_accounts(owner, 2)["requestId"]
    services.lease_assign(request_id=rid, auto=True)

    with pytest.raises(services.LeaseError, match="stays partial"):
        services.lease_request_reject(request_id=rid, reason="no more accounts this month")

    assert get_request(owner, rid)["status"] == "partial"
    assert Lease.objects.get(request_id=rid).released_at is None
    assert PoolAccount.objects.get(pk=pool_id).status == "leased"


def test_a_top_up_the_task_queue_refuses_tells_staff_nothing_more_was_leased(owner):
    from unittest import mock

    from tests.outages import broker_down

    add_pool(1)
    rid = request_accounts(owner, 2)["requestId"]
    services.lease_assign(request_id=rid, auto=True)
    (other,) = add_pool(1)

    with mock.patch("leasing.tasks.lease_assign_check.delay", broker_down):
        answer = ops("carol").post(admin_object_url(LeaseRequest, rid), {"action": "auto"}, follow=True)

    # Not "Request partial." as if it had worked: staff are told the top-up failed, and why.
    text = page_text(answer)
    assert "The assignment failed, nothing more was leased" in text and "task queue" in text
    assert get_request(owner, rid)["status"] == "partial"
    assert PoolAccount.objects.get(pk=other).status == "available"


def test_a_colleague_tops_up_a_partial_request_from_their_own_page_without_taking_it_over(owner):
    # Alice reviewed the request and assigned what the pool had; days later Bob, on duty, tops it up. A partial
    # request is not taken back into review (its page offers no Take), so Bob's page, which shows Alice as its
    # reviewer, must not be refused as acting on a request someone else reviews.
    add_pool(1)
    rid = request_accounts(owner, 2)["requestId"]
    alice, bob = ops("alice"), ops("bob")
    url = admin_object_url(LeaseRequest, rid)
    alice.post(url, {"action": "take", "seen_reviewer": ""})
    alice.post(url, {"action": "auto", "seen_reviewer": str(LeaseRequest.objects.get(pk=rid).reviewer_id)})
    assert get_request(owner, rid)["status"] == "partial"

    add_pool(1)
    page = bob.get(url).content.decode()
    assert 'value="take"' not in page
    (seen,) = set(re.findall(r'name="seen_reviewer" value="([^"]*)"', page))
    response = bob.post(url, {"action": "auto", "seen_reviewer": seen}, follow=True)

    assert get_request(owner, rid)["status"] == "assigned", page_text(response)
    assert "Take it over first" not in page_text(response)
