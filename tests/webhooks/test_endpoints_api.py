"""The webhook-endpoints API: create (secret shown once, stored encrypted), list, get, delete, rotate the
secret; validation of events and destinations; other organizations' and malformed ids are 404."""

import json
import re

import pytest
import time_machine
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts import crypto
from accounts.models import IdempotencyKey
from accounts.services import event_record
from accounts.webhooks import selectors, services
from accounts.webhooks.models import WebhookDelivery, WebhookEndpoint
from tests.conftest import assert_error

URL = "https://93.184.216.34/layers/hooks"  # a public address literal: no DNS needed, nothing is sent
EVENTS = ["social_account.connected", "scheduled_post.failed"]


def create(tenant, url=URL, events=EVENTS, **headers):
    return tenant.client.post("/v1/webhook-endpoints", {"url": url, "events": events}, format="json", **headers)


@pytest.fixture
def no_private(settings):
    settings.LAYERS_WEBHOOK_ALLOW_PRIVATE = False


def test_create_answers_201_with_the_endpoint_and_its_secret(owner):
    response = create(owner)

    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == {
        "id",
        "url",
        "events",
        "status",
        "disabledReason",
        "createdAt",
        "previousSecretExpiresAt",
        "secret",
    }
    assert re.fullmatch(r"we_[0-9a-f]{32}", body["id"])
    assert body["url"] == URL
    assert body["events"] == EVENTS
    assert body["status"] == "active"
    assert body["disabledReason"] is None and body["previousSecretExpiresAt"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", body["createdAt"])
    assert body["secret"].startswith("whsec_") and len(body["secret"]) >= 40


def test_secret_is_shown_only_at_creation_and_stored_encrypted(owner):
    created = create(owner).json()

    detail = owner.client.get(f"/v1/webhook-endpoints/{created['id']}").json()
    listed = owner.client.get("/v1/webhook-endpoints").json()["data"]

    assert "secret" not in detail
    assert [set(item) for item in listed] == [set(detail)]
    assert created["secret"] not in json.dumps(detail) + json.dumps(listed)
    row = WebhookEndpoint.objects.get(pk=created["id"])
    assert created["secret"] not in row.secret_enc
    assert crypto.decrypt(row.secret_enc) == created["secret"]  # recoverable: it must sign


def test_two_endpoints_never_share_a_secret(owner):
    assert create(owner).json()["secret"] != create(owner).json()["secret"]


def test_duplicate_event_types_are_stored_once(owner):
    body = create(owner, events=["scheduled_post.failed", "scheduled_post.failed", "lease_request.assigned"]).json()
    assert body["events"] == ["scheduled_post.failed", "lease_request.assigned"]


def test_every_contract_event_type_can_be_subscribed(owner):
    every = sorted(services.EVENT_TYPES)
    assert len(every) == 8
    assert create(owner, events=every).json()["events"] == every


@pytest.mark.parametrize("events", [["social_account.exploded"], ["SOCIAL_ACCOUNT.CONNECTED"], ["*"], [""]])
def test_unknown_event_type_is_422(owner, events):
    error = assert_error(create(owner, events=["social_account.connected", *events]), 422, "VALIDATION")
    assert "events.1" in error["details"]["fields"]
    assert WebhookEndpoint.objects.count() == 0


@pytest.mark.parametrize("events", [[], None, "social_account.connected", [{"type": "x"}]])
def test_events_must_be_a_non_empty_list_of_types(owner, events):
    body = {"url": URL} if events is None else {"url": URL, "events": events}
    error = assert_error(owner.client.post("/v1/webhook-endpoints", body, format="json"), 422, "VALIDATION")
    assert any(name.startswith("events") for name in error["details"]["fields"])


@pytest.mark.parametrize(
    "url",
    [
        "https://169.254.169.254/latest/meta-data/",  # cloud metadata (link-local)
        "https://127.0.0.1/hooks",
        "https://[::1]/hooks",
        "https://10.0.0.8/hooks",
        "https://192.168.1.20/hooks",
        "https://172.16.5.5/hooks",
        "https://[fd00::1]/hooks",
        "https://0.0.0.0/hooks",
        "https://100.100.100.200/latest/meta-data/",  # a cloud's metadata in the shared address space
        "https://100.64.0.1/hooks",  # carrier-grade NAT, not the internet
        "https://[2002:7f00:1::]/hooks",  # 6to4 carrying 127.0.0.1
        "https://[64:ff9b::a00:8]/hooks",  # NAT64 carrying 10.0.0.8
        "https://[64:ff9b:1::a9fe:a9fe]/hooks",  # local-use NAT64 (RFC 8215) carrying 169.254.169.254
        "https://[64:ff9b:1:a9fe:a9:fe00:808:808]/hooks",  # its /48 layout: 169.254.169.254 mid-address
        "https://[::ffff:0:a9fe:a9fe]/hooks",  # SIIT IPv4-translated, carrying 169.254.169.254
        "https://[::7f00:1]/hooks",  # deprecated IPv4-compatible, carrying 127.0.0.1
        "https://[fec0::1]/hooks",  # deprecated site-local
        "https://[ff02::1]/hooks",  # multicast
    ],
)
def test_private_loopback_and_metadata_destinations_are_refused(owner, no_private, url):
    error = assert_error(create(owner, url=url), 422, "VALIDATION")
    assert list(error["details"]["fields"]) == ["url"]
    assert WebhookEndpoint.objects.count() == 0


def test_plain_http_is_refused_when_private_destinations_are_disallowed(owner, no_private):
    error = assert_error(create(owner, url="http://93.184.216.34/hooks"), 422, "VALIDATION")
    assert "https" in error["details"]["fields"]["url"][0]
    assert create(owner, url="https://93.184.216.34/hooks").status_code == 201
    assert create(owner, url="https://[2002:5db8:d822::1]/hooks").status_code == 201  # 6to4 of that public address


def test_plain_http_to_localhost_is_accepted_where_the_deployment_allows_it(owner, settings):
    settings.LAYERS_WEBHOOK_ALLOW_PRIVATE = None  # follows LAYERS_ALLOW_PRIVATE_FETCH
    settings.LAYERS_ALLOW_PRIVATE_FETCH = True
    assert create(owner, url="http://127.0.0.1:9/hooks").status_code == 201
    settings.LAYERS_ALLOW_PRIVATE_FETCH = False
    assert_error(create(owner, url="http://127.0.0.1:9/hooks"), 422, "VALIDATION")


@pytest.mark.parametrize(
    "url",
    [
        "",
        "not a url",
        "https://",
        "/relative/path",
        "ftp://93.184.216.34/hooks",
        "https://user:password@93.184.216.34/hooks",
        "https://93.184.216.34:99999/hooks",
        "https://93.184.216.34/hooks#fragment",
        "https://93.184.216.34/hooks/a\tb",  # urlsplit drops the tab, httpx refuses the URL: never deliverable
        "https://93.184.216.34/hooks/a\nb",
        "https://93.184.216.34/hooks/a b",
    ],
)
@pytest.mark.parametrize("rules", ["production", "dev"])
def test_malformed_destinations_are_422(owner, settings, url, rules):
    settings.LAYERS_WEBHOOK_ALLOW_PRIVATE = rules == "dev"
    error = assert_error(create(owner, url=url), 422, "VALIDATION")
    assert list(error["details"]["fields"]) == ["url"]


@pytest.mark.parametrize("host", ["a" * 64 + ".example.com", "a..example.com", ".example.com"])
def test_host_names_the_resolver_cannot_encode_are_422_not_500(owner, no_private, host):
    error = assert_error(create(owner, url=f"https://{host}/hook"), 422, "VALIDATION")
    assert list(error["details"]["fields"]) == ["url"]


def test_list_and_get_show_only_the_callers_organization(owner, sibling, outsider):
    mine = [create(owner).json()["id"] for _ in range(3)]
    create(sibling)
    create(outsider)

    body = owner.client.get("/v1/webhook-endpoints").json()

    assert [e["id"] for e in body["data"]] == list(reversed(mine))
    assert body["nextCursor"] is None


@pytest.mark.parametrize(
    "method, suffix",
    [("get", ""), ("delete", ""), ("post", "/rotate-secret")],
)
def test_another_organizations_endpoint_is_404(owner, sibling, outsider, method, suffix):
    for other in (sibling, outsider):
        foreign = create(other).json()
        response = getattr(owner.client, method)(f"/v1/webhook-endpoints/{foreign['id']}{suffix}")
        assert_error(response, 404, "NOT_FOUND")
        assert WebhookEndpoint.objects.get(pk=foreign["id"]).deleted_at is None


@pytest.mark.parametrize(
    "endpoint_id",
    [
        "we_123",
        "we_" + "g" * 32,
        "WE_" + "a" * 32,
        "whd_" + "a" * 32,
        "sa_00000000-0000-0000-0000-000000000000",
        "we_" + "a" * 32,  # well-formed, unknown
    ],
)
def test_malformed_wrong_type_or_unknown_ids_are_404(owner, endpoint_id):
    assert_error(owner.client.get(f"/v1/webhook-endpoints/{endpoint_id}"), 404, "NOT_FOUND")
    assert_error(owner.client.delete(f"/v1/webhook-endpoints/{endpoint_id}"), 404, "NOT_FOUND")
    assert_error(owner.client.post(f"/v1/webhook-endpoints/{endpoint_id}/rotate-secret"), 404, "NOT_FOUND")


def test_delete_hides_the_endpoint_and_cancels_its_queued_deliveries(owner):
    endpoint = create(owner).json()
    event = event_record(organization_id=owner.org.id, type="social_account.connected", data={})
    (delivery_id,) = services.event_fan_out(event_id=event.pk)  # pending: the test's transaction never commits

    response = owner.client.delete(f"/v1/webhook-endpoints/{endpoint['id']}")

    assert response.status_code == 200
    assert response.json() == {"id": endpoint["id"], "deleted": True}
    assert_error(owner.client.get(f"/v1/webhook-endpoints/{endpoint['id']}"), 404, "NOT_FOUND")
    assert_error(owner.client.delete(f"/v1/webhook-endpoints/{endpoint['id']}"), 404, "NOT_FOUND")
    assert owner.client.get("/v1/webhook-endpoints").json()["data"] == []
    assert WebhookDelivery.objects.get(pk=delivery_id).status == "canceled"


def test_rotate_secret_returns_a_new_secret_once_and_keeps_the_old_one_for_24_hours(owner):
    created = create(owner).json()

    response = owner.client.post(f"/v1/webhook-endpoints/{created['id']}/rotate-secret")

    assert response.status_code == 200
    rotated = response.json()
    assert rotated["id"] == created["id"]
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != created["secret"]
    assert rotated["previousSecretExpiresAt"] is not None
    detail = owner.client.get(f"/v1/webhook-endpoints/{created['id']}").json()
    assert "secret" not in detail
    assert detail["previousSecretExpiresAt"] == rotated["previousSecretExpiresAt"]
    row = WebhookEndpoint.objects.get(pk=created["id"])
    assert row.previous_secret_expires_at - row.secret_rotated_at == services.ROTATION_OVERLAP
    assert row.signing_secrets(row.secret_rotated_at) == [rotated["secret"], created["secret"]]
    assert row.signing_secrets(row.previous_secret_expires_at) == [rotated["secret"]]
    # once the overlap is over, nothing signs with the previous secret, and the endpoint says so
    with time_machine.travel(row.previous_secret_expires_at):
        assert owner.client.get(f"/v1/webhook-endpoints/{created['id']}").json()["previousSecretExpiresAt"] is None


def test_rotating_an_endpoint_deleted_meanwhile_is_a_404_not_a_500(owner, monkeypatch):
    created = create(owner).json()
    looked_up = selectors.endpoint_get

    def deleted_right_after_the_lookup(**kwargs):
        endpoint = looked_up(**kwargs)
        services.endpoint_delete(endpoint_id=endpoint.pk)  # a concurrent DELETE, from another key say
        return endpoint

    monkeypatch.setattr(selectors, "endpoint_get", deleted_right_after_the_lookup)

    response = owner.client.post(f"/v1/webhook-endpoints/{created['id']}/rotate-secret")

    assert_error(response, 404, "NOT_FOUND")
    row = WebhookEndpoint.objects.get(pk=created["id"])
    assert crypto.decrypt(row.secret_enc) == created["secret"] and row.secret_rotated_at is None


def test_idempotent_create_replays_the_same_secret_without_storing_it_in_plaintext(owner):
    first = create(owner, HTTP_IDEMPOTENCY_KEY="create-hook-1")
    again = create(owner, HTTP_IDEMPOTENCY_KEY="create-hook-1")

    assert first.status_code == again.status_code == 201
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert WebhookEndpoint.objects.count() == 1
    stored = IdempotencyKey.objects.get(key="create-hook-1")
    assert first.json()["secret"] not in json.dumps(stored.response_body)
    other = create(owner, url="https://93.184.216.35/x", HTTP_IDEMPOTENCY_KEY="create-hook-1")
    assert_error(other, 409, "IDEMPOTENCY_KEY_REUSED")


def test_idempotent_rotation_rotates_once(owner):
    created = create(owner).json()
    path = f"/v1/webhook-endpoints/{created['id']}/rotate-secret"

    first = owner.client.post(path, HTTP_IDEMPOTENCY_KEY="rotate-1")
    again = owner.client.post(path, HTTP_IDEMPOTENCY_KEY="rotate-1")

    assert again.json()["secret"] == first.json()["secret"]
    row = WebhookEndpoint.objects.get(pk=created["id"])
    assert row.signing_secrets(row.secret_rotated_at) == [first.json()["secret"], created["secret"]]


def test_list_pages_with_a_cursor_and_a_constant_number_of_queries(owner):
    ids = [create(owner).json()["id"] for _ in range(5)]

    with CaptureQueriesContext(connection) as small:
        owner.client.get("/v1/webhook-endpoints?limit=1")
    with CaptureQueriesContext(connection) as large:
        page1 = owner.client.get("/v1/webhook-endpoints?limit=3").json()
    page2 = owner.client.get(f"/v1/webhook-endpoints?limit=3&cursor={page1['nextCursor']}").json()

    assert len(large.captured_queries) == len(small.captured_queries)
    assert [e["id"] for e in page1["data"] + page2["data"]] == list(reversed(ids))
    assert page2["nextCursor"] is None


def test_webhook_endpoints_need_a_key(anon, owner):
    endpoint = create(owner).json()
    assert_error(anon.get("/v1/webhook-endpoints"), 401, "UNAUTHENTICATED")
    assert_error(
        anon.post("/v1/webhook-endpoints", {"url": URL, "events": EVENTS}, format="json"), 401, "UNAUTHENTICATED"
    )
    assert_error(anon.get(f"/v1/webhook-endpoints/{endpoint['id']}"), 401, "UNAUTHENTICATED")


def test_openapi_documents_the_operations_and_the_receiving_guide(db):
    schema = Client().get("/v1/openapi.json").json()
    paths = schema["paths"]

    assert set(paths["/v1/webhook-endpoints"]) == {"get", "post"}
    assert set(paths["/v1/webhook-endpoints/{endpointId}"]) == {"get", "patch", "delete"}
    assert set(paths["/v1/webhook-endpoints/{endpointId}/rotate-secret"]) == {"post"}
    create_op = paths["/v1/webhook-endpoints"]["post"]
    assert {"201", "401", "404", "422", "429", "500"} <= set(create_op["responses"])
    guide = create_op["description"]
    for needle in ("Layers-Signature", "hmac", "+72 h", "410", "redirect", "Layers-Event-Id", "Retry-After"):
        assert needle in guide, needle
    rotate = paths["/v1/webhook-endpoints/{endpointId}/rotate-secret"]["post"]["description"]
    assert "v1=<new>,v1=<old>" in rotate


def test_api_answers_are_never_stored_by_caches_least_of_all_those_carrying_a_secret(owner):
    # A browser-based dashboard or a debugging proxy must not keep a signing secret (or a partner's data).
    created = owner.client.post(
        "/v1/webhook-endpoints",
        {"url": "https://hooks.acme.test/x", "events": ["social_account.connected"]},
        format="json",
    )
    rotated = owner.client.post(f"/v1/webhook-endpoints/{created.json()['id']}/rotate-secret")
    listed = owner.client.get("/v1/webhook-endpoints")
    refused = owner.client.post("/v1/webhook-endpoints", {"url": "ftp://x"}, format="json")

    assert created.json()["secret"].startswith("whsec_") and rotated.json()["secret"].startswith("whsec_")
    for response in (created, rotated, listed, refused):
        assert response["Cache-Control"] == "no-store", (response.status_code, dict(response.items()))
