"""The relay, end to end through real HTTP receivers on 127.0.0.1: a committed event is fanned out to the
subscribed endpoints of its organization and POSTed signed; failures are retried; 410 disables; redirects
are failures; destinations are re-checked at delivery time; nothing is sent for a rolled-back change."""

import json
import socket
import time
from datetime import timedelta

import httpx
import pytest
import time_machine
from celery import shared_task
from cryptography.fernet import Fernet
from django.db import transaction
from django.utils import timezone

from accounts.models import Event
from accounts.services import event_record
from accounts.webhooks import services, tasks
from accounts.webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookFanout
from tests.outages import broker_down
from tests.webhooks.helpers import create_endpoint, delivery_of, record
from tests.webhooks.receiver import DripReceiver, free_port, parse_signature, signed_with

pytestmark = pytest.mark.django_db(transaction=True)


class Boom(Exception):
    pass


def test_a_committed_event_is_posted_once_signed_with_the_endpoint_secret(owner, receivers):
    receiver = receivers()
    endpoint = create_endpoint(owner, receiver.url())
    before = int(time.time())

    event = record(owner, "social_account.connected", socialAccountId="sa_1", handle="acme")

    (request,) = receiver.requests
    assert request.method == "POST" and request.path == "/hooks"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["layers-event-id"] == event.pk
    assert request.headers["layers-delivery-attempt"] == "1"
    body = json.loads(request.body)
    assert body == owner.client.get("/v1/events").json()["data"][0]  # the event as GET /v1/events shows it
    assert body == {
        "id": event.pk,
        "type": "social_account.connected",
        "createdAt": body["createdAt"],
        "data": {"socialAccountId": "sa_1", "handle": "acme"},
    }
    timestamp, signatures = parse_signature(request.headers["layers-signature"])
    assert len(signatures) == 1
    assert before <= timestamp <= int(time.time())
    assert signed_with(request, endpoint["secret"])
    assert not signed_with(request, endpoint["secret"] + "x")
    delivery = delivery_of(event, endpoint)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 1, 200)
    assert delivery.delivered_at is not None


def test_a_tampered_body_does_not_verify(owner, receivers):
    receiver = receivers()
    endpoint = create_endpoint(owner, receiver.url())
    record(owner, n=1)

    (request,) = receiver.requests
    request.body = request.body.replace(b'"n":1', b'"n":2')
    assert not signed_with(request, endpoint["secret"])


def test_fan_out_reaches_only_live_subscribed_endpoints_of_the_events_organization(owner, sibling, receivers):
    receiver = receivers()
    subscribed = create_endpoint(owner, receiver.url("/subscribed"))
    create_endpoint(owner, receiver.url("/other-type"), events=["scheduled_post.failed"])
    disabled = create_endpoint(owner, receiver.url("/disabled"))
    services.endpoint_disable(endpoint_id=disabled["id"], reason="staff")
    deleted = create_endpoint(owner, receiver.url("/deleted"))
    owner.client.delete(f"/v1/webhook-endpoints/{deleted['id']}")
    create_endpoint(sibling, receiver.url("/sibling"))

    event = record(owner, "social_account.connected")

    assert [r.path for r in receiver.requests] == ["/subscribed"]
    assert list(WebhookDelivery.objects.values_list("endpoint_id", flat=True)) == [subscribed["id"]]
    assert WebhookFanout.objects.get(event=event).deliveries == 1


def test_fan_out_is_idempotent(owner, receivers):
    receiver = receivers()
    endpoint = create_endpoint(owner, receiver.url())
    event = record(owner)

    assert services.event_fan_out(event_id=event.pk) == []
    tasks.webhook_fan_out.delay(event.pk)
    tasks.webhooks_tick()

    assert WebhookDelivery.objects.filter(event=event, endpoint_id=endpoint["id"]).count() == 1
    assert len(receiver.requests) == 1


def test_a_rolled_back_change_produces_no_event_and_no_delivery(owner, receivers):
    receiver = receivers()
    create_endpoint(owner, receiver.url())

    with pytest.raises(Boom), transaction.atomic():
        event_record(organization_id=owner.org.id, type="social_account.connected", data={"doomed": True})
        raise Boom()
    with time_machine.travel(timezone.now() + timedelta(minutes=5), tick=False):
        tasks.webhooks_tick()

    assert Event.objects.count() == 0
    assert WebhookDelivery.objects.count() == 0 and WebhookFanout.objects.count() == 0
    assert receiver.connections == 0


def test_non_2xx_answer_is_a_failed_attempt_retried_later(owner, receivers):
    receiver = receivers(respond=lambda r: (500, {}))
    endpoint = create_endpoint(owner, receiver.url())

    event = record(owner)

    delivery = delivery_of(event, endpoint)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("pending", 1, 500)
    assert delivery.last_error == "HTTP 500"
    assert delivery.next_attempt_at > delivery.last_attempt_at
    (attempt,) = delivery.attempt_log.all()
    assert (attempt.number, attempt.status_code) == (1, 500) and attempt.finished_at is not None


def test_410_disables_the_endpoint_and_stops_its_queued_deliveries(owner, receivers):
    answers = iter([500, 410])
    receiver = receivers(respond=lambda r: (next(answers, 200), {}))
    endpoint = create_endpoint(owner, receiver.url())
    first = record(owner, n=1)  # 500: waits for its retry
    second = record(owner, n=2)  # 410

    assert delivery_of(second, endpoint).status == "failed"
    assert delivery_of(first, endpoint).status == "canceled"
    body = owner.client.get(f"/v1/webhook-endpoints/{endpoint['id']}").json()
    assert (body["status"], body["disabledReason"]) == ("disabled", "gone")

    record(owner, n=3)
    with time_machine.travel(timezone.now() + timedelta(days=1), tick=False):
        tasks.webhooks_tick()
    assert len(receiver.requests) == 2
    assert WebhookDelivery.objects.count() == 2


@pytest.mark.parametrize("status", [300, 304])
def test_a_3xx_that_is_not_a_redirect_is_not_delivered_either(owner, receivers, status):
    # API.md: any 2xx is delivered, anything else is retried; 300 sits right past the boundary.
    receiver = receivers(respond=lambda r: (status, {}))
    endpoint = create_endpoint(owner, receiver.url())

    event = record(owner)

    delivery = delivery_of(event, endpoint)
    assert len(receiver.requests) == 1
    assert (delivery.status, delivery.last_status_code, delivery.delivered_at) == ("pending", status, None)


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_a_failure_and_its_location_is_never_requested(owner, receivers, status):
    elsewhere = receivers()
    receiver = receivers(respond=lambda r: (status, {"Location": elsewhere.url("/elsewhere")}))
    endpoint = create_endpoint(owner, receiver.url())

    event = record(owner)

    delivery = delivery_of(event, endpoint)
    assert (delivery.status, delivery.last_status_code) == ("pending", status)
    assert len(receiver.requests) == 1
    assert elsewhere.connections == 0 and elsewhere.requests == []


def test_a_receiver_that_does_not_answer_in_time_is_a_failed_attempt(owner, receivers, settings):
    settings.LAYERS_WEBHOOK_TIMEOUT = 0.3
    answered = []

    def slow(request):
        time.sleep(1.5)
        answered.append(True)
        return 200, {}

    receiver = receivers(respond=slow)
    endpoint = create_endpoint(owner, receiver.url())

    event = record(owner)

    delivery = delivery_of(event, endpoint)
    assert delivery.status == "pending" and delivery.last_status_code is None
    assert delivery.last_error.startswith("timeout")
    assert len(receiver.requests) == 1


def test_a_receiver_dripping_its_answer_past_the_timeout_is_a_failed_attempt(owner, settings):
    # The timeout bounds the whole attempt, not each wait: this receiver sends a byte of its headers every
    # half second (so no single wait reaches 1 s) and would take a minute to answer. It used to hold the
    # worker thread all that time and then be recorded as delivered.
    settings.LAYERS_WEBHOOK_TIMEOUT = 1.0
    receiver = DripReceiver(gap=0.5, header_bytes=120)
    try:
        endpoint = create_endpoint(owner, receiver.url())
        event = record(owner)  # fan-out and first attempt run inline (eager Celery)
        delivery = delivery_of(event, endpoint)
        assert receiver.ended.wait(30), "the relay still holds the connection"
    finally:
        receiver.stop()
    assert delivery.status == "pending" and delivery.last_status_code is None
    assert delivery.last_error.startswith("timeout")
    assert receiver.client_left and not receiver.completed


def test_deliveries_to_a_down_receiver_arrive_once_it_is_back(owner, receivers):
    port = free_port()  # nothing listens there yet
    endpoint = create_endpoint(owner, f"http://127.0.0.1:{port}/hooks")
    event = record(owner)
    delivery = delivery_of(event, endpoint)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("pending", 1, None)
    assert "ConnectError" in delivery.last_error

    receiver = receivers(port=port)
    with time_machine.travel(delivery.next_attempt_at, tick=False):
        tasks.webhooks_tick()

    (request,) = receiver.requests
    assert request.headers["layers-event-id"] == event.pk
    assert request.headers["layers-delivery-attempt"] == "2"
    assert signed_with(request, endpoint["secret"])
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 2, 200)


def test_an_attempt_that_is_not_due_yet_is_not_sent_early(owner, receivers):
    receiver = receivers(respond=lambda r: (503, {}))
    endpoint = create_endpoint(owner, receiver.url())
    delivery = delivery_of(record(owner), endpoint)

    with time_machine.travel(delivery.next_attempt_at - timedelta(seconds=1), tick=False):
        tasks.webhooks_tick()
        tasks.webhook_deliver.delay(delivery.pk)

    assert len(receiver.requests) == 1


@pytest.fixture
def spy_on_http(monkeypatch):
    """Every request httpx sends in this test (to prove that a refused destination is never contacted)."""
    sent = []
    real_send = httpx.Client.send

    def send(self, request, **kwargs):
        sent.append(str(request.url))
        return real_send(self, request, **kwargs)

    monkeypatch.setattr(httpx.Client, "send", send)
    return sent


def _fake_dns(monkeypatch, mapping):
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in mapping:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (mapping[host], port or 443))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr("config.netguard.socket.getaddrinfo", getaddrinfo)


@pytest.mark.parametrize(
    "url",
    [
        "https://169.254.169.254/latest/meta-data/",
        "https://hooks.partner.test/layers",  # resolves (below) to a private address
        "https://localhost:{port}/hooks",  # resolves to loopback
        "http://127.0.0.1:{port}/hooks",
    ],
)
def test_a_destination_that_became_private_is_refused_at_delivery_time(
    owner, receivers, settings, monkeypatch, spy_on_http, url
):
    # given an endpoint accepted while private destinations were allowed (or before its DNS changed)
    receiver = receivers()
    endpoint = create_endpoint(owner, url.format(port=receiver.port))
    # when private destinations are disallowed and the host resolves to a private address
    settings.LAYERS_WEBHOOK_ALLOW_PRIVATE = False
    _fake_dns(monkeypatch, {"hooks.partner.test": "10.1.2.3"})

    event = record(owner)

    # then the attempt is refused before any connection, and retried later like any failure
    delivery = delivery_of(event, endpoint)
    assert delivery.status == "pending" and delivery.attempts == 1
    assert delivery.last_error.startswith("refused:")
    assert spy_on_http == []
    assert receiver.connections == 0


def test_during_a_rotation_both_secrets_sign_and_after_24_hours_only_the_new_one(owner, receivers):
    receiver = receivers()
    endpoint = create_endpoint(owner, receiver.url())
    new_secret = owner.client.post(f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret").json()["secret"]
    old_secret = endpoint["secret"]

    record(owner, n=1)
    with time_machine.travel(timezone.now() + timedelta(hours=24, seconds=1), tick=False):
        record(owner, n=2)

    during, after = receiver.requests
    _, during_sigs = parse_signature(during.headers["layers-signature"])
    assert len(during_sigs) == 2
    assert signed_with(during, new_secret) and signed_with(during, old_secret)
    _, after_sigs = parse_signature(after.headers["layers-signature"])
    assert len(after_sigs) == 1
    assert signed_with(after, new_secret) and not signed_with(after, old_secret)


def test_a_secret_that_no_longer_decrypts_is_logged_as_an_error_naming_the_endpoint(owner, receivers, settings, caplog):
    # The encryption key the secret was stored under was removed before re-encrypting (rotate_token_keys):
    # requests go out without a valid signature and the partner rejects every one; ops must learn why.
    receiver = receivers(respond=lambda r: (401, {}))
    endpoint = create_endpoint(owner, receiver.url())
    settings.LAYERS_TOKEN_KEYS = [Fernet.generate_key().decode()]

    with caplog.at_level("ERROR", logger="accounts.webhooks"):
        record(owner)

    (request,) = receiver.requests
    assert not signed_with(request, endpoint["secret"])
    errors = [r for r in caplog.records if r.levelname == "ERROR" and r.name.startswith("accounts.webhooks")]
    assert errors and all(endpoint["id"] in r.getMessage() for r in errors)
    assert "decrypt" in errors[0].getMessage()
    assert not any(endpoint["secret"] in r.getMessage() for r in caplog.records)


def test_an_event_whose_fan_out_never_ran_is_delivered_by_the_relay_tick(owner, receivers, monkeypatch):
    receiver = receivers()
    endpoint = create_endpoint(owner, receiver.url())
    monkeypatch.setattr("accounts.services._after_event_commit", lambda event_id: None)  # the worker died
    event = record(owner)
    assert WebhookDelivery.objects.count() == 0

    with time_machine.travel(timezone.now() + timedelta(minutes=1), tick=False):
        tasks.webhooks_tick()

    (request,) = receiver.requests
    assert request.headers["layers-event-id"] == event.pk
    assert delivery_of(event, endpoint).status == "delivered"


@shared_task
def _record_in_a_worker(organization_id: str) -> str:
    """What a worker task does when it changes something partners hear about (a publish, a token check)."""
    with transaction.atomic():
        return event_record(organization_id=organization_id, type="scheduled_post.failed", data={"id": "sp_x"}).pk


def test_an_event_committed_by_a_worker_task_is_fanned_out_there_without_the_broker(owner, receivers, monkeypatch):
    receiver = receivers()
    endpoint = create_endpoint(owner, receiver.url(), events=["scheduled_post.failed"])

    monkeypatch.setattr(tasks.webhook_fan_out, "delay", broker_down)
    # .result, not .get(): a test that ran a worker in this process leaves Celery refusing get() here.
    event_id = _record_in_a_worker.apply(args=(owner.org.pk,)).result

    # No relay tick: the worker created the delivery itself, and it was sent.
    assert WebhookFanout.objects.filter(event_id=event_id).exists()
    assert [r.headers["layers-event-id"] for r in receiver.requests] == [event_id]
    assert delivery_of(Event.objects.get(pk=event_id), endpoint).status == "delivered"


def test_a_change_committed_while_the_broker_is_down_is_still_delivered(owner, receivers, monkeypatch):
    receiver = receivers()
    endpoint = create_endpoint(owner, receiver.url())

    with monkeypatch.context() as patched:
        patched.setattr(tasks.webhook_fan_out, "delay", broker_down)
        event = record(owner)  # the change commits; enqueueing its fan-out fails
    assert Event.objects.filter(pk=event.pk).exists()
    assert receiver.requests == []

    with time_machine.travel(timezone.now() + timedelta(minutes=1), tick=False):
        tasks.webhooks_tick()

    assert [r.headers["layers-event-id"] for r in receiver.requests] == [event.pk]
    assert delivery_of(event, endpoint).status == "delivered"


def test_an_endpoint_created_after_an_event_does_not_receive_it(owner, receivers, monkeypatch):
    receiver = receivers()
    monkeypatch.setattr("accounts.services._after_event_commit", lambda event_id: None)
    record(owner)
    create_endpoint(owner, receiver.url())

    with time_machine.travel(timezone.now() + timedelta(minutes=1), tick=False):
        tasks.webhooks_tick()

    assert receiver.requests == []
    assert WebhookDelivery.objects.count() == 0


def test_deleting_an_endpoint_stops_its_retries(owner, receivers):
    receiver = receivers(respond=lambda r: (500, {}))
    endpoint = create_endpoint(owner, receiver.url())
    delivery = delivery_of(record(owner), endpoint)

    owner.client.delete(f"/v1/webhook-endpoints/{endpoint['id']}")
    with time_machine.travel(delivery.next_attempt_at + timedelta(hours=1), tick=False):
        tasks.webhooks_tick()

    assert len(receiver.requests) == 1
    delivery.refresh_from_db()
    assert delivery.status == "canceled"
    assert WebhookEndpoint.objects.get(pk=endpoint["id"]).deleted_at is not None


def test_an_attempt_under_way_when_its_endpoint_is_deleted_keeps_its_result_in_the_log(owner, receivers):
    """The partner deletes the endpoint while a request to it is in flight: the delivery is canceled, and the
    attempt's answer is still written to the attempt log (it stayed without a result, an attempt that never
    ended, in the admin)."""
    from accounts.webhooks.models import WebhookDeliveryAttempt

    created: dict = {}

    def delete_then_answer(request):
        from django.db import connection

        services.endpoint_delete(endpoint_id=created["id"])  # the partner's DELETE, while we wait for the answer
        connection.close()
        return 202, {}

    receiver = receivers(respond=delete_then_answer)
    created.update(create_endpoint(owner, receiver.url()))
    delivery = delivery_of(record(owner), created)

    assert len(receiver.requests) == 1
    delivery.refresh_from_db()
    assert delivery.status == "canceled"
    (attempt,) = WebhookDeliveryAttempt.objects.filter(delivery=delivery)
    assert attempt.finished_at is not None and attempt.status_code == 202, (attempt.finished_at, attempt.error)


def test_a_worker_fans_out_the_event_it_wrote_without_reading_it_back_and_sends_the_stored_body(owner, receivers):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    # Written the way a publishing worker writes it; the keys are in an order jsonb does not keep.
    quiet = Event.objects.create(organization_id=owner.org.id, type="social_account.connected", data={"zz": 1, "a": 2})
    with CaptureQueriesContext(connection) as queries:
        assert services.event_fan_out(event_id=quiet.pk, recorded=quiet) == []
    assert WebhookFanout.objects.filter(event=quiet).exists()
    # It is marked fanned out (an UPDATE of its row), never read back.
    reads = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("SELECT")]
    assert not any(Event._meta.db_table in sql.split(" WHERE ")[0] for sql in reads)

    receiver = receivers()
    endpoint = create_endpoint(owner, receiver.url())
    heard = Event.objects.create(organization_id=owner.org.id, type="social_account.connected", data={"zz": 1, "a": 2})
    (delivery_id,) = services.event_fan_out(event_id=heard.pk, recorded=heard)
    sent = WebhookDelivery.objects.get(pk=delivery_id).body
    assert sent == services.event_body(Event.objects.get(pk=heard.pk))  # the stored row, byte for byte
    listed = owner.client.get("/v1/events").json()["data"]
    assert json.loads(sent) == next(e for e in listed if e["id"] == heard.pk)
    assert delivery_of(heard, endpoint).pk == delivery_id
