"""What support staff see in the back-office when they answer a partner's ticket: the events about a post,
an account or a lease request found by its id (and through an index), why an event reached no endpoint, an
account's status history (every reauth, not only the last), its granted scopes and refresh expiry."""

import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts import services
from accounts.models import Event, SocialAccount
from leasing import services as leasing
from tests.accounts.oauth_helpers import connected_account, reauthorize
from tests.leasing.helpers import add_pool, get_request, request_accounts
from tests.platform_helpers import invalidate_tokens
from tests.scheduling.publish_helpers import run_dispatcher, schedule_now
from tests.staff import admin_object_url, staff_login, superuser

pytestmark = pytest.mark.django_db(transaction=True)

EVENTS = "/admin/accounts/event/"


@pytest.fixture
def staff() -> Client:
    return staff_login(Client(), superuser("support"))


def leased_account(tenant) -> tuple[str, str]:
    """A pool account leased to `tenant`: (lease request id, social account id)."""
    add_pool(1)
    accepted = request_accounts(tenant, 1)
    leasing.lease_assign(request_id=accepted["requestId"], auto=True)
    return accepted["requestId"], get_request(tenant, accepted["requestId"])["socialAccountIds"][0]


def about(subject_id: str) -> set[str]:
    """The events whose subject is `subject_id`, read from their payloads here (not by the code under test):
    a post's and an account's carry it as `id`, a lease request's as `requestId`."""
    return {
        event.pk for event in Event.objects.all() if subject_id in (event.data.get("id"), event.data.get("requestId"))
    }


def listed(staff: Client, term: str) -> tuple[set[str], list[str]]:
    """The events the list shows for `?q=term`, and its statements on the events table."""
    from tests.admin_plans import statements_on

    with CaptureQueriesContext(connection) as captured:
        page = staff.get(EVENTS, {"q": term})
    assert page.status_code == 200
    return {row.pk for row in page.context["cl"].result_list}, statements_on(captured, "accounts_event")


# --- 1. events found by the id of what they are about ---------------------------------------------------


def test_a_post_an_account_or_a_lease_request_id_finds_the_events_about_it_through_an_index(owner, outsider, staff):
    """ "We never received scheduled_post.failed for sp_…": support pastes the post's id into the events
    list. It found nothing (only evt_ and org_ ids were looked up); the events table is never small, so the
    search must be answered by an index, not by reading every event's payload."""
    from tests.admin_plans import reading_whole_table

    account = connected_account(owner, "tiktok", "acme.brand")
    connected_account(outsider, "tiktok", "globex.brand", return_url="https://globex.test/connected")
    invalidate_tokens("tiktok", "acme.brand")
    post = schedule_now(owner, account["id"])
    run_dispatcher()  # the token is refused: the post fails, the account needs a reauth
    request_id, leased_id = leased_account(owner)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE accounts_event")

    searches = {
        post["id"]: {"scheduled_post.failed"},
        account["id"]: {"social_account.connected", "social_account.needs_reauth"},
        request_id: {"lease_request.assigned"},
        post["id"][0].upper() + post["id"][1:]: {"scheduled_post.failed"},  # `Sp_…` from a sentence's start
    }
    for term, types in searches.items():
        found, statements = listed(staff, term)
        assert found == about(term[0].lower() + term[1:]), term
        assert {Event.objects.get(pk=pk).type for pk in found} == types, term
        assert statements and reading_whole_table(statements, "accounts_event") == [], term
    assert about(leased_id) <= listed(staff, leased_id)[0]


def test_the_account_page_links_to_the_events_about_the_account_without_reading_them(owner, staff):
    account = connected_account(owner, "instagram", "acme.brand")
    invalidate_tokens("instagram", "acme.brand")
    services.social_account_check_health(account_id=account["id"])

    with CaptureQueriesContext(connection) as captured:
        page = staff.get(admin_object_url(SocialAccount, account["id"])).content.decode()

    link = f"{reverse('admin:accounts_event_changelist')}?q={account['id']}"
    assert f'href="{link}"' in page and "events about this account" in page
    assert not [q["sql"] for q in captured.captured_queries if "accounts_event" in q["sql"]]
    found, _ = listed(staff, account["id"])
    assert found == about(account["id"]) and len(found) == 2


# --- 2. why an event reached no endpoint ----------------------------------------------------------------


def test_an_event_page_says_which_subscribed_endpoints_were_disabled_or_deleted_when_it_happened(
    owner, staff, receivers
):
    from accounts.webhooks.models import WebhookEndpoint
    from tests.webhooks.helpers import create_endpoint, record

    gone = create_endpoint(owner, receivers(respond=lambda received: (410, {})).url())
    deleted = create_endpoint(owner, receivers().url())
    record(owner, n=1)  # answered 410: the endpoint is disabled
    assert owner.client.delete(f"/v1/webhook-endpoints/{deleted['id']}").status_code == 200

    event = record(owner, n=2)
    page = staff.get(admin_object_url(Event, event.pk)).content.decode()

    disabled = WebhookEndpoint.objects.get(pk=gone["id"])
    removed = WebhookEndpoint.objects.get(pk=deleted["id"])
    assert "no endpoint of the organization subscribed" not in page
    assert gone["id"] in page and "410" in page and f"{disabled.disabled_at:%Y-%m-%d %H:%M}" in page
    assert deleted["id"] in page and "deleted" in page and f"{removed.deleted_at:%Y-%m-%d %H:%M}" in page

    # Enabled again by staff: the page says it receives the events from then on, not this one.
    from accounts.webhooks.services import endpoint_enable

    enabled = endpoint_enable(endpoint_id=gone["id"])
    page = staff.get(admin_object_url(Event, event.pk)).content.decode()
    assert "after the event: it receives the events from then on" in page
    assert f"{enabled.enabled_at:%Y-%m-%d %H:%M}" in page


def test_an_event_page_says_when_its_fan_out_has_not_run_yet(owner, staff, receivers):
    from tests.webhooks.helpers import create_endpoint

    create_endpoint(owner, receivers().url())
    # Written as event_record writes it, but its on-commit fan-out never ran (the broker was down, the
    # worker died): the relay tick has not reached it yet.
    event = Event.objects.create(organization=owner.org, type="social_account.connected", data={"n": 1})

    page = staff.get(admin_object_url(Event, event.pk)).content.decode()

    assert "no endpoint of the organization subscribed" not in page
    assert "not fanned out yet" in page


# --- 3. the account's status history --------------------------------------------------------------------


def history(account_id: str) -> list[tuple[str, str, str]]:
    from accounts.models import SocialAccountStatusChange

    return list(
        SocialAccountStatusChange.objects.filter(social_account_id=account_id)
        .order_by("at", "pk")
        .values_list("from_status", "to_status", "source")
    )


def test_every_status_change_of_an_account_is_kept_and_shown_on_its_page(owner, staff):
    """Each needs_reauth overwrote reauth_reason, and a reconnect cleared it: support could not tell a
    partner why the account needed a reauth last week. Each transition now appends a row, with its reason
    and what made it (a post, the health check, a reauth, a revoke by an API key or staff)."""
    account = connected_account(owner, "tiktok", "acme.brand")
    invalidate_tokens("tiktok", "acme.brand")
    post = schedule_now(owner, account["id"])
    run_dispatcher()
    first_reason = SocialAccount.objects.get(pk=account["id"]).reauth_reason
    reauthorize(owner, account["id"], "tiktok", "acme.brand")
    invalidate_tokens("tiktok", "acme.brand")
    services.social_account_check_health(account_id=account["id"])
    second_reason = SocialAccount.objects.get(pk=account["id"]).reauth_reason
    reauthorize(owner, account["id"], "tiktok", "acme.brand")
    assert owner.client.delete(f"/v1/social-accounts/{account['id']}").status_code == 200

    key = f"API key test ({owner.key.pk} / lyr_{owner.key.prefix}…)"
    assert history(account["id"]) == [
        ("", "connected", f"connect through {key}"),
        ("connected", "reauth_required", f"post {post['id']}"),
        ("reauth_required", "connected", f"reauth through {key}"),
        ("connected", "reauth_required", "health check"),
        ("reauth_required", "connected", f"reauth through {key}"),
        ("connected", "disconnected", f"revoke by {key}"),
    ]
    page = staff.get(admin_object_url(SocialAccount, account["id"])).content.decode().replace("&#x27;", "'")
    assert first_reason and second_reason and first_reason != second_reason
    assert first_reason in page and second_reason in page  # both reauths, not only the last one
    assert f"post {post['id']}" in page and "health check" in page and f"revoke by {key}" in page


def test_staff_revokes_and_leases_are_in_the_history(owner, staff):
    from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME

    connected = connected_account(owner, "instagram", "acme.brand")
    request_id, leased = leased_account(owner)
    staff.post(
        reverse("admin:accounts_socialaccount_changelist"),
        {"action": "revoke_accounts", "post": "yes", ACTION_CHECKBOX_NAME: [connected["id"]]},
    )
    owner.client.delete(f"/v1/leased-accounts/{leased}")

    assert history(connected["id"])[-1] == ("connected", "disconnected", "revoke by staff support")
    key = f"API key test ({owner.key.pk} / lyr_{owner.key.prefix}…)"
    assert history(leased) == [
        ("", "connected", f"lease request {request_id} assigned automatically"),
        ("connected", "disconnected", f"lease release by {key}"),
    ]


def test_staff_cannot_delete_an_accounts_status_history(owner, staff):
    from accounts.models import SocialAccountStatusChange

    account = connected_account(owner, "instagram", "acme.brand")
    invalidate_tokens("instagram", "acme.brand")
    services.social_account_check_health(account_id=account["id"])
    rows = list(SocialAccountStatusChange.objects.filter(social_account_id=account["id"]).values_list("pk", flat=True))
    url = admin_object_url(SocialAccount, account["id"])

    page = staff.get(url).content.decode()
    staff.post(
        url,
        {
            "status_changes-TOTAL_FORMS": str(len(rows)),
            "status_changes-INITIAL_FORMS": str(len(rows)),
            **{f"status_changes-{i}-id": pk for i, pk in enumerate(rows)},
            **{f"status_changes-{i}-DELETE": "on" for i in range(len(rows))},
        },
    )

    assert len(rows) == 2 and "-DELETE" not in page
    assert SocialAccountStatusChange.objects.filter(pk__in=rows).count() == len(rows)


# --- 4. granted scopes and refresh expiry -----------------------------------------------------------------


def test_the_account_page_shows_the_granted_scopes_and_when_the_refresh_token_expires(owner, staff):
    account = connected_account(owner, "tiktok", "acme.brand")
    row = SocialAccount.objects.get(pk=account["id"])
    assert row.scopes and row.refresh_expires_at

    page = staff.get(admin_object_url(SocialAccount, account["id"])).content.decode()

    for scope in row.scopes.split(","):
        assert scope in page, scope
    assert "refresh expires at" in page.lower() and f"{row.refresh_expires_at:%Y-%m-%d %H:%M:%S} UTC" in page
    # The lifetime TikTok gave the access token, which sets how often Layers refreshes it (a third of it at most).
    lifetime = rf"Token lifetime:</label>\s*<div class=\"readonly\">{row.token_lifetime}<"
    assert row.token_lifetime and re.search(lifetime, page)
    for secret in (row.access_token, row.refresh_token, row.access_token_enc, row.refresh_token_enc):
        assert secret not in page
