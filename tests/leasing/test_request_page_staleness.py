"""What ops do from a lease request's page while the request, or the pool, changed since the page was read: a
colleague took the request, ops renamed or repriced a pool account. Each posts what the page holds, as the
browser would."""

import re

import pytest
from django.core.management import call_command

from accounts.models import Event
from leasing import services
from leasing.models import Lease, LeaseRequest, PoolAccount
from tests.leasing.helpers import add_pool, get_request, request_accounts
from tests.leasing.test_busy_day import ops, page_text
from tests.staff import admin_object_url

pytestmark = pytest.mark.django_db(transaction=True)


def form_of(page, action: str, **typed) -> dict:
    """What the browser posts when `action`'s button of `page` is pressed: the hidden fields of that button's
    form, the button, and what the staff member typed or ticked (`typed`)."""
    html = page.content.decode()
    form = next(f for f in html.split("<form")[1:] if f'name="action" value="{action}"' in f.split("</form>")[0])
    form = form.split("</form>")[0]
    posted: dict[str, list[str]] = {}
    for tag in re.findall(r"<input[^>]*>", form):
        if 'type="hidden"' in tag and "csrfmiddlewaretoken" not in tag:
            name = re.search(r'name="([^"]*)"', tag).group(1)
            posted.setdefault(name, []).append(re.search(r'value="([^"]*)"', tag).group(1))
    return {**posted, "action": action, **typed}


def told(answer) -> list[str]:
    return [str(m) for m in answer.context["messages"]]


def test_staff_cannot_assign_or_reject_a_request_a_colleague_took_while_their_page_was_open(owner):
    """Alice and Bob open the same new request; Alice takes it and starts choosing accounts. Bob, his page still
    saying "nobody yet", assigns (or rejects) it: only "Take" checked whom the page showed, so Bob leased accounts
    (charging the partner) or rejected the request under Alice's review, neither of them knowing. Bob is now told
    Alice reviews it; acting on it needs taking it over first, which says so in the history."""
    (pool_id,) = add_pool(1)
    request_id = request_accounts(owner, 1)["requestId"]
    url = admin_object_url(LeaseRequest, request_id)
    alice, bob = ops("alice"), ops("bob")
    bob_page = bob.get(url)
    alice.post(url, form_of(alice.get(url), "take"))

    for action, typed in (("assign", {"pool_account": pool_id}), ("auto", {}), ("reject", {"reason": "none left"})):
        answer = bob.post(url, form_of(bob_page, action, **typed), follow=True)
        assert any("alice" in m and "took this request" in m for m in told(answer)), (action, told(answer))
        request = LeaseRequest.objects.get(pk=request_id)
        assert (request.status, request.reviewer) == (LeaseRequest.Status.IN_REVIEW, alice.user), action
    assert not Lease.objects.exists()

    # From a page that shows Alice has it, acting without taking it over is refused too, naming her.
    alice_has_it = bob.get(url)
    assert "someone else has this request" in page_text(alice_has_it)
    answer = bob.post(url, form_of(alice_has_it, "assign", pool_account=pool_id), follow=True)
    assert any("alice" in m and "Take it over" in m for m in told(answer)), told(answer)
    assert not Lease.objects.exists()

    # Taking it over explicitly, then assigning, works; and Alice's own page still lets her act on hers.
    taken = bob.post(url, form_of(alice_has_it, "take"), follow=True)
    assert any("taken over from alice" in m for m in told(taken)), told(taken)
    bob.post(url, form_of(taken, "assign", pool_account=pool_id))
    assert get_request(owner, request_id)["status"] == "assigned"


def test_automation_and_the_reviewer_themselves_act_on_a_request_under_review(owner):
    """The commands carry no page: `lease_reject` on a request someone reviews still rejects it; and the
    reviewer's own page (no "Take" button, theirs) still assigns."""
    add_pool(1)
    first, second = request_accounts(owner, 1)["requestId"], request_accounts(owner, 1)["requestId"]
    alice = ops("alice")
    for request_id in (first, second):
        alice.post(
            admin_object_url(LeaseRequest, request_id),
            form_of(alice.get(admin_object_url(LeaseRequest, request_id)), "take"),
        )

    call_command("lease_reject", first, "--reason", "Out of stock.", stdout=None)
    assert get_request(owner, first)["status"] == "rejected"
    page = alice.get(admin_object_url(LeaseRequest, second))
    alice.post(admin_object_url(LeaseRequest, second), form_of(page, "auto"))
    assert get_request(owner, second)["status"] == "assigned"


def test_a_pool_account_renamed_by_ops_and_leased_again_to_the_same_partner_shows_its_new_handle(owner):
    """A pool account leased to a partner is released; its TikTok user changes the handle and ops rename the
    pool account; ops lease it again to the same partner. The new lease reused the partner's identity of that
    TikTok user, unchanged: the API showed the old handle and display name, while the lease, the ledger and the
    admin showed the new one. The identity takes the pool account's current names at the assignment."""
    (pool_id,) = add_pool(1)
    first = request_accounts(owner, 1)["requestId"]
    services.lease_assign(request_id=first, pool_account_ids=[pool_id])
    (before,) = get_request(owner, first)["socialAccountIds"]
    assert owner.client.delete(f"/v1/leased-accounts/{before}").status_code == 200
    PoolAccount.objects.filter(pk=pool_id).update(handle="fit.anna.new", display_name="Anna Fit (new)")

    second = request_accounts(owner, 1)["requestId"]
    seen = set(Event.objects.values_list("pk", flat=True))
    services.lease_assign(request_id=second, pool_account_ids=[pool_id])
    # The rename is no reconnect: the partner hears of the assignment, and of nothing else.
    assert [e.type for e in Event.objects.exclude(pk__in=seen)] == ["lease_request.assigned"]
    (after,) = get_request(owner, second)["socialAccountIds"]

    account = owner.client.get(f"/v1/social-accounts/{after}").json()
    assert (account["handle"], account["displayName"]) == ("fit.anna.new", "Anna Fit (new)")
    leased = owner.client.get(f"/v1/projects/{owner.project.id}/leased-accounts").json()["data"]
    assert {a["socialAccountId"]: a["handle"] for a in leased}[after] == "fit.anna.new"
    assert Lease.objects.get(social_account_id=after).handle == "fit.anna.new"


def test_an_account_repriced_after_the_page_showed_it_is_not_assigned_at_the_new_price_unseen(owner):
    """Alice's page lists @fitness… at $49.00 a month; ops reprice it to $59.00 (the pool's page) before she
    presses Assign. The assignment charged the partner $59.00, what the account cost when it was bound, not
    the price Alice chose it at. It is refused now, naming the account and both prices; from the page showing
    the new price it is assigned at that price."""
    from billing.models import LedgerEntry

    (pool_id,) = add_pool(1, price=4900)
    request_id = request_accounts(owner, 1)["requestId"]
    url = admin_object_url(LeaseRequest, request_id)
    alice = ops("alice")
    page = alice.get(url)
    assert "$49.00" in page_text(page)
    PoolAccount.objects.filter(pk=pool_id).update(monthly_price_cents=5900)
    handle = PoolAccount.objects.get(pk=pool_id).handle

    for action, typed in (("assign", {"pool_account": pool_id}), ("auto", {})):
        answer = alice.post(url, form_of(page, action, **typed), follow=True)
        assert any(f"@{handle}" in m and "$49.00" in m and "$59.00" in m for m in told(answer)), told(answer)
        assert not Lease.objects.exists() and not LedgerEntry.objects.filter(kind="lease_charge").exists(), action
        assert PoolAccount.objects.get(pk=pool_id).status == PoolAccount.Status.AVAILABLE

    alice.post(url, form_of(alice.get(url), "assign", pool_account=pool_id))
    (leased,) = owner.client.get(f"/v1/projects/{owner.project.id}/leased-accounts").json()["data"]
    assert leased["monthlyPriceCents"] == 5900


def test_an_account_repriced_while_a_worker_checks_its_token_is_billed_at_the_price_assigned(owner):
    """Alice assigns @fitness… at the $49.00 her page shows (checked at the reservation), and a worker checks its
    token before binding it; ops reprice the reserved account to $59.00 meanwhile (the pool's page allows it).
    The worker bound it at $59.00, charged at once: the price nobody chose it at, the very thing the reservation's
    check refuses. It is leased at the price it was reserved at."""
    from billing.models import LedgerEntry
    from tests.platform_helpers import held_tasks

    (pool_id,) = add_pool(1, price=4900)
    request_id = request_accounts(owner, 1)["requestId"]
    url = admin_object_url(LeaseRequest, request_id)
    alice = ops("alice")
    page = alice.get(url)

    with held_tasks() as held:
        alice.post(url, form_of(page, "assign", pool_account=pool_id))
    assert PoolAccount.objects.get(pk=pool_id).status == PoolAccount.Status.RESERVED
    PoolAccount.objects.filter(pk=pool_id).update(monthly_price_cents=5900)
    for task, args in held:
        task(*args)

    (leased,) = owner.client.get(f"/v1/projects/{owner.project.id}/leased-accounts").json()["data"]
    assert leased["monthlyPriceCents"] == 4900
    assert LedgerEntry.objects.get(kind="lease_charge").amount_cents == -4900
