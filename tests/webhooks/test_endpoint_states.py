"""An endpoint's disabled and deleted states as the partner reads them: a second disable (a 410 racing a staff
disable, two 410s at once) keeps the first one's reason and time, a deleted endpoint is never enabled; and a
delivery is resent by staff only when no attempt of it is in flight."""

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.webhooks import services
from accounts.webhooks.models import WebhookDelivery, WebhookEndpoint
from config.api.errors import Conflict
from tests.webhooks.helpers import create_endpoint, record

pytestmark = pytest.mark.django_db

URL = "https://hooks.partner.test/layers"


@pytest.fixture(autouse=True)
def _resolvable(monkeypatch):
    # The endpoint's host resolves to a public address (no DNS in the tests).
    monkeypatch.setattr(services, "assert_public_url", lambda url, allow_private: None)


def test_a_second_disable_keeps_the_reason_and_time_of_the_first(owner):
    endpoint_id = create_endpoint(owner, URL)["id"]
    services.endpoint_disable(endpoint_id=endpoint_id, reason=WebhookEndpoint.DisabledReason.GONE)
    first = owner.client.get(f"/v1/webhook-endpoints/{endpoint_id}").json()
    assert first["status"] == "disabled" and first["disabledReason"] == "gone"

    services.endpoint_disable(endpoint_id=endpoint_id, reason=WebhookEndpoint.DisabledReason.STAFF)

    assert owner.client.get(f"/v1/webhook-endpoints/{endpoint_id}").json() == first


def test_a_deleted_endpoint_is_not_enabled_again(owner):
    endpoint_id = create_endpoint(owner, URL)["id"]
    services.endpoint_disable(endpoint_id=endpoint_id, reason=WebhookEndpoint.DisabledReason.STAFF)
    services.endpoint_delete(endpoint_id=endpoint_id)

    with pytest.raises(Conflict) as refused:
        services.endpoint_enable(endpoint_id=endpoint_id)

    assert refused.value.code == "ENDPOINT_DELETED"
    endpoint = WebhookEndpoint.objects.get(pk=endpoint_id)
    assert endpoint.status == WebhookEndpoint.Status.DISABLED and endpoint.enabled_at is None


def test_a_resend_is_refused_while_an_attempt_is_in_flight_and_allowed_once_its_lease_ended(owner):
    # Staff resending a delivery whose attempt is being sent would send it a second time alongside; once the
    # claim's lease has run out (the relay died mid-send), a resend is how staff get it going again.
    endpoint_id = create_endpoint(owner, URL)["id"]
    event = record(owner)
    (delivery_id,) = services.event_fan_out(event_id=event.pk)
    assert services.delivery_claim(delivery_id=delivery_id) is not None

    with pytest.raises(Conflict) as refused:
        services.delivery_resend(delivery_id=delivery_id)
    assert refused.value.code == "DELIVERY_IN_FLIGHT"
    assert WebhookDelivery.objects.get(pk=delivery_id).status == WebhookDelivery.Status.SENDING

    WebhookDelivery.objects.filter(pk=delivery_id).update(lease_until=timezone.now() - timedelta(seconds=1))
    services.delivery_resend(delivery_id=delivery_id)
    delivery = WebhookDelivery.objects.get(pk=delivery_id)
    assert delivery.status == WebhookDelivery.Status.PENDING and delivery.endpoint_id == endpoint_id
