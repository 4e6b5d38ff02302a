import logging

from celery import shared_task

from accounts.platforms.base import PlatformError, RequestRejected
from config.queueing import retry_or_leave_to_the_tick
from leasing import services

log = logging.getLogger(__name__)


@shared_task
def pool_account_check(pool_account_id: str) -> str:
    """After a release: verify the returned account's token before it is leased again. TikTok not answering
    (down, throttling, refusing the request) changes nothing and ends with one warning, not Celery's ERROR
    traceback per release during an outage. Not retried, unlike the health check and the pool refresh: no
    tick queues this check again, nor needs to, since the next assignment verifies the token itself before
    leasing the account (the same check); retrying would only spend TikTok's quota during its outage."""
    try:
        return services.pool_account_check(pool_account_id=pool_account_id)
    except PlatformError as exc:
        refused = isinstance(exc, RequestRejected)
        log.warning(
            "check of returned pool account %s: TikTok %s (%s %s); it stays available, its next assignment "
            "checks its token",
            pool_account_id,
            "refused the request" if refused else "could not answer",
            type(exc).__name__,
            exc.log_code,
        )
        return "refused" if refused else "unavailable"


@shared_task
def lease_assign_check(request_id: str, attempt: int) -> str:
    """An assignment staff started in the admin (services.lease_assign_start): check the reserved accounts'
    tokens with TikTok, then bind them or fail the attempt. Not retried: TikTok not answering fails the attempt
    with the problems for staff, who assign again, as when the check ran in the admin's request. Run twice (a
    redelivery), the second finds the attempt over and changes nothing."""
    return services.lease_assign_check(request_id=request_id, attempt=attempt).status


@shared_task
def lease_requests_recover_interrupted() -> int:
    """Periodic: fail requests left `provisioning` by an assignment that never finished; free their accounts."""
    return services.lease_requests_recover_interrupted()


@shared_task
def pool_accounts_refresh_tick() -> int:
    """Periodic: queue a token refresh for every available pool account whose access token nears expiry, so
    that its rotating refresh token never lapses while it waits for a lease."""
    ids = services.pool_accounts_due_for_refresh()
    for pool_account_id in ids:
        pool_account_refresh_token.delay(pool_account_id)
    return len(ids)


@shared_task(bind=True, max_retries=5)
def pool_account_refresh_token(self, pool_account_id: str) -> str:
    try:
        return services.pool_account_refresh_due(pool_account_id=pool_account_id)
    except RequestRejected as exc:
        # A refusal of the request, not of the refresh token (that is "dead"): asking again within minutes
        # would be refused the same way. As the accounts' health check does, end here: nothing changed, the
        # account stays available with its tokens, and the next tick (still due) refreshes it.
        log.warning("pool token refresh of %s refused by TikTok (%s)", pool_account_id, exc.code or exc)
        return "refused"
    except PlatformError as exc:
        # Transient (nothing changed): try again with backoff; the next tick queues it again anyway. When TikTok
        # asked for a longer wait than a retry may spend in the broker, only the tick does (the service
        # recorded the wait, and the tick leaves the account out until it has passed).
        return retry_or_leave_to_the_tick(self, exc, what=f"pool token refresh of {pool_account_id}")


@shared_task(bind=True)
def leases_release_by_staff(self, lease_ids: list, staff_user_id: int, mark, description: str) -> dict:
    """The rest of a staff release of many leases (admin: more than one web request releases), one by one: each
    release is its own transaction (it takes the organization's wallet lock, as the renewal job does: a batch in
    one transaction would hold it for all of them), with its history line."""
    from accounts.admin_bulk import by_a_worker
    from leasing.models import Lease

    return by_a_worker(
        model=Lease,
        ids=lease_ids,
        staff_user_id=staff_user_id,
        mark=mark,
        description=description,
        service=lambda ids, actor, mark: services.leases_release(lease_ids=ids, actor=actor),
        task=self,
        batch_rows=1,
    )
