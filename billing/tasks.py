"""Celery tasks of billing: the periodic renewal tick. The ledger rows are the work; the task is a trigger
(a lost or repeated tick is harmless: the next one charges whatever is still due, each period once)."""

from celery import shared_task

from billing import services


@shared_task
def lease_renewals_tick() -> int:
    """Charge every started, uncharged period of every live lease (catch-up included)."""
    return services.lease_charges_run()
