"""PATCH /v1/webhook-endpoints/{id}: a partner changes an endpoint's events or URL, and disables or enables it
again, instead of deleting it and creating another (with a new secret to deploy). Each field is checked as
the creation checks it; `enabled` follows the rules staff enabling follows (but cannot undo a staff disable),
and enabled again the endpoint receives the events recorded from then on, never those recorded while it was off."""

import json
import logging
from datetime import timedelta

import pytest
import time_machine
from django.test import Client
from django.utils import timezone

from accounts import services as account_services
from accounts.models import Event, IdempotencyKey
from accounts.services import event_record
from accounts.webhooks import selectors, services, tasks
from accounts.webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookFanout
from config import ratelimit
from tests.conftest import assert_error
from tests.webhooks.helpers import create_endpoint, delivery_of, record

URL = "https://93.184.216.34/layers/hooks"  # a public address literal: no DNS needed, nothing is sent
OTHER_URL = "https://93.184.216.35/layers/v2"
EVENTS = ["social_account.connected", "scheduled_post.failed"]


def patch(tenant, endpoint_id: str, body, **extra):
    return tenant.client.patch(f"/v1/webhook-endpoints/{endpoint_id}", body, format="json", **extra)


def get(tenant, endpoint_id: str) -> dict:
    return tenant.client.get(f"/v1/webhook-endpoints/{endpoint_id}").json()


@pytest.fixture
def endpoint(owner) -> dict:
    return create_endpoint(owner, URL, events=EVENTS)


@pytest.fixture
def no_private(settings):
    settings.LAYERS_WEBHOOK_ALLOW_PRIVATE = False


# --- Changing events and URL -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_patching_events_answers_200_with_the_endpoint_as_get_shows_it_and_no_secret(owner, endpoint):
    response = patch(owner, endpoint["id"], {"events": ["lease_request.assigned", "lease_request.assigned"]})

    assert response.status_code == 200, response.content
    body = response.json()
    assert body == get(owner, endpoint["id"])
    assert "secret" not in body and endpoint["secret"] not in json.dumps(body)
    assert body["events"] == ["lease_request.assigned"]  # duplicates dropped, as at creation
    assert (body["id"], body["url"], body["status"], body["createdAt"]) == (
        endpoint["id"],
        URL,
        "active",
        endpoint["createdAt"],
    )


@pytest.mark.django_db
def test_the_new_events_decide_what_the_endpoint_receives(owner, endpoint):
    patch(owner, endpoint["id"], {"events": ["scheduled_post.published"]})

    dropped = event_record(organization_id=owner.org.id, type="social_account.connected", data={})
    added = event_record(organization_id=owner.org.id, type="scheduled_post.published", data={})

    assert services.event_fan_out(event_id=dropped.pk) == []
    assert len(services.event_fan_out(event_id=added.pk)) == 1


@pytest.mark.django_db
def test_an_event_recorded_before_an_events_change_goes_by_the_list_it_was_recorded_under(owner, endpoint):
    # Their fan-out runs after the change: a backlogged `webhooks` queue, or the relay tick after a lost one.
    subscribed = event_record(organization_id=owner.org.id, type="social_account.connected", data={})
    not_subscribed = event_record(organization_id=owner.org.id, type="scheduled_post.published", data={})
    with time_machine.travel(timezone.now() + timedelta(minutes=1), tick=False):
        assert patch(owner, endpoint["id"], {"events": ["scheduled_post.published"]}).status_code == 200

        # The partner was subscribed to the first when it happened, and not to the second.
        assert len(services.event_fan_out(event_id=subscribed.pk)) == 1
        assert services.event_fan_out(event_id=not_subscribed.pk) == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("events", "field"),
    [
        (["social_account.connected", "social_account.exploded"], "events.1"),
        ([], "events"),
        (None, "events"),
        ("social_account.connected", "events"),
        ([{"type": "social_account.connected"}], "events.0"),
    ],
)
def test_events_are_validated_as_at_creation(owner, endpoint, events, field):
    error = assert_error(patch(owner, endpoint["id"], {"events": events}), 422, "VALIDATION")

    assert field in error["details"]["fields"]
    assert WebhookEndpoint.objects.get(pk=endpoint["id"]).events == EVENTS


@pytest.mark.django_db
def test_patching_the_url_keeps_the_id_and_the_secret(owner, endpoint):
    response = patch(owner, endpoint["id"], {"url": f"  {OTHER_URL} "})

    assert response.status_code == 200, response.content
    assert response.json()["url"] == OTHER_URL == get(owner, endpoint["id"])["url"]
    row = WebhookEndpoint.objects.get(pk=endpoint["id"])
    assert row.signing_secrets(timezone.now()) == [endpoint["secret"]]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        "https://169.254.169.254/latest/meta-data/",
        "https://127.0.0.1/hooks",
        "https://10.0.0.8/hooks",
        "https://[fd00::1]/hooks",
        "http://93.184.216.34/hooks",
        "https://user:password@93.184.216.34/hooks",
        "https://93.184.216.34/hooks#fragment",
        "not a url",
        "",
    ],
)
def test_a_url_the_creation_would_refuse_is_refused_and_changes_nothing(owner, endpoint, no_private, url):
    error = assert_error(patch(owner, endpoint["id"], {"url": url}), 422, "VALIDATION")

    assert list(error["details"]["fields"]) == ["url"]
    assert WebhookEndpoint.objects.get(pk=endpoint["id"]).url == URL


@pytest.mark.django_db
def test_a_host_that_does_not_resolve_is_refused_with_the_creations_message(owner, endpoint, no_private, monkeypatch):
    import socket

    def nothing_resolves(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "no such name")

    monkeypatch.setattr(socket, "getaddrinfo", nothing_resolves)

    error = assert_error(patch(owner, endpoint["id"], {"url": "https://hooks.partner.test/in"}), 422, "VALIDATION")

    assert error["details"]["fields"] == {
        "url": ["The URL's host must resolve to public addresses only; check its name and DNS records."]
    }


@pytest.mark.django_db
def test_a_url_change_while_another_host_lookup_of_the_organization_runs_is_429(owner, sibling, endpoint):
    # The lookup runs in the web request, as a creation's does: one per organization at a time.
    theirs = create_endpoint(sibling, URL)
    with ratelimit.one_at_a_time("webhook-endpoint-lookup", owner.org.pk, ttl=60) as alone:
        assert alone
        refused = patch(owner, endpoint["id"], {"url": OTHER_URL})
        other_organization = patch(sibling, theirs["id"], {"url": OTHER_URL})

    assert_error(refused, 429, "RATE_LIMITED")
    assert refused["Retry-After"] == "5"
    assert WebhookEndpoint.objects.get(pk=endpoint["id"]).url == URL
    assert other_organization.status_code == 200
    assert patch(owner, endpoint["id"], {"url": OTHER_URL}).status_code == 200  # once the lookup is over


@pytest.mark.django_db
def test_the_same_url_again_looks_nothing_up(owner, endpoint, monkeypatch):
    looked_up = []
    monkeypatch.setattr(services, "assert_public_url", lambda url, **kwargs: looked_up.append(url))

    with ratelimit.one_at_a_time("webhook-endpoint-lookup", owner.org.pk, ttl=60):
        response = patch(owner, endpoint["id"], {"url": URL, "events": ["scheduled_post.failed"]})

    assert response.status_code == 200, response.content
    assert looked_up == []


@pytest.mark.django_db
def test_a_patch_is_all_or_nothing(owner, endpoint):
    error = assert_error(
        patch(owner, endpoint["id"], {"events": ["scheduled_post.published"], "url": "ftp://x", "enabled": False}),
        422,
        "VALIDATION",
    )

    assert list(error["details"]["fields"]) == ["url"]
    assert get(owner, endpoint["id"]) == {key: value for key, value in endpoint.items() if key != "secret"}


# --- Disabling and enabling --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_enabled_false_disables_the_endpoint_and_cancels_its_unfinished_deliveries(owner, endpoint):
    event = event_record(organization_id=owner.org.id, type="social_account.connected", data={})
    (delivery_id,) = services.event_fan_out(event_id=event.pk)

    response = patch(owner, endpoint["id"], {"enabled": False})

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["status"], body["disabledReason"]) == ("disabled", "partner")
    assert body == get(owner, endpoint["id"])
    assert WebhookDelivery.objects.get(pk=delivery_id).status == "canceled"
    # Disabling again changes nothing, as the staff action does.
    assert patch(owner, endpoint["id"], {"enabled": False}).json() == body


@pytest.mark.django_db
@pytest.mark.parametrize("reason", ["gone", "partner"])
def test_enabled_true_enables_a_disabled_endpoint_again(owner, endpoint, reason):
    services.endpoint_disable(endpoint_id=endpoint["id"], reason=reason)

    response = patch(owner, endpoint["id"], {"enabled": True})

    assert response.status_code == 200, response.content
    assert (response.json()["status"], response.json()["disabledReason"]) == ("active", None)
    assert response.json() == get(owner, endpoint["id"])
    assert WebhookEndpoint.objects.get(pk=endpoint["id"]).enabled_at is not None


@pytest.mark.django_db
def test_an_endpoint_staff_disabled_stays_disabled_and_nothing_else_in_the_request_changes(owner, endpoint):
    services.endpoint_disable(endpoint_id=endpoint["id"], reason="staff")
    before = get(owner, endpoint["id"])

    response = patch(owner, endpoint["id"], {"enabled": True, "events": ["lease_request.rejected"]})

    error = assert_error(response, 422, "VALIDATION")
    assert "staff" in error["details"]["fields"]["enabled"][0]
    assert get(owner, endpoint["id"]) == before  # still disabled by staff, its events as they were
    # Staff enable it again through the admin's service; then the partner's PATCH works as for any endpoint.
    services.endpoint_enable(endpoint_id=endpoint["id"], actor="staff")
    assert patch(owner, endpoint["id"], {"enabled": False}).json()["disabledReason"] == "partner"


@pytest.mark.django_db
def test_enabling_an_active_endpoint_changes_nothing(owner, endpoint):
    response = patch(owner, endpoint["id"], {"enabled": True})

    assert response.status_code == 200
    assert WebhookEndpoint.objects.get(pk=endpoint["id"]).enabled_at is None


@pytest.mark.django_db
def test_events_and_enabled_together(owner, endpoint):
    services.endpoint_disable(endpoint_id=endpoint["id"], reason="gone")

    body = patch(owner, endpoint["id"], {"events": ["lease_request.rejected"], "enabled": True}).json()

    assert (body["events"], body["status"]) == (["lease_request.rejected"], "active")


@pytest.mark.django_db
def test_an_endpoint_of_an_organization_offboarded_during_the_call_is_not_enabled(owner, endpoint, monkeypatch):
    # The partner's PATCH passed the key check just before ops off-boarded the partner: it is refused as the
    # revoked key it was made with, as a creation in that moment is, and the endpoint stays disabled.
    looked_up = selectors.endpoint_get

    def offboarded_right_after_the_lookup(**kwargs):
        found = looked_up(**kwargs)
        account_services.organization_offboard(organization_id=owner.org.pk, by="test")
        return found

    monkeypatch.setattr(selectors, "endpoint_get", offboarded_right_after_the_lookup)

    response = patch(owner, endpoint["id"], {"enabled": True})

    error = assert_error(response, 401, "UNAUTHENTICATED")
    assert "revoked" in error["message"]
    row = WebhookEndpoint.objects.get(pk=endpoint["id"])
    assert (row.status, row.disabled_reason) == ("disabled", "staff")


@pytest.mark.django_db
def test_the_log_names_the_api_key_that_changed_the_endpoint(owner, endpoint, caplog):
    with caplog.at_level(logging.INFO, logger="accounts.webhooks"):
        patch(owner, endpoint["id"], {"events": ["lease_request.assigned"]})
        patch(owner, endpoint["id"], {"enabled": False})
        patch(owner, endpoint["id"], {"enabled": True})

    logged = [r.getMessage() for r in caplog.records if r.name.startswith("accounts.webhooks")]
    assert len([m for m in logged if endpoint["id"] in m and owner.key.pk in m]) == 3, logged
    assert any("events" in m for m in logged)
    assert any("disabled (partner)" in m for m in logged) and any("enabled by" in m for m in logged)


# --- Refused requests --------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "body"),
        ({"secret": "whsec_mine"}, "secret"),
        ({"enabled": False, "status": "disabled"}, "status"),
        ({"enabled": "true"}, "enabled"),
        ({"enabled": 1}, "enabled"),
        ({"enabled": None}, "enabled"),
        ({"url": 5}, "url"),
        ({"url": None}, "url"),
        ({"url": "https://93.184.216.34/" + "a" * 2048}, "url"),
    ],
)
def test_unknown_fields_empty_bodies_and_wrong_types_are_422(owner, endpoint, body, field):
    error = assert_error(patch(owner, endpoint["id"], body), 422, "VALIDATION")

    assert field in error["details"]["fields"], error
    assert get(owner, endpoint["id"]) == {key: value for key, value in endpoint.items() if key != "secret"}


@pytest.mark.django_db
def test_no_body_or_not_json_is_400(owner, endpoint):
    path = f"/v1/webhook-endpoints/{endpoint['id']}"

    assert_error(owner.client.patch(path), 400, "MALFORMED_REQUEST")
    assert_error(owner.client.patch(path, "{", content_type="application/json"), 400, "MALFORMED_REQUEST")
    assert_error(owner.client.patch(path, [], format="json"), 400, "MALFORMED_REQUEST")


@pytest.mark.django_db
def test_another_organizations_deleted_or_unknown_endpoint_is_404(owner, sibling, outsider, endpoint):
    for other in (sibling, outsider):
        assert_error(patch(other, endpoint["id"], {"enabled": False}), 404, "NOT_FOUND")
    services.endpoint_disable(endpoint_id=endpoint["id"], reason="gone")
    assert_error(patch(outsider, endpoint["id"], {"enabled": True}), 404, "NOT_FOUND")
    assert WebhookEndpoint.objects.get(pk=endpoint["id"]).status == "disabled"
    assert_error(patch(owner, "we_" + "a" * 32, {"enabled": True}), 404, "NOT_FOUND")

    owner.client.delete(f"/v1/webhook-endpoints/{endpoint['id']}")
    assert_error(patch(owner, endpoint["id"], {"enabled": True}), 404, "NOT_FOUND")


@pytest.mark.django_db
def test_patching_an_endpoint_deleted_meanwhile_is_a_404_not_a_500(owner, endpoint, monkeypatch):
    looked_up = selectors.endpoint_get

    def deleted_right_after_the_lookup(**kwargs):
        found = looked_up(**kwargs)
        services.endpoint_delete(endpoint_id=found.pk)
        return found

    monkeypatch.setattr(selectors, "endpoint_get", deleted_right_after_the_lookup)

    assert_error(patch(owner, endpoint["id"], {"events": ["lease_request.assigned"]}), 404, "NOT_FOUND")
    assert WebhookEndpoint.objects.get(pk=endpoint["id"]).events == EVENTS


@pytest.mark.django_db
def test_an_idempotency_key_is_not_stored_for_a_patch_which_is_idempotent_by_itself(owner, endpoint):
    # As API.md and config/api/idempotency.py say, keys apply to POST: a PATCH sets values, so sending it again
    # leaves the endpoint as the first one did, and answers it as it is then.
    first = patch(owner, endpoint["id"], {"events": ["lease_request.assigned"]}, HTTP_IDEMPOTENCY_KEY="p-1")
    again = patch(owner, endpoint["id"], {"events": ["lease_request.assigned"]}, HTTP_IDEMPOTENCY_KEY="p-1")

    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert not again.has_header("Idempotent-Replayed")
    assert not IdempotencyKey.objects.exists()


@pytest.mark.django_db
def test_patch_needs_a_key(anon, endpoint):
    assert_error(
        anon.patch(f"/v1/webhook-endpoints/{endpoint['id']}", {"enabled": False}, format="json"), 401, "UNAUTHENTICATED"
    )


@pytest.mark.django_db
def test_openapi_documents_the_patch(db):
    schema = Client().get("/v1/openapi.json").json()
    operation = schema["paths"]["/v1/webhook-endpoints/{endpointId}"]["patch"]

    assert operation["operationId"] == "webhook_endpoints_update"
    for needle in ("events", "url", "enabled", "410", "recorded while", "Idempotency-Key"):
        assert needle in operation["description"], needle
    assert {"200", "400", "401", "404", "413", "422", "429", "500"} <= set(operation["responses"])
    assert "409" not in operation["responses"]
    request = operation["requestBody"]["content"]["application/json"]["schema"]
    body = schema["components"]["schemas"][request["$ref"].rpartition("/")[2]]
    assert set(body["properties"]) == {"url", "events", "enabled"}
    assert body.get("required", []) == []
    assert body["additionalProperties"] is False and body["minProperties"] == 1
    assert body["properties"]["enabled"]["type"] == "boolean"
    assert body["properties"]["events"]["minItems"] == 1
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    endpoint_schema = schema["components"]["schemas"][answer.rpartition("/")[2]]
    assert "secret" not in endpoint_schema["properties"]
    assert "`partner`" in endpoint_schema["properties"]["disabledReason"]["description"]


# --- Through the relay -------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_an_endpoint_disabled_by_a_410_and_enabled_by_patch_receives_what_is_recorded_afterwards_only(owner, receivers):
    answers = iter([410])
    receiver = receivers(respond=lambda r: (next(answers, 200), {}))
    endpoint = create_endpoint(owner, receiver.url())
    gone = record(owner, n=1)
    assert (get(owner, endpoint["id"])["status"], get(owner, endpoint["id"])["disabledReason"]) == ("disabled", "gone")
    while_off = record(owner, n=2)
    # Its fan-out lost too (the worker died): the relay tick fans it out again once the endpoint is live.
    WebhookFanout.objects.filter(event_id=while_off.pk).delete()
    Event.objects.filter(pk=while_off.pk).update(fanned_out_at=None)

    response = patch(owner, endpoint["id"], {"enabled": True})

    assert response.status_code == 200, response.content
    assert (response.json()["status"], response.json()["disabledReason"]) == ("active", None)
    after = record(owner, n=3)
    with time_machine.travel(timezone.now() + timedelta(minutes=5), tick=False):
        tasks.webhooks_tick()

    assert [r.headers["layers-event-id"] for r in receiver.requests] == [gone.pk, after.pk]
    assert delivery_of(after, endpoint).status == "delivered"
    assert not WebhookDelivery.objects.filter(event=while_off).exists()


@pytest.mark.django_db(transaction=True)
def test_retries_waiting_when_the_url_changes_go_to_the_new_url(owner, receivers):
    broken = receivers(respond=lambda r: (500, {}))
    fixed = receivers()
    endpoint = create_endpoint(owner, broken.url())
    event = record(owner)
    waiting = delivery_of(event, endpoint)
    assert (waiting.status, waiting.attempts) == ("pending", 1)

    assert patch(owner, endpoint["id"], {"url": fixed.url()}).status_code == 200
    with time_machine.travel(waiting.next_attempt_at, tick=False):
        tasks.webhooks_tick()

    assert len(broken.requests) == 1
    (request,) = fixed.requests
    assert request.headers["layers-event-id"] == event.pk
    assert delivery_of(event, endpoint).status == "delivered"
