"""Leases for billing tests, built as leasing's assignment builds them: pool account, `kind: leased` social
account, request and lease rows, then `lease_billing_start` in the same transaction. This is the one place
to switch to the real `leasing.services.lease_assign` (and `lease_release_for_account`)."""

import itertools
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from billing import services
from billing.models import LedgerEntry, Wallet
from billing.selectors import ledger_balance
from leasing.models import Lease, LeaseRequest, PoolAccount
from tests.factories import make_account

_seq = itertools.count(1)


def lease_assign(tenant, *, price_cents: int = 4900, at: datetime | None = None, project=None) -> Lease:
    """A pool account leased to the tenant's project at `at` (default now), its first month charged."""
    n = next(_seq)
    handle = f"leased_{n}"
    project = project or tenant.project
    pool = PoolAccount.objects.create(
        handle=handle,
        platform_user_id=f"pool-{n}-{timezone.now().timestamp()}",
        vertical="fitness",
        languages=["en-US"],
        geos=["US"],
        monthly_price_cents=price_cents,
        status=PoolAccount.Status.LEASED,
    )
    account = make_account(tenant, handle=handle, kind="leased", project=project)
    request = LeaseRequest.objects.create(
        organization=tenant.org,
        project=project,
        count=1,
        vertical="fitness",
        language="en-US",
        geos=["US"],
        status=LeaseRequest.Status.ASSIGNED,
    )
    with transaction.atomic():
        lease = Lease.objects.create(
            organization=tenant.org,
            project=project,
            request=request,
            pool_account=pool,
            social_account=account,
            monthly_price_cents=price_cents,
            handle=pool.handle,
            assigned_at=at or timezone.now(),
        )
        services.lease_billing_start(lease=lease)
    return lease


def lease_release(lease: Lease, *, at: datetime | None = None) -> datetime:
    """Release as leasing does (released_at set), then ask for `paidThrough` as the release response does."""
    lease.released_at = at or timezone.now()
    lease.save(update_fields=["released_at"])
    return services.lease_paid_through(lease=lease, now=lease.released_at)


def charges(lease: Lease) -> list[tuple[int, datetime, datetime, int]]:
    """(period index, start, end, amount) of every charge of the lease, in period order."""
    return list(
        LedgerEntry.objects.filter(lease=lease)
        .order_by("period_index")
        .values_list("period_index", "period_start", "period_end", "amount_cents")
    )


def balance(tenant) -> int:
    """The wallet's balance, after checking that the cached balance is the sum of the ledger."""
    wallet = Wallet.objects.filter(pk=tenant.org.pk).first()
    cached = wallet.balance_cents if wallet else 0
    assert cached == ledger_balance(organization=tenant.org), "cached balance drifted from the ledger"
    return cached
