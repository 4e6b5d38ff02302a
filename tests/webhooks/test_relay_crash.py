"""At least once: a relay process killed after it sent a delivery but before it recorded the result does not
lose it — once the claim's lease expires, the next tick sends it again with the same event id and body.

The relay here is a real separate process (the production code path: a change commits its event, the
on-commit hook fans it out and sends it, Celery running eagerly in that process), SIGKILLed by the receiver
while the request is in flight."""

import json
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import time_machine
from django.db import connection
from django.utils import timezone

from accounts.models import Event
from accounts.webhooks import tasks
from accounts.webhooks.models import WebhookDelivery
from tests.webhooks.helpers import create_endpoint
from tests.webhooks.receiver import signed_with

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
RELAY = """
import sys

import django

django.setup()
from django.db import transaction

from accounts.services import event_record

with transaction.atomic():
    event_record(organization_id=sys.argv[1], type="social_account.connected", data={"via": "relay process"})
"""


def _database_url() -> str:
    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def test_a_relay_killed_after_sending_but_before_recording_redelivers_the_same_event(owner, receivers):
    relay = {}

    def kill_the_relay_on_first_request(request):
        if len(receiver.requests) == 1:
            os.kill(relay["process"].pid, signal.SIGKILL)
        return 200, {}

    receiver = receivers(respond=kill_the_relay_on_first_request)
    endpoint = create_endpoint(owner, receiver.url())
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", "DATABASE_URL": _database_url()}

    relay["process"] = subprocess.Popen(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", RELAY, owner.org.id], cwd=ROOT, env=env, stderr=subprocess.PIPE
    )
    try:
        _, stderr = relay["process"].communicate(timeout=120)
    finally:
        if relay["process"].poll() is None:  # it never reached the receiver: do not leave it behind
            relay["process"].kill()

    # the relay died mid-attempt: the request reached the receiver, no result was recorded
    assert relay["process"].returncode == -signal.SIGKILL, stderr.decode()[-2000:]
    assert len(receiver.requests) == 1
    event = Event.objects.get(organization=owner.org)
    delivery = WebhookDelivery.objects.get(event=event, endpoint_id=endpoint["id"])
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("sending", 1, None)
    assert delivery.lease_until > timezone.now()

    # while the claim's lease runs, nobody sends it again
    tasks.webhooks_tick()
    assert len(receiver.requests) == 1

    # once it expired, the next tick sends the same event again
    with time_machine.travel(delivery.lease_until + timedelta(seconds=1), tick=False):
        tasks.webhooks_tick()

    first, second = receiver.requests
    assert first.headers["layers-event-id"] == second.headers["layers-event-id"] == event.pk
    assert first.body == second.body and json.loads(second.body)["data"] == {"via": "relay process"}
    assert (first.headers["layers-delivery-attempt"], second.headers["layers-delivery-attempt"]) == ("1", "2")
    assert signed_with(first, endpoint["secret"]) and signed_with(second, endpoint["secret"])
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 2, 200)
    lost, recorded = delivery.attempt_log.all()
    assert lost.status_code is None and lost.error.startswith("no result recorded")
    assert recorded.status_code == 200
