"""Two staff assigning the same pool account at the same moment, on two real PostgreSQL connections."""

import pytest
from django.db import IntegrityError, transaction

from leasing import services
from leasing.models import Lease
from tests.concurrency import run_in_threads
from tests.leasing.helpers import add_pool, request_accounts

pytestmark = pytest.mark.django_db(transaction=True)


def test_one_pool_account_assigned_twice_at_once_gives_one_lease_and_one_clear_message(owner, sibling):
    (pool_id,) = add_pool(1)
    requests = [request_accounts(owner, 1)["requestId"], request_accounts(sibling, 1)["requestId"]]

    def staff(request_id: str):
        try:
            return services.lease_assign(request_id=request_id, pool_account_ids=[pool_id]).status
        except services.LeaseError as exc:
            return exc.message

    outcomes = run_in_threads(lambda: staff(requests[0]), lambda: staff(requests[1]))

    assert sorted(o == "assigned" for o in outcomes) == [False, True], outcomes
    loser = next(o for o in outcomes if o != "assigned")
    assert "not available" in loser
    assert Lease.objects.filter(pool_account_id=pool_id, released_at__isnull=True).count() == 1


def test_the_database_refuses_a_second_live_lease_of_one_pool_account(owner):
    (pool_id,) = add_pool(1)
    rid = request_accounts(owner, 1)["requestId"]
    services.lease_assign(request_id=rid, auto=True)
    lease = Lease.objects.get(pool_account_id=pool_id)

    with pytest.raises(IntegrityError), transaction.atomic():
        Lease.objects.create(
            organization_id=lease.organization_id,
            project_id=lease.project_id,
            request_id=rid,
            pool_account_id=pool_id,
            social_account=lease.social_account.__class__.objects.create(
                organization_id=lease.organization_id,
                project_id=lease.project_id,
                identity=lease.social_account.identity,
                platform="tiktok",
                kind="leased",
                status="disconnected",
                disconnected_at=lease.assigned_at,
            ),
            monthly_price_cents=1,
        )
