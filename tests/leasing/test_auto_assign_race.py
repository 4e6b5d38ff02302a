"""Auto-assign ranks the candidates, then locks the best one still free: another assignment may have taken
the first of the ranking meanwhile."""

import pytest
from django.contrib.auth import get_user_model

from leasing import services
from leasing.models import Lease, PoolAccount
from tests.leasing.helpers import add_pool, get_request, request_accounts

pytestmark = pytest.mark.django_db(transaction=True)


def test_auto_assign_on_a_stale_ranking_takes_the_next_free_account_instead_of_failing(owner, monkeypatch):
    # the ranking is read without locks; an account another auto-assign reserved meanwhile must be
    # skipped (_lock_best_available filters on `available`), not picked and then refused as unavailable.
    staff = get_user_model().objects.create_superuser("ops", "ops@layers.test", "pw-ops-12345")
    best, second = add_pool(2)
    accepted = request_accounts(owner, 1)
    ranked = services.pool_candidates  # the ranking as read before the other assignment reserved `best`

    def stale(*, request):
        candidates = ranked(request=request)
        PoolAccount.objects.filter(pk=best).update(status=PoolAccount.Status.RESERVED)
        return candidates

    monkeypatch.setattr(services, "pool_candidates", stale)

    services.lease_assign(request_id=accepted["requestId"], auto=True, actor=staff)

    assert get_request(owner, accepted["requestId"])["status"] == "assigned"
    assert list(Lease.objects.values_list("pool_account_id", flat=True)) == [second]
