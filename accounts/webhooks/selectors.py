"""Reads for the partner API, always scoped to the caller's organization: a foreign or deleted endpoint is
a 404."""

from accounts.webhooks.models import WebhookEndpoint
from config.api.errors import NotFound


def endpoint_list(*, organization):
    return WebhookEndpoint.objects.filter(organization=organization, deleted_at__isnull=True)


def endpoint_get(*, organization, endpoint_id: str) -> WebhookEndpoint:
    endpoint = endpoint_list(organization=organization).filter(pk=endpoint_id).first()
    if endpoint is None:
        raise NotFound()
    return endpoint
