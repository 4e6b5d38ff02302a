"""What a data deletion request leaves of the person in the copies Layers keeps of what it told partners: the
events (GET /v1/events) and the webhook deliveries' stored bodies, written before the request with the person's
handle, display name and picture. The status page says "completed": those copies are scrubbed in the erasure's
transaction, their ids, types, times and the partner's own content kept, and a delivery not yet sent sends (and
signs) the scrubbed body."""

import json
import threading
import time
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from accounts.models import Event, SocialAccount
from accounts.webhooks import services as webhook_services
from accounts.webhooks import tasks as webhook_tasks
from accounts.webhooks.models import WebhookDelivery
from tests.accounts.oauth_helpers import connected_account
from tests.accounts.test_instagram_deauthorization import DATA_DELETION, control, payload_for, post, signed_request
from tests.concurrency import on_its_own_connection
from tests.webhooks.helpers import create_endpoint
from tests.webhooks.receiver import signed_with

pytestmark = pytest.mark.django_db(transaction=True)

ACCOUNT_EVENTS = [
    "social_account.connected",
    "social_account.needs_reauth",
    "social_account.reconnected",
    "social_account.disconnected",
]


def delete_data_of(username: str) -> None:
    # issued a second from now: every token stored so far is older than the request
    answer = post(DATA_DELETION, signed_request(payload_for(username, issued_at=int(time.time()) + 1)))
    assert answer.status_code == 200, answer.content


def personal(username: str, account_id: str) -> tuple[str, ...]:
    """What of the person an event of theirs may carry: handle, display name, the copied picture's URL."""
    row = SocialAccount.objects.get(pk=account_id)
    assert row.avatar_url, "the picture must have been copied for the test to mean anything"
    return (username, username.replace(".", " ").title(), row.avatar_url)


def test_events_and_webhook_bodies_written_before_the_request_keep_nothing_of_the_person(owner, outsider, receivers):
    delivered = receivers()
    refusing = {"now": True}
    failing = receivers(respond=lambda received: (503 if refusing["now"] else 200, {}))
    secrets = {
        "delivered": create_endpoint(owner, delivered.url(), events=ACCOUNT_EVENTS)["secret"],
        "failing": create_endpoint(owner, failing.url(), events=ACCOUNT_EVENTS)["secret"],
    }
    mine = connected_account(owner, "instagram", "ig.copied")
    theirs = connected_account(outsider, "instagram", "ig.copied", return_url="https://globex.test/back")
    kept_elsewhere = connected_account(owner, "instagram", "ig.stays")
    leaks = personal("ig.copied", mine["id"]) + personal("ig.copied", theirs["id"])[2:]
    # Removing the app first (Meta's deauthorize): its needs_reauth carries the picture too.
    control("ig.copied")
    before = owner.client.get("/v1/events").json()["data"]
    assert any(leak in json.dumps(before) for leak in leaks)  # the copies this test is about
    assert len(failing.posts) == len(delivered.posts) == 3  # connected ×2 (one is "ig.stays"), needs_reauth

    delete_data_of("ig.copied")

    after = owner.client.get("/v1/events").json()["data"]
    theirs_after = outsider.client.get("/v1/events").json()["data"]
    for listed in (after, theirs_after):
        assert not any(leak in json.dumps(listed, ensure_ascii=False) for leak in leaks), listed
    # The same events, in the same order, at the same times: only the person's fields changed.
    new = [e for e in after if e["type"] != "social_account.needs_reauth" or e["id"] in {b["id"] for b in before}]
    assert [(e["id"], e["type"], e["createdAt"]) for e in new] == [(e["id"], e["type"], e["createdAt"]) for e in before]
    for old, now in zip(before, new, strict=True):
        if old["data"]["id"] == mine["id"]:
            assert (now["data"]["handle"], now["data"]["displayName"], now["data"]["avatarUrl"]) == ("", "", None)
            assert {k: v for k, v in now["data"].items() if k not in ("handle", "displayName", "avatarUrl")} == {
                k: v for k, v in old["data"].items() if k not in ("handle", "displayName", "avatarUrl")
            }
        else:  # another person's account: untouched
            assert now == old and now["data"]["id"] == kept_elsewhere["id"]
    # Every stored delivery body (sent or not) is the event as the list shows it now.
    for delivery in WebhookDelivery.objects.select_related("event"):
        assert not any(leak in delivery.body for leak in leaks)
        assert delivery.body == webhook_services.event_body(Event.objects.get(pk=delivery.event_id))

    # The deliveries the failing receiver refused are sent again, scrubbed and signed over what is sent.
    refusing["now"] = False
    sent_before = len(failing.posts)
    with time_machine.travel(timezone.now() + timedelta(hours=2), tick=False):
        webhook_tasks.webhooks_tick()
    retried = failing.posts[sent_before:]
    assert len(retried) >= 3
    listed = {e["id"]: e for e in owner.client.get("/v1/events").json()["data"]}
    for request in retried:
        assert not any(leak.encode() in request.body for leak in leaks)
        assert signed_with(request, secrets["failing"])
        body = json.loads(request.body)
        assert body == listed[body["id"]]


def test_a_fan_out_that_read_the_event_before_the_request_does_not_send_the_old_body(owner, receivers, monkeypatch):
    receiver = receivers()
    create_endpoint(owner, receiver.url(), events=ACCOUNT_EVENTS)
    account = connected_account(owner, "instagram", "ig.racing")
    leaks = personal("ig.racing", account["id"])
    control("ig.racing")  # its needs_reauth, with the picture, is the event this test fans out
    event = Event.objects.get(type="social_account.needs_reauth")
    webhook_services.WebhookFanout.objects.filter(event=event).delete()
    WebhookDelivery.objects.filter(event=event).delete()
    Event.objects.filter(pk=event.pk).update(fanned_out_at=None)

    # The relay tick fans out the event while Meta's request lands: it has built the body when the erasure
    # commits, and writes its deliveries after.
    built, real_body = threading.Event(), webhook_services.event_body

    def body_then_wait(row):
        body = real_body(row)
        built.set()
        time.sleep(1.0)
        return body

    monkeypatch.setattr(webhook_services, "event_body", body_then_wait)
    errors = []
    fan_out = on_its_own_connection(lambda: webhook_services.event_fan_out(event_id=event.pk), errors)
    try:
        assert built.wait(10)
        delete_data_of("ig.racing")
    finally:
        fan_out.join(30)
    monkeypatch.setattr(webhook_services, "event_body", real_body)
    assert errors == [] and not fan_out.is_alive()

    (delivery,) = WebhookDelivery.objects.filter(event=event)
    assert not any(leak in delivery.body for leak in leaks)
    assert delivery.body == real_body(Event.objects.get(pk=event.pk))
    # (Its first send may have left before the erasure committed, as any event sent before Meta's request did.)
