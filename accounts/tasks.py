"""Celery tasks of the accounts app: each takes ids, calls one service, and only decides retries.
Every task is idempotent, so acks_late + reject_on_worker_lost (settings) re-run them safely."""

import logging

from celery import shared_task

from accounts import services
from accounts.platforms.base import PlatformUnavailable, RateLimited, RequestRejected
from config.queueing import backoff_countdown, enqueue_each, retry_or_leave_to_the_tick

log = logging.getLogger(__name__)


@shared_task
def purge_idempotency_keys() -> int:
    """Periodic: forget Idempotency-Key records past their 24 h window."""
    from config.api import idempotency

    return idempotency.purge_expired()


@shared_task
def oauth_sessions_purge_expired() -> int:
    """Periodic: delete OAuth sessions expired more than LAYERS_OAUTH_SESSION_RETENTION ago."""
    return services.oauth_sessions_purge_expired()


@shared_task(bind=True, max_retries=6)
def social_account_after_connect(self, account_id: str) -> list[str]:
    """The post-connect fan-out (avatar, layers, content layer, onboarding), also queued by a lease assignment
    for its accounts; retries the failed steps. Its retries used up (a platform or storage down for the ~hour
    they span), it ends with one warning naming the steps left, not Celery's MaxRetriesExceededError traceback
    per account: the provisioning tick queues it again while the account lacks its layers (a leased one: its
    avatar, for a day)."""
    # An unexpected error's traceback on the first run (ops see it at once) and the last (it persisted), not
    # on each of the retries in between.
    traceback = self.request.retries in (0, self.max_retries)
    failed = services.social_account_fan_out(account_id=account_id, with_traceback=traceback)
    if failed and self.request.retries >= self.max_retries:
        log.warning("post-connect steps of %s still failing after %d retries: %s", account_id, self.max_retries, failed)
        return failed
    if failed:
        raise self.retry(countdown=backoff_countdown(self.request.retries, first=30))
    return failed


@shared_task(bind=True, max_retries=6)
def social_account_avatars_delete(self, account_id: str) -> int | None:
    """Delete a disconnected account's avatar copies from media storage (queued as its disconnect commits);
    how many. Media storage refusing or not answering (each call bounded by LAYERS_S3_*): retried after 30 s,
    doubling, about half an hour in all, for an outage or a credential being rotated; then the error that
    tells ops which folder is still served. Deleting again what is gone deletes nothing."""
    try:
        return services.avatars_delete(account_id=account_id)
    except Exception as exc:  # noqa: BLE001 - any storage failure: the same retry, then the same error
        if self.request.retries >= self.max_retries:
            services.avatars_not_deleted(account_id=account_id, exc=exc)
            return None
        countdown = backoff_countdown(self.request.retries, first=30)
        log.warning(
            "avatar copies of %s not deleted from media storage yet (%s: %s); trying again in %d s",
            account_id,
            type(exc).__name__,
            exc,
            countdown,
        )
        raise self.retry(countdown=countdown) from None


@shared_task
def social_accounts_health_tick() -> int:
    """Periodic: queue a health check for every account whose token nears expiry or is unverified; returns
    how many were queued (with the broker down, fewer: the rest stay due for the next tick)."""
    ids = services.social_accounts_due_for_health()
    # Marked before queueing: a check that runs at once (an idle worker) then clears its own mark.
    mark = services.social_accounts_health_queued(account_ids=ids)
    queued = enqueue_each(social_account_check_health, ids)
    # Those not queued are due again at the next tick, not left out for the mark's 30 minutes.
    services.social_accounts_health_not_queued(account_ids=ids[queued:], mark=mark)
    return queued


@shared_task
def social_accounts_provision_tick() -> int:
    """Periodic: queue the post-connect fan-out again for accounts still without their layers, or leased
    ones still without their avatar (its first message was lost to a broker outage, or its retries ran out)."""
    ids = services.social_accounts_unprovisioned()
    for account_id in ids:
        social_account_after_connect.delay(account_id)
    return len(ids)


@shared_task(bind=True, max_retries=5)
def social_account_check_health(self, account_id: str) -> str:
    try:
        return services.social_account_check_health(account_id=account_id)
    except (PlatformUnavailable, RateLimited) as exc:
        # Transient: never flips the status; try again with backoff, or, when the platform asked for a longer
        # wait than a retry may spend in the broker, leave it to the health tick (the service recorded it).
        return retry_or_leave_to_the_tick(self, exc, what=f"health check of {account_id}")
    except RequestRejected as exc:
        # A refusal of the request, not of the token (Instagram will not refresh a token under a day old):
        # the account stays connected and waits out its health backoff; asking again now would be refused
        # the same way, and an ERROR traceback every tick would only bury real errors.
        log.warning("health check of %s refused by the platform (%s)", account_id, exc.code or exc)
        return "refused"


@shared_task(bind=True)
def social_accounts_revoke_by_staff(self, account_ids: list, staff_user_id: int, mark, description: str) -> dict:
    """The rest of a staff revoke of many accounts (admin.SocialAccountAdmin.revoke_accounts: more than one web
    request revokes), TASK_ROWS ids to a task: one task per account was 50,000 broker calls from the request.
    Each account as the admin revokes one, its own transaction and then its platform calls (a batch of one), with
    its history line under the staff member's name (accounts/admin_bulk.by_a_worker: only while they may still
    act); a leased one only while they may still release leases. Idempotent: an account disconnected already
    (by anyone) is left alone and not credited to them."""
    from accounts.admin_bulk import by_a_worker
    from accounts.models import SocialAccount

    return by_a_worker(
        model=SocialAccount,
        ids=account_ids,
        staff_user_id=staff_user_id,
        mark=mark,
        description=description,
        service=lambda ids, actor, mark: services.social_accounts_revoke(
            account_ids=ids, actor=actor, may_release=actor.has_perm("leasing.change_lease")
        ),
        task=self,
        batch_rows=1,
    )


@shared_task
def social_accounts_revoke_offboarded(account_ids: list, staff_user_id: int | None) -> int:
    """The accounts of an off-boarded organization its off-boarding did not revoke in the web request
    (services.organization_offboard), TASK_ROWS ids to a task: each revoked as the off-boarding revokes them
    (social_account_revoke, named after the staff member, its own transaction), one failing not holding back the
    others (the off-boarding run again finds it still connected). Idempotent: an account disconnected already is
    left as it is. Returns how many this run disconnected."""
    from django.contrib.auth import get_user_model

    actor = get_user_model().objects.filter(pk=staff_user_id).first() if staff_user_id is not None else None
    revoked = 0
    for account_id in account_ids:
        try:
            revoked += services.social_account_revoke(account_id=account_id, actor=actor).revoked
        except Exception:  # noqa: BLE001 - one account's failure, logged; the off-boarding run again finds it
            log.exception("off-boarding revoke of %s failed; off-board the organization again", account_id)
    return revoked


# Kept for the tasks of this kind still in the broker at a deploy (one per account, before the ones above).
@shared_task
def social_account_revoke_by_staff(account_id: str, staff_user_id: int) -> str:
    """A revoke staff chose in the admin among more accounts than one web request may revoke at the platforms
    (admin.SocialAccountAdmin.revoke_accounts): the same revoke, made by a worker, named after the staff member.
    Idempotent: an account disconnected already is left as it is."""
    from django.contrib.auth import get_user_model

    actor = get_user_model().objects.filter(pk=staff_user_id).first()
    return services.social_account_revoke(account_id=account_id, actor=actor).account.status
