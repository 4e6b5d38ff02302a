from celery import shared_task

from leasing import services


@shared_task
def pool_account_check(pool_account_id: str) -> str:
    """After a release: verify the returned account's token before it is leased again."""
    return services.pool_account_check(pool_account_id=pool_account_id)


@shared_task
def lease_requests_recover_interrupted() -> int:
    """Periodic: fail requests left `provisioning` by an assignment that never finished; free their accounts."""
    return services.lease_requests_recover_interrupted()
