"""PATCH /v1/webhook-endpoints/{id}: a partner changes an endpoint's events or URL, and disables or enables it
again, instead of deleting it and creating another (with a new secret to deploy). Each field is checked as
the creation checks it; `enabled` follows the rules staff enabling follows (but cannot undo a staff disable),
and enabled again the endpoint receives the events recorded from then on, never those recorded while it was off."""

import json
import logging
from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.db import transaction
from django.test import Client
from django.utils import timezone

from accounts import services as account_services
from accounts.models import Event, IdempotencyKey
from accounts.services import event_record
from accounts.webhooks import selectors, services, tasks
from accounts.webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookFanout
from config import ratelimit
from tests.concurrency import held_open, on_its_own_connection, wait_until_waiting
from tests.conftest import assert_error
from tests.webhooks.helpers import create_endpoint, delivery_of, record
from tests.webhooks.receiver import free_port

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
    # A new URL gets what waits for a retry at once (the partner fixing a broken URL expects its backlog now).
    assert "waiting for a retry at once" in " ".join(operation["description"].split())
    assert {"200", "400", "401", "404", "413", "422", "429", "500"} <= set(operation["responses"])
    assert "409" not in operation["responses"]
    request = operation["requestBody"]["content"]["application/json"]["schema"]
    body = schema["components"]["schemas"][request["$ref"].rpartition("/")[2]]
    assert set(body["properties"]) == {"url", "events", "enabled"}
    assert body.get("required", []) == []
    assert body["additionalProperties"] is False and body["minProperties"] == 1
    assert body["properties"]["enabled"]["type"] == "boolean"
    assert body["properties"]["events"]["minItems"] == 1
    assert "waiting for a retry at once" in body["properties"]["url"]["description"]
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


# --- A change of URL sends what waits at once ----------------------------------------------------------------
# The partner fixes a broken URL: the retries waiting their backoff (up to 12 h) and the endpoint's cool-off
# after unanswered attempts were about the old URL. They go to the new one at the next relay tick (or at once),
# each delivery keeping its attempt numbers and its 3-day window.

TICK = timedelta(seconds=15)  # the beat's relay tick


@pytest.fixture
def queue(monkeypatch) -> list[str]:
    """The `webhooks` queue: the sends queued (webhook_deliver), run when the test says, as a worker would."""
    sent: list[str] = []
    monkeypatch.setattr(tasks.webhook_deliver, "delay", sent.append)
    return sent


def work(queue: list[str]) -> None:
    while queue:
        tasks.webhook_deliver(queue.pop(0))


def tick(queue: list[str]) -> None:
    """A relay tick, then a worker runs what is queued."""
    tasks.webhooks_tick()
    work(queue)


def dead_url() -> str:
    """Nothing listens there: every attempt fails without an answer (no connection)."""
    return f"http://127.0.0.1:{free_port()}/hooks"


def waiting_a_backoff(owner, endpoint: dict, clock, queue: list[str], attempts: int):
    """An event whose delivery to `endpoint` failed `attempts` times, each at its time: it waits its backoff."""
    event = record(owner)
    work(queue)
    for _ in range(attempts - 1):
        clock.move_to(delivery_of(event, endpoint).next_attempt_at)
        tick(queue)
    waiting = delivery_of(event, endpoint)
    assert (waiting.status, waiting.attempts) == ("pending", attempts), waiting.last_error
    return event, waiting


@pytest.mark.django_db(transaction=True)
def test_a_retry_waiting_its_backoff_reaches_the_new_url_at_the_next_tick_in_its_window(owner, receivers, queue):
    fixed = receivers()
    endpoint = create_endpoint(owner, dead_url())
    with time_machine.travel(timezone.now(), tick=False) as clock:
        event, waiting = waiting_a_backoff(owner, endpoint, clock, queue, attempts=4)
        assert waiting.next_attempt_at > timezone.now() + timedelta(minutes=20)  # ×3 from 1 min: about 27 min
        clock.shift(timedelta(minutes=2))

        assert patch(owner, endpoint["id"], {"url": fixed.url()}).status_code == 200
        clock.shift(TICK)
        tick(queue)

    (request,) = fixed.posts
    assert request.headers["layers-event-id"] == event.pk
    assert request.headers["layers-delivery-attempt"] == "5"  # its numbering goes on
    sent = delivery_of(event, endpoint)
    assert sent.status == "delivered"
    assert (sent.first_attempt_at, sent.give_up_at) == (waiting.first_attempt_at, waiting.give_up_at)


@pytest.mark.django_db(transaction=True)
def test_a_retry_sent_early_to_the_new_url_keeps_its_backoff_and_window_if_it_fails_again(owner, receivers, queue):
    down_too = receivers(respond=lambda r: (503, {}))
    endpoint = create_endpoint(owner, dead_url())
    with time_machine.travel(timezone.now(), tick=False) as clock:
        event, waiting = waiting_a_backoff(owner, endpoint, clock, queue, attempts=4)

        assert patch(owner, endpoint["id"], {"url": down_too.url()}).status_code == 200
        clock.shift(TICK)
        tick(queue)
        now = timezone.now()

    assert [r.headers["layers-delivery-attempt"] for r in down_too.posts] == ["5"]
    after = delivery_of(event, endpoint)
    assert (after.status, after.attempts, after.give_up_at) == ("pending", 5, waiting.give_up_at)
    # The fifth attempt of its window: the next one about 81 minutes on, not the first retry's minute again.
    assert after.next_attempt_at >= now + services.retry_delay(5) * (1 - services.RETRY_JITTER)


@pytest.mark.django_db(transaction=True)
def test_an_endpoint_cooling_off_after_unanswered_attempts_gets_its_deliveries_at_the_next_tick_after_a_url_change(
    owner, receivers, queue
):
    fixed = receivers()
    endpoint = create_endpoint(owner, dead_url())
    trips = services.FAILURES_BEFORE_COOL_OFF
    with time_machine.travel(timezone.now(), tick=False) as clock:
        events = [record(owner) for _ in range(trips + 1)]
        queue.clear()  # sent one after another here, as the relay would
        outcomes = [services.delivery_deliver(delivery_id=delivery_of(e, endpoint).pk) for e in events]
        assert outcomes == ["retry"] * trips + ["deferred"]  # the last one held back by the cool-off
        held_back = delivery_of(events[-1], endpoint)
        assert held_back.next_attempt_at >= timezone.now() + services.COOL_OFF - timedelta(seconds=1)

        assert patch(owner, endpoint["id"], {"url": fixed.url()}).status_code == 200
        clock.shift(TICK)
        tick(queue)

    assert sorted(r.headers["layers-event-id"] for r in fixed.posts) == sorted(e.pk for e in events)
    rows = [delivery_of(e, endpoint) for e in events]
    assert [(d.status, d.attempts) for d in rows] == [("delivered", 2)] * trips + [("delivered", 1)]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("change", ["same url", "events"])
def test_a_patch_that_does_not_change_the_url_leaves_the_backoff_and_the_cool_off_as_they_were(
    owner, receivers, queue, change
):
    receiver = receivers()
    receiver.stop()  # down: nothing listens on its port
    endpoint = create_endpoint(owner, receiver.url())
    trips = services.FAILURES_BEFORE_COOL_OFF
    with time_machine.travel(timezone.now(), tick=False) as clock:
        events = [record(owner) for _ in range(trips + 1)]
        queue.clear()
        for event in events:
            services.delivery_deliver(delivery_id=delivery_of(event, endpoint).pk)
        before = {d.pk: d.next_attempt_at for d in WebhookDelivery.objects.all()}
        body = {"url": receiver.url()} if change == "same url" else {"events": ["social_account.disconnected"]}

        assert patch(owner, endpoint["id"], body).status_code == 200
        back = receivers(port=receiver.port)  # the receiver is up again, at the same URL
        clock.shift(TICK)
        tick(queue)

    assert back.posts == []  # each waits its backoff, or the cool-off's end
    assert {d.pk: d.next_attempt_at for d in WebhookDelivery.objects.all()} == before


@pytest.mark.django_db(transaction=True)
def test_a_url_change_leaves_the_other_endpoints_and_organizations_retries_waiting(owner, sibling, receivers, queue):
    fixed, failing = receivers(), receivers(respond=lambda r: (500, {}))
    changed = create_endpoint(owner, dead_url())
    other = create_endpoint(owner, failing.url("/other"))
    theirs = create_endpoint(sibling, failing.url("/theirs"))
    with time_machine.travel(timezone.now(), tick=False) as clock:
        event = record(owner)  # to both of the owner's endpoints
        their_event = record(sibling)
        work(queue)
        before = {d.pk: d.next_attempt_at for d in WebhookDelivery.objects.exclude(endpoint_id=changed["id"])}
        assert len(before) == 2 and len(failing.posts) == 2

        assert patch(owner, changed["id"], {"url": fixed.url()}).status_code == 200
        clock.shift(TICK)
        tick(queue)

    assert [r.headers["layers-event-id"] for r in fixed.posts] == [event.pk]
    assert len(failing.posts) == 2  # still waiting their backoff
    assert {d.pk: d.next_attempt_at for d in WebhookDelivery.objects.exclude(endpoint_id=changed["id"])} == before
    assert {(delivery_of(event, other).status, delivery_of(their_event, theirs).status)} == {("pending", "pending")}


@pytest.mark.django_db(transaction=True)
def test_a_url_change_sends_a_backlog_at_once_at_the_pace_of_the_new_url_within_the_in_flight_limits(
    owner, receivers, queue
):
    fixed, failing = receivers(), receivers(respond=lambda r: (500, {}))
    endpoint = create_endpoint(owner, failing.url())
    with time_machine.travel(timezone.now(), tick=False):
        events = [record(owner) for _ in range(6)]
        queue.clear()
        for event in events:
            services.delivery_deliver(delivery_id=delivery_of(event, endpoint).pk)
        assert len(failing.posts) == 6
        queue.clear()  # what each answer queued of the others, sent already

        assert patch(owner, endpoint["id"], {"url": fixed.url()}).status_code == 200
        # Queued at once: as many as the endpoint and its organization may have in flight, not the whole backlog;
        # each answer queues the next ones, and no tick is needed.
        assert len(queue) == min(services.ENDPOINT_IN_FLIGHT, settings.LAYERS_WEBHOOK_ORG_IN_FLIGHT)
        work(queue)

    assert sorted(r.headers["layers-event-id"] for r in fixed.posts) == sorted(e.pk for e in events)


@pytest.mark.django_db(transaction=True)
def test_a_url_change_and_a_data_deletion_rewriting_bodies_never_deadlock(owner, receivers, queue):
    """A data deletion request rewrites the stored body of the deliveries of the person's events, locking them in
    key order (deliveries_body_rewritten), as the partner fixes its URL and its waiting retries are made due."""
    endpoint = create_endpoint(owner, receivers(respond=lambda r: (500, {})).url())
    created = [record(owner).pk for _ in range(3)]
    queue.clear()  # never sent: held back (the endpoint cooling off), they wait
    events = list(Event.objects.filter(pk__in=created).order_by("pk"))
    # The highest key due first: an unordered read meets it first, then the one held, then the lowest, which the
    # erasure takes first.
    for i, (event, new) in enumerate(zip(events, ("whd_zzzz", "whd_mmmm", "whd_aaaa"), strict=True)):
        WebhookDelivery.objects.filter(pk=delivery_of(event, endpoint).pk).update(
            id=new, queued_at=None, next_attempt_at=timezone.now() + timedelta(minutes=1, seconds=i)
        )
    errors: list = []
    answers: list = []

    def erase():  # in the erasure's transaction, as accounts.services._events_scrubbed calls it
        with transaction.atomic():
            services.deliveries_body_rewritten(event_ids=[event.pk for event in events])

    with held_open(lambda: list(WebhookDelivery.objects.select_for_update().filter(pk="whd_mmmm"))):
        erasure = on_its_own_connection(erase, errors)
        wait_until_waiting("webhooks_webhookdelivery")
        change = on_its_own_connection(lambda: answers.append(patch(owner, endpoint["id"], {"url": OTHER_URL})), errors)
        wait_until_waiting("webhooks_webhookdelivery", count=2)
    erasure.join(30)
    change.join(30)

    assert errors == [], errors
    assert [answer.status_code for answer in answers] == [200], answers[0].content
    assert not WebhookDelivery.objects.filter(next_attempt_at__gt=timezone.now()).exists()
