"""Back-office screens for webhooks: endpoints (never their secret) and deliveries with their attempts;
actions resend a delivery and disable / enable an endpoint through the services."""

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts.models import Event
from accounts.webhooks.models import WebhookDelivery, WebhookEndpoint
from tests.staff import admin_object_url, staff_login, with_mfa
from tests.webhooks.helpers import create_endpoint, delivery_of, record

pytestmark = pytest.mark.django_db(transaction=True)

ENDPOINTS = "/admin/webhooks/webhookendpoint/"
DELIVERIES = "/admin/webhooks/webhookdelivery/"


@pytest.fixture
def staff_client() -> Client:
    user = with_mfa(
        get_user_model().objects.create_user(username="ops", password="x" * 20, is_staff=True, is_superuser=True)
    )
    client = Client()
    staff_login(client, user)
    return client


def action(client: Client, url: str, name: str, ids: list[str]):
    response = client.post(url, {"action": name, "_selected_action": ids})
    assert response.status_code == 302, response.content[:500]
    return response


def test_endpoint_pages_list_the_endpoint_and_never_show_its_secret(owner, staff_client, receivers):
    endpoint = create_endpoint(owner, receivers().url())
    row = WebhookEndpoint.objects.get(pk=endpoint["id"])

    listing = staff_client.get(ENDPOINTS).content.decode()
    detail = staff_client.get(admin_object_url(WebhookEndpoint, endpoint["id"])).content.decode()

    assert endpoint["url"] in listing and "Acme" in listing and "social_account.connected" in listing
    assert endpoint["url"] in detail
    for page in (listing, detail):
        assert endpoint["secret"] not in page
        assert row.secret_enc not in page


def test_disable_and_enable_actions_stop_and_resume_deliveries(owner, staff_client, receivers):
    receiver = receivers(respond=lambda r: (500, {}))
    endpoint = create_endpoint(owner, receiver.url())
    waiting = delivery_of(record(owner, n=1), endpoint)

    action(staff_client, ENDPOINTS, "disable_endpoints", [endpoint["id"]])

    row = WebhookEndpoint.objects.get(pk=endpoint["id"])
    assert (row.status, row.disabled_reason) == ("disabled", "staff")
    waiting.refresh_from_db()
    assert waiting.status == "canceled"
    record(owner, n=2)
    assert len(receiver.requests) == 1

    action(staff_client, ENDPOINTS, "enable_endpoints", [endpoint["id"]])

    assert WebhookEndpoint.objects.get(pk=endpoint["id"]).status == "active"
    record(owner, n=3)
    assert len(receiver.requests) == 2


def test_resend_sends_a_failed_delivery_again_now_with_the_same_event(owner, staff_client, receivers):
    answers = iter([500])
    receiver = receivers(respond=lambda r: (next(answers, 200), {}))
    endpoint = create_endpoint(owner, receiver.url())
    event = record(owner)
    delivery = delivery_of(event, endpoint)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status="failed", next_attempt_at=None)  # gave up

    action(staff_client, DELIVERIES, "resend", [delivery.pk])

    first, resent = receiver.requests
    assert resent.headers["layers-event-id"] == first.headers["layers-event-id"] == event.pk
    assert resent.body == first.body
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 2, 200)


def test_resend_refuses_a_delivery_of_a_disabled_endpoint(owner, staff_client, receivers):
    receiver = receivers(respond=lambda r: (500, {}))
    endpoint = create_endpoint(owner, receiver.url())
    delivery = delivery_of(record(owner), endpoint)
    action(staff_client, ENDPOINTS, "disable_endpoints", [endpoint["id"]])

    response = action(staff_client, DELIVERIES, "resend", [delivery.pk])

    assert "enable it first" in staff_client.get(response["Location"]).content.decode()
    delivery.refresh_from_db()
    assert delivery.status == "canceled"
    assert len(receiver.requests) == 1


def test_a_resend_while_the_partner_deletes_the_endpoint_is_refused_not_a_server_error(
    owner, staff_client, receivers, monkeypatch
):
    """Staff resend a delivery at the moment the partner deletes its endpoint. The delete locks the endpoint,
    then cancels its open deliveries; the resend locked the delivery, then (select_related without `of`)
    the endpoint: PostgreSQL killed one as a deadlock and the admin answered 500. Now the resend waits for
    the delete and is refused like any resend to a deleted endpoint; the delivery stays canceled."""

    from accounts.webhooks import services
    from tests.concurrency import SecondQueuesBehindFirst

    receiver = receivers(respond=lambda r: (500, {}))
    endpoint = create_endpoint(owner, receiver.url())
    delivery = delivery_of(record(owner), endpoint)
    owner.client.raise_request_exception = staff_client.raise_request_exception = False

    # The delete stops before canceling the deliveries, the endpoint locked, until the resend queues on a
    # lock the delete holds (the endpoint's).
    race, cancel = SecondQueuesBehindFirst('SELECT "webhooks_webhook'), services._cancel_open_deliveries

    def hold_then_cancel(endpoint_id, reason):
        race.hold()
        return cancel(endpoint_id, reason)

    monkeypatch.setattr(services, "_cancel_open_deliveries", hold_then_cancel)
    deleted, resent = race.run(
        lambda: owner.client.delete(f"/v1/webhook-endpoints/{endpoint['id']}"),
        lambda: staff_client.post(DELIVERIES, {"action": "resend", "_selected_action": [delivery.pk]}),
    )
    answers = {"delete": deleted, "resend": resent}

    assert race.overlapped  # the two requests did overlap
    assert answers["delete"].status_code == 200, answers["delete"].content[:500]
    assert answers["resend"].status_code == 302, answers["resend"].content[:500]
    assert "enable it first" in staff_client.get(answers["resend"]["Location"]).content.decode()
    delivery.refresh_from_db()
    assert delivery.status == "canceled"


def test_delivery_pages_show_attempts_status_and_errors_and_filter_by_status(owner, staff_client, receivers):
    receiver = receivers(respond=lambda r: (503, {}))
    endpoint = create_endpoint(owner, receiver.url())
    delivery = delivery_of(record(owner), endpoint)

    detail = staff_client.get(admin_object_url(WebhookDelivery, delivery.pk)).content.decode()
    pending = staff_client.get(f"{DELIVERIES}?status__exact=pending").content.decode()
    delivered = staff_client.get(f"{DELIVERIES}?status__exact=delivered").content.decode()
    by_endpoint = staff_client.get(f"{DELIVERIES}?endpoint__id__exact={endpoint['id']}").content.decode()

    assert "HTTP 503" in detail and "503" in detail and "attempt" in detail.lower()
    assert delivery.pk in pending and delivery.pk in by_endpoint
    assert delivery.pk not in delivered


def test_support_finds_a_partners_deliveries_by_organization_event_and_type(owner, outsider, staff_client, receivers):
    receiver = receivers(respond=lambda r: (200, {}))
    ours = create_endpoint(owner, receiver.url(), events=("social_account.connected", "scheduled_post.published"))
    theirs = create_endpoint(outsider, receiver.url())
    connected = delivery_of(record(owner), ours)
    published = delivery_of(record(owner, "scheduled_post.published"), ours)
    foreign = delivery_of(record(outsider), theirs)

    def listed(**params) -> set[str]:
        page = staff_client.get(DELIVERIES, params).content.decode()
        return {d.pk for d in (connected, published, foreign) if d.pk in page}

    assert listed(q=owner.org.name) == {connected.pk, published.pk}
    assert listed(q=owner.org.pk) == {connected.pk, published.pk}
    assert listed(q=connected.event_id) == {connected.pk}
    assert listed(q=connected.pk) == {connected.pk}
    assert listed(event_type="scheduled_post.published") == {published.pk}
    assert "event_type=scheduled_post.failed" in staff_client.get(DELIVERIES).content.decode()  # every type offered


def test_resend_refuses_a_delivery_that_was_delivered_and_leaves_it_delivered(owner, staff_client, receivers):
    receiver = receivers(respond=lambda r: (200, {}))
    endpoint = create_endpoint(owner, receiver.url())
    delivery = delivery_of(record(owner), endpoint)
    delivery.refresh_from_db()
    assert delivery.status == "delivered"
    receiver.respond = lambda r: (500, {})  # were it resent, it would be retried and could end `failed`

    response = action(staff_client, DELIVERIES, "resend", [delivery.pk])

    assert "already delivered" in staff_client.get(response["Location"]).content.decode().lower()
    row = WebhookDelivery.objects.get(pk=delivery.pk)
    assert (row.status, row.delivered_at, row.attempts) == ("delivered", delivery.delivered_at, 1)
    assert len(receiver.requests) == 1


def test_the_event_page_links_its_deliveries_at_a_constant_cost(owner, staff_client, receivers):
    receiver = receivers(respond=lambda r: (200, {}))
    endpoints = [create_endpoint(owner, receiver.url()) for _ in range(4)]
    first = record(owner)

    def event_page(event):
        with CaptureQueriesContext(connection) as queries:
            page = staff_client.get(admin_object_url(Event, event.pk))
        assert page.status_code == 200
        return page.content.decode(), len(queries.captured_queries)

    page, _ = event_page(first)
    for endpoint in endpoints:
        delivery = delivery_of(first, endpoint)
        assert admin_object_url(WebhookDelivery, delivery.pk) in page and "delivered" in page
    WebhookEndpoint.objects.exclude(pk=endpoints[0]["id"]).update(events=["scheduled_post.failed"])
    second = record(owner)
    assert WebhookDelivery.objects.filter(event=second).count() == 1
    assert event_page(second)[1] == event_page(first)[1]  # 1 delivery or 4: the same queries


def test_the_deliveries_list_offers_an_organizations_endpoints_without_reading_every_delivery(
    owner, outsider, staff_client, receivers
):
    receiver = receivers(respond=lambda r: (200, {}))
    ours = create_endpoint(owner, receiver.url() + "?ours")
    theirs = create_endpoint(outsider, receiver.url() + "?theirs")
    mine, foreign = delivery_of(record(owner), ours), delivery_of(record(outsider), theirs)

    with CaptureQueriesContext(connection) as queries:
        page = staff_client.get(DELIVERIES).content.decode()
    # The filters' choices come from the endpoints and the known event types, never from the deliveries,
    # which grow with every event of every partner.
    distinct = [q["sql"] for q in queries if "DISTINCT" in q["sql"] and "webhooks_webhookdelivery" in q["sql"]]
    assert distinct == []
    assert "scheduled_post.failed" in page  # every event type is offered, delivered yet or not

    # Ops pick the organization, then one of its endpoints.
    org_page = staff_client.get(DELIVERIES, {"endpoint__organization__id__exact": owner.org.pk}).content.decode()
    assert f"endpoint__id__exact={ours['id']}" in org_page and theirs["id"] not in org_page
    by_endpoint = staff_client.get(DELIVERIES, {"endpoint__id__exact": ours["id"]}).content.decode()
    assert mine.pk in by_endpoint and foreign.pk not in by_endpoint


@pytest.mark.parametrize(
    ("url", "table", "terms"),
    [
        ("/admin/accounts/event/", "accounts_event", ("Acme",)),
        (DELIVERIES, "webhooks_webhookdelivery", ("Acme", "hooks.acme.test")),
    ],
)
def test_the_outbox_lists_find_an_organization_or_endpoint_by_name_through_their_indexes(
    owner, outsider, staff_client, url, table, terms
):
    """Events and deliveries grow with every partner's traffic: a name (or endpoint URL) search was a
    substring match across the joins of every row, which no index answers. The organizations and endpoints
    are found first, then the rows by their ids (as the posts list)."""
    from accounts import crypto
    from tests.admin_plans import reading_whole_table, statements_on

    rows = {}
    for tenant, host in ((owner, "hooks.acme.test"), (outsider, "hooks.globex.test")):
        endpoint = WebhookEndpoint.objects.create(
            organization=tenant.org, url=f"https://{host}/in", events=["x"], secret_enc=crypto.encrypt("whsec_x")
        )
        event = Event.objects.create(organization=tenant.org, type="social_account.connected", data={})
        delivery = WebhookDelivery.objects.create(event=event, endpoint=endpoint, body="{}")
        rows[tenant.org.pk] = event.pk if table == "accounts_event" else delivery.pk

    for term in terms:
        with CaptureQueriesContext(connection) as captured:
            page = staff_client.get(url, {"q": term})
        assert [row.pk for row in page.context["cl"].result_list] == [rows[owner.org.pk]], term
        statements = statements_on(captured, table)
        assert statements and reading_whole_table(statements, table) == [], term
