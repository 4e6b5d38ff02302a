from django.db import transaction

from accounts.services import event_record
from accounts.webhooks.models import WebhookDelivery


def create_endpoint(tenant, url: str, events=("social_account.connected",)) -> dict:
    response = tenant.client.post("/v1/webhook-endpoints", {"url": url, "events": list(events)}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def record(tenant, type_: str = "social_account.connected", **data):
    """A committed change's event (its fan-out runs on commit in transactional tests)."""
    with transaction.atomic():
        return event_record(organization_id=tenant.org.id, type=type_, data=data)


def delivery_of(event, endpoint: dict) -> WebhookDelivery:
    return WebhookDelivery.objects.get(event=event, endpoint_id=endpoint["id"])
