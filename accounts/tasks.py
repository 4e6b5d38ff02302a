from celery import shared_task
from django.conf import settings
from django.utils import timezone


@shared_task(acks_late=True, reject_on_worker_lost=True)
def purge_idempotency_keys() -> int:
    """Forget Idempotency-Key records past their 24 h window."""
    from accounts.models import IdempotencyKey

    cutoff = timezone.now() - settings.LAYERS_IDEMPOTENCY_TTL
    deleted, _ = IdempotencyKey.objects.filter(created_at__lt=cutoff).delete()
    return deleted
