"""Reads for the partner API, scoped to the caller's organization: a foreign id is a 404."""

from django.db.models import Prefetch

from config.api.errors import NotFound
from leasing.models import Lease, LeaseRequest


def _requests(organization, project):
    live = Lease.objects.only("id", "request_id", "social_account_id")
    return LeaseRequest.objects.filter(organization=organization, project=project).prefetch_related(
        Prefetch("leases", queryset=live)
    )


def lease_request_list(*, organization, project):
    return _requests(organization, project)


def lease_request_get(*, organization, project, request_id: str) -> LeaseRequest:
    request = _requests(organization, project).filter(pk=request_id).first()
    if request is None:
        raise NotFound()
    return request


def leased_account_list(*, organization, project):
    """Live leases of the project (a released account leaves the list, like a revoked one)."""
    return Lease.objects.filter(organization=organization, project=project, released_at__isnull=True).select_related(
        "social_account__identity", "pool_account"
    )


def lease_for_account(*, organization, account_id: str) -> Lease:
    """The organization's lease of that leased social account, live or released (one lease per account: a
    pool account leased again gets a new social account)."""
    lease = (
        Lease.objects.filter(organization=organization, social_account_id=account_id)
        .select_related("social_account")
        .first()
    )
    if lease is None:
        raise NotFound()
    return lease
