"""Rules of fulfilment that no other test pinned: which of several matching pool accounts auto-assign leases
(the partner pays that account's price), and a decided request staying decided."""

import pytest

from accounts.models import Event
from leasing import services
from leasing.models import Lease, LeaseRequest
from tests.leasing.helpers import add_pool, get_request, request_accounts

pytestmark = pytest.mark.django_db(transaction=True)


def test_auto_assign_takes_the_widest_geo_overlap_then_the_cheaper_account(owner):
    # Created first, so that neither rule is met by the pool's order alone.
    (us_only,) = add_pool(1, geos=("US",), price=2900)
    (dearer,) = add_pool(1, geos=("US", "CA"), price=5900)
    (cheaper,) = add_pool(1, geos=("US", "CA"), price=3900)
    rid = request_accounts(owner, 1, geo=["US", "CA"])["requestId"]

    ranked = [c.account.pk for c in services.pool_candidates(request=LeaseRequest.objects.get(pk=rid))]
    assert ranked == [cheaper, dearer, us_only]

    services.lease_assign(request_id=rid, auto=True)
    lease = Lease.objects.get(request_id=rid)
    assert lease.pool_account_id == cheaper and lease.monthly_price_cents == 3900


@pytest.mark.parametrize("decided", ["assigned", "rejected"])
def test_a_decided_request_cannot_be_rejected(owner, decided):
    add_pool(1)
    rid = request_accounts(owner, 1)["requestId"]
    if decided == "assigned":
        services.lease_assign(request_id=rid, auto=True)
    else:
        services.lease_request_reject(request_id=rid, reason="No accounts in CA yet")
    before = get_request(owner, rid)

    with pytest.raises(services.LeaseError, match="can no longer be rejected"):
        services.lease_request_reject(request_id=rid, reason="changed our mind")

    assert get_request(owner, rid) == before
    assert Event.objects.filter(type="lease_request.rejected").count() == (decided == "rejected")


def test_the_vertical_matches_whatever_its_case(owner):
    # Partners write their niche as they like ("Fitness"); ops stock the pool as "fitness".
    (pool_id,) = add_pool(1, vertical="fitness")
    rid = request_accounts(owner, 1, vertical="Fitness")["requestId"]

    services.lease_assign(request_id=rid, auto=True)

    assert Lease.objects.get(request_id=rid).pool_account_id == pool_id
