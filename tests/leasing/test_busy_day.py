"""A busy day of leasing, as ops, finance and partners live it: two staff working the queue in two browsers,
assignments that fail and requests then rejected, accounts released and leased again the same day, and what
each of them reads afterwards in the admin and through the API."""

import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from accounts.models import Event
from leasing import services
from leasing.models import Lease, LeaseAction, LeaseRequest, PoolAccount
from tests.leasing.helpers import add_pool, get_request, request_accounts
from tests.staff import admin_object_url, staff_login, with_mfa

pytestmark = pytest.mark.django_db(transaction=True)


def ops(name: str) -> Client:
    """A staff member signed in to the admin in a browser of their own."""
    user = with_mfa(get_user_model().objects.create_superuser(name, f"{name}@layers.test", f"pw-{name}-12345"))
    browser = staff_login(Client(), user)
    browser.user = user
    return browser


def page_text(response) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", response.content.decode()).split())


def test_a_request_rejected_after_a_failed_assignment_no_longer_says_staff_will_assign_again(owner):
    (pool_id,) = add_pool(1)
    dead = PoolAccount.objects.get(pk=pool_id)
    Client().post(
        "/sandbox/tiktok/_control/invalidate-tokens", {"username": dead.handle}, content_type="application/json"
    )
    request_id = request_accounts(owner, 1)["requestId"]
    services.lease_assign(request_id=request_id, pool_account_ids=[pool_id])
    assert get_request(owner, request_id)["status"] == "failed"

    # No other account in the niche: ops reject it from the admin, with a reason for the partner.
    alice = ops("alice")
    url = admin_object_url(LeaseRequest, request_id)
    alice.post(url, {"action": "reject", "reason": "No warm fitness accounts in the US this month."})

    # The partner read "rejected" beside the failed attempt's "Layers staff will assign accounts again", in the
    # API and in the webhook: two answers, one a promise nobody keeps. The rejection is the last word.
    detail = get_request(owner, request_id)
    assert detail["status"] == "rejected"
    assert detail["rejectionReason"] == "No warm fitness accounts in the US this month."
    assert detail["failureReason"] is None
    assert Event.objects.get(type="lease_request.rejected").data["failureReason"] is None
    # Ops' page no longer shows what "the partner reads" of a failure the partner is not shown; the failed
    # attempt stays in the request's history.
    page = page_text(alice.get(url))
    assert "The partner reads" not in page
    assert "failed" in page and "token is no longer valid" in page


def test_finance_tells_apart_two_charges_of_one_account_released_and_leased_again_the_same_day(owner):
    """A partner releases an account in the morning and ops lease the same pool account to the partner's other
    project in the afternoon: two leases, two first months, both owed. On the wallet page and the ledger each
    read "@handle, month 1" on the same day for the same amount: a double charge to finance, with nothing on
    the row to show otherwise. Each charge now names its leased account (the `leaseSocialAccountId` the partner
    reads, and the Social account ID of the monthly report)."""
    (pool_id,) = add_pool(1)
    first = request_accounts(owner, 1)["requestId"]
    services.lease_assign(request_id=first, pool_account_ids=[pool_id])
    (morning,) = get_request(owner, first)["socialAccountIds"]
    assert owner.client.delete(f"/v1/leased-accounts/{morning}").status_code == 200
    second = request_accounts(owner, 1, project=owner.projects[1])["requestId"]
    services.lease_assign(request_id=second, pool_account_ids=[pool_id])
    (afternoon,) = get_request(owner, second, project=owner.projects[1])["socialAccountIds"]
    handle = PoolAccount.objects.get(pk=pool_id).handle

    finance = ops("finance")
    wallet_page = finance.get(f"/admin/billing/wallet/{owner.org.pk}/change/").content.decode()
    latest = wallet_page.split('id="latest-entries"')[1].split("</table>")[0]
    ledger_page = finance.get("/admin/billing/ledgerentry/", {"organization__id__exact": owner.org.pk})
    ledger = ledger_page.content.decode().split('id="result_list"')[1].split("</table>")[0]

    for shown in (latest, ledger):
        rows = [" ".join(re.sub(r"<[^>]+>", " ", row).split()) for row in shown.split("<tr")[2:]]
        charges = [row for row in rows if f"@{handle}" in row]
        assert len(charges) == 2, rows
        assert charges[0] != charges[1]
        assert sorted(account for row in charges for account in (morning, afternoon) if account in row) == sorted(
            [morning, afternoon]
        )


def test_two_staff_taking_one_request_from_pages_opened_together_do_not_silently_swap_it(owner):
    """Alice and Bob open the same new request in their browsers; Alice takes it, and Bob, his page still
    saying "nobody yet", takes it a moment later. Bob was told "You are reviewing this request" and Alice's
    review was taken over without either knowing: what taking a request is meant to prevent. Bob is now told
    Alice has it; taking over from the page that says so still works."""
    add_pool(1)
    request_id = request_accounts(owner, 1)["requestId"]
    url = admin_object_url(LeaseRequest, request_id)
    alice, bob = ops("alice"), ops("bob")
    alice_page, bob_page = alice.get(url), bob.get(url)
    assert "nobody yet" in page_text(alice_page) and "nobody yet" in page_text(bob_page)

    alice.post(url, {"action": "take", "seen_reviewer": ""})
    answer = bob.post(url, {"action": "take", "seen_reviewer": ""}, follow=True)

    told = [str(m) for m in answer.context["messages"]]
    assert LeaseRequest.objects.get(pk=request_id).reviewer == alice.user, told
    assert any("alice" in m and "took this request" in m for m in told), told
    assert "someone else has this request" in page_text(answer)

    # Bob means it: from the page that shows Alice has it, he takes it over (and the history says from whom).
    seen = answer.context["lease_request"].reviewer_id
    taken = bob.post(url, {"action": "take", "seen_reviewer": str(seen)}, follow=True)
    assert LeaseRequest.objects.get(pk=request_id).reviewer == bob.user
    assert any("alice" in str(m) for m in taken.context["messages"])


def test_a_take_form_whose_seen_reviewer_is_no_user_id_is_refused_like_a_stale_page_never_a_500(owner):
    """The form's seen_reviewer is read as "digits, else nobody". str.isdigit() also says yes to "²", "①" or
    Arabic-Indic digits, and to 5,000 digits: int() refused those (ValueError), a 500 to the staff member. A
    value that names no user is a page that saw nobody: someone else holding the request is not taken over."""
    add_pool(1)
    request_id = request_accounts(owner, 1)["requestId"]
    url = admin_object_url(LeaseRequest, request_id)
    alice, bob = ops("alice"), ops("bob")
    alice.post(url, {"action": "take", "seen_reviewer": ""})
    bob.raise_request_exception = False

    for odd in ("\u00b2", "\u2460", "\u0661", "9" * 5000, " 1", "-1", "1.0", "abc"):
        answer = bob.post(url, {"action": "take", "seen_reviewer": odd}, follow=True)
        assert answer.status_code == 200, (odd[:10], answer.status_code)
        assert any("took this request" in str(m) for m in answer.context["messages"]), odd[:10]
        assert LeaseRequest.objects.get(pk=request_id).reviewer == alice.user, odd[:10]


def test_ops_see_that_the_wallet_cannot_pay_the_first_months_of_the_accounts_they_are_about_to_assign(owner):
    """A partner with $60 in its wallet asks for 3 accounts at $49 a month. Assigning charges the three first
    months at once ($147): the wallet goes $87 past due. The request's page said "$60.00 (ok)": the warning came
    only once the debt existed, after the assignment that made it."""
    from billing.services import wallet_top_up

    add_pool(3, price=4900)
    wallet_top_up(organization=owner.org, cents=6000, reason="bank transfer")
    request_id = request_accounts(owner, 3)["requestId"]
    alice = ops("alice")

    page = alice.get(admin_object_url(LeaseRequest, request_id)).content.decode()

    assert 'id="candidates"' in page  # still theirs to assign (README, Billing)
    wallet = " ".join(re.sub(r"<[^>]+>", " ", page[page.index('id="wallet"') :].split("</dd>")[0]).split())
    assert "$60.00" in wallet and "(ok)" not in wallet
    assert "$147.00" in wallet and "does not cover" in wallet

    # A wallet that covers them is simply ok.
    wallet_top_up(organization=owner.org, cents=10000, reason="bank transfer")
    page = alice.get(admin_object_url(LeaseRequest, request_id)).content.decode()
    wallet = page[page.index('id="wallet"') :].split("</dd>")[0]
    assert "$160.00 (ok)" in wallet and "does not cover" not in wallet


def test_ops_releasing_a_lease_the_partner_released_a_moment_before_are_not_told_they_released_it(owner, monkeypatch):
    """Alice ticks a lease in the list and confirms its release; the partner's DELETE lands between the list
    reading the lease (still live) and her release. She was told "@handle: released, 0 queued post(s)
    canceled." though she released nothing: the history says the partner did, and she would tell the partner
    Layers released it. She is told it was already released, and by whom."""
    from accounts import services as account_services
    from leasing import admin as leasing_admin

    add_pool(1)
    request_id = request_accounts(owner, 1)["requestId"]
    services.lease_assign(request_id=request_id, auto=True)
    lease = Lease.objects.get()
    real = account_services.social_account_revoke

    def partner_first(**kwargs):
        real(account_id=lease.social_account_id, api_key=owner.key)  # the partner's DELETE /v1/leased-accounts/…
        return real(**kwargs)

    monkeypatch.setattr(leasing_admin, "social_account_revoke", partner_first)
    alice = ops("alice")
    confirmed = {"action": "release_leases", "_selected_action": [str(lease.pk)], "post": "yes"}

    told = [str(m) for m in alice.post("/admin/leasing/lease/", confirmed, follow=True).context["messages"]]

    assert not any("released, " in m for m in told), told
    assert any("already released" in m and "partner" in m for m in told), told
    assert "partner" in LeaseAction.objects.get(action="released").by  # one release, the partner's
