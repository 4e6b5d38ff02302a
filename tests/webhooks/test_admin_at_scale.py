"""A partner's webhook receiver was down for a day: its deliveries ran out of their 3-day window... or, after
a shorter outage, many thousands of them failed. Once it is back, ops list them (status failed, the partner's
endpoint), tick "Select all" and resend them, from one web request.

Resending 2,000 one at a time took 8 s (200,000 would take a quarter of an hour), queued one send per delivery
onto the webhooks queue, where every other partner's sends waited behind them (all but a couple deferred at
once: the endpoint takes ENDPOINT_IN_FLIGHT sends at a time), read every selected delivery with its body into
the web process (126 MB for 20,000), and told staff "queued for sending" once per delivery, also of deliveries
a colleague had resent a moment before."""

import re
from datetime import timedelta

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.models import LogEntry
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.admin_bulk import ROW_MESSAGES
from accounts.models import Event
from accounts.webhooks import services
from accounts.webhooks.models import WebhookDelivery
from tests.concurrency import run_in_threads
from tests.platform_helpers import held_tasks
from tests.staff import messages_of, staff_login, superuser
from tests.webhooks.helpers import create_endpoint

pytestmark = pytest.mark.django_db(transaction=True)

DELIVERIES = "/admin/webhooks/webhookdelivery/"
BODY = '{"type": "social_account.connected", "data": {"handle": "' + "x" * 1500 + '"}}'


def missed(tenant, count: int, **fields) -> list[str]:
    """`count` deliveries of as many events to a live endpoint of `tenant`, failed a while ago (its receiver was
    down), written in bulk."""
    endpoint = create_endpoint(tenant, "https://hooks.example/layers")
    day_ago = timezone.now() - timedelta(days=1)
    events = Event.objects.bulk_create(
        [
            Event(organization=tenant.org, type="social_account.connected", created_at=day_ago, fanned_out_at=day_ago)
            for _ in range(count)
        ],
        batch_size=5000,
    )
    rows = [
        WebhookDelivery(
            endpoint_id=endpoint["id"],
            event=event,
            body=BODY,
            status="failed",
            attempts=12,
            failed_at=day_ago,
            **fields,
        )
        for event in events
    ]
    return [row.pk for row in WebhookDelivery.objects.bulk_create(rows, batch_size=5000)]


def select_all(client: Client, query: str = "?status__exact=failed"):
    first = WebhookDelivery.objects.order_by("pk").values_list("pk", flat=True).first()
    data = {"action": "resend", ACTION_CHECKBOX_NAME: [first], "select_across": "1", "index": "0"}
    return client.post(DELIVERIES + query, data, follow=True)


def resent_count(messages: list[str]) -> int:
    """How many deliveries the messages say were resent: counted in one message, or one message each."""
    text = " ".join(messages)
    counted = re.search(r"Webhook deliveries: ([\d,]+) queued for sending", text)
    if counted:
        return int(counted.group(1).replace(",", ""))
    return len(re.findall(r"Webhook delivery whd_\w+: queued for sending", text))


def sends(held) -> list:
    return [args for task, args in held if task.name.endswith("webhook_deliver")]


@pytest.fixture
def ops(db):
    return staff_login(Client(), superuser())


def test_resending_a_day_of_missed_deliveries_does_the_first_in_the_request_and_paces_the_sends(owner, ops, settings):
    settings.LAYERS_ADMIN_ACTION_ROWS = 300
    ids = missed(owner, 1_200)

    with held_tasks() as held, CaptureQueriesContext(connection) as statements:
        done = select_all(ops)

    assert done.status_code == 200
    resent = WebhookDelivery.objects.filter(status="pending").count()
    assert resent == settings.LAYERS_ADMIN_ACTION_ROWS
    # A couple of sends start now (what the endpoint takes at once); the relay tick queues the others as it
    # answers, instead of a send per delivery onto the queue every partner's webhooks share.
    assert len(sends(held)) <= services.ENDPOINT_IN_FLIGHT, len(sends(held))
    # The request read no body but those of the list's page (100 rows): the audit reads what it writes, not the
    # whole selection, bodies and all.
    bodies = [
        q["sql"]
        for q in statements.captured_queries
        if '"webhooks_webhookdelivery"."body"' in q["sql"] and not q["sql"].endswith("LIMIT 100")
    ]
    assert bodies == [], bodies[:1]
    told = messages_of(done)
    assert len(told) <= 3, told
    assert f"Webhook deliveries: {resent:,} queued for sending" in " ".join(told), told
    assert any("900 more" in m and "worker" in m for m in told), told

    with held_tasks() as sent_later:
        for task, args in held:
            if not task.name.endswith("webhook_deliver"):
                task.run(*args)  # the worker

    assert WebhookDelivery.objects.filter(pk__in=ids, status="pending").count() == len(ids)
    assert WebhookDelivery.objects.filter(next_attempt_at__lte=timezone.now(), give_up_at=None).count() == len(ids)
    assert sends(sent_later) == []  # the relay's tick sends them, at the receiver's pace
    assert LogEntry.objects.filter(object_id__in=ids).count() == len(ids)


def test_two_staff_resending_the_same_deliveries_at_once_resend_each_once_and_each_says_what_they_did(owner):
    ids = missed(owner, 400)
    first, second = staff_login(Client(), superuser("ops")), staff_login(Client(), superuser("oncall"))

    with held_tasks() as held:
        told = run_in_threads(lambda: messages_of(select_all(first)), lambda: messages_of(select_all(second)))

    assert WebhookDelivery.objects.filter(pk__in=ids, status="pending").count() == len(ids)
    # Together they resent 400 deliveries, not 800: the second found them waiting to be sent already.
    assert sum(resent_count(messages) for messages in told) == len(ids), told
    assert any("waiting to be sent already" in " ".join(messages) for messages in told), told
    assert len(sends(held)) <= 2 * services.ENDPOINT_IN_FLIGHT
    assert LogEntry.objects.filter(object_id__in=ids).count() == len(ids)


def test_resending_a_few_still_names_each_one(owner, ops):
    ids = missed(owner, 3)
    WebhookDelivery.objects.filter(pk=ids[0]).update(status="delivered", delivered_at=timezone.now())

    with held_tasks() as held:
        told = messages_of(select_all(ops, query=""))

    assert sorted(m for m in told if "queued for sending" in m) == sorted(
        f"Webhook delivery {pk}: queued for sending." for pk in ids[1:]
    )
    assert any(m.startswith(f"Webhook delivery {ids[0]}: Already delivered") for m in told), told
    assert len(sends(held)) == 2
    assert len(told) <= ROW_MESSAGES
