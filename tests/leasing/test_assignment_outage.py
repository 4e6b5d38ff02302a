"""An assignment's token check during a TikTok outage stops at the first account TikTok did not answer for:
the request fails anyway, and checking every other account one timeout after another held the staff
member's admin request for minutes (50 accounts: past the 15-minute recovery of interrupted assignments).
A token TikTok refused is not an outage: the check goes on, and every dead account found is retired."""

import pytest

from leasing import services
from leasing.models import LeaseRequest, PoolAccount
from tests.leasing.helpers import add_pool, get_request, request_accounts
from tests.platform_helpers import inject_fault, intercepted, invalidate_tokens, platform_down

pytestmark = pytest.mark.django_db(transaction=True)


def problems_of(request_id: str) -> str:
    return " | ".join(services.failure_problems(LeaseRequest.objects.get(pk=request_id)))


@pytest.mark.parametrize("timeout", [True, False], ids=["timeouts", "5xx"])
def test_assigning_during_a_tiktok_outage_stops_at_the_first_unanswered_token_check(owner, timeout):
    pool_ids = add_pool(5)
    accepted = request_accounts(owner, 5)
    calls = []

    with intercepted(platform_down("tiktok", calls, timeout=timeout)):
        services.lease_assign(request_id=accepted["requestId"], auto=True)

    assert len(calls) == 1, len(calls)
    detail = get_request(owner, accepted["requestId"])
    assert detail["status"] == "failed" and detail["failureReason"] == services.FAILED_CHECK
    # An outage is no account's fault: all five are back in the pool, none retired, and staff read why the
    # check stopped and how many accounts it never reached.
    assert PoolAccount.objects.filter(pk__in=pool_ids, status="available").count() == 5
    problems = problems_of(accepted["requestId"])
    assert "stopped" in problems and "TikTok did not answer" in problems and "4 other account(s)" in problems


def test_refused_tokens_are_all_found_and_retired_then_the_check_stops_at_tiktoks_first_outage(owner):
    dead_one, dead_two, unanswered, unchecked = add_pool(4)
    handles = {pk: PoolAccount.objects.get(pk=pk).handle for pk in (dead_one, dead_two, unanswered, unchecked)}
    invalidate_tokens("tiktok", handles[dead_one])
    invalidate_tokens("tiktok", handles[dead_two])
    inject_fault("tiktok", handles[unanswered], "server_error", 5)
    accepted = request_accounts(owner, 4)

    services.lease_assign(
        request_id=accepted["requestId"], pool_account_ids=[dead_one, dead_two, unanswered, unchecked]
    )

    assert get_request(owner, accepted["requestId"])["status"] == "failed"
    status = dict(PoolAccount.objects.values_list("pk", "status"))
    # Refused: both dead accounts leave the pool (the check went on after the first).
    assert status[dead_one] == status[dead_two] == "retired"
    # TikTok's outage: the check stopped, and the account after it was never asked about.
    assert status[unanswered] == status[unchecked] == "available"
    problems = problems_of(accepted["requestId"])
    assert f"@{handles[dead_one]}'s token is no longer valid" in problems
    assert f"@{handles[dead_two]}'s token is no longer valid" in problems
    assert f"@{handles[unanswered]}" in problems and "stopped" in problems
    assert f"@{handles[unchecked]}" in problems  # named as not checked, for staff to assign again
