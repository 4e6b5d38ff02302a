"""A partner whose post vanished from its calendar reads why on the post (GET /v1/scheduled-posts/{id}, the
list): a post canceled by anyone but the partner's own DELETE carries an `error` saying so — ACCOUNT_DISCONNECTED
when its account left the project (a revoke, a lease release, an off-boarding), CANCELED_BY_LAYERS when Layers
staff canceled it. Never who at Layers did it, nor the partner's key: the admin's "Canceled by" names them,
for support only."""

import json

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts import services as account_services
from scheduling import selectors
from scheduling.models import ScheduledPost
from scheduling.serializers import scheduled_post_data
from tests.billing.factories import lease_assign
from tests.factories import make_account
from tests.platform_helpers import held_tasks
from tests.scheduling.publish_helpers import later, schedule_now
from tests.scheduling.test_ops_admin_at_scale import run_worker, seed, select_all
from tests.scheduling.test_support_post_page import CANCEL_PATHS, cancel_queued_post
from tests.staff import staff_login, superuser

STAFF = "zed.support"
DISCONNECTED = {
    "code": "ACCOUNT_DISCONNECTED",
    "message": "The post was canceled because its account was disconnected.",
}
RELEASED = {
    "code": "ACCOUNT_DISCONNECTED",
    "message": "The post was canceled because its leased account was released.",
}
OFFBOARDED = {
    "code": "ACCOUNT_DISCONNECTED",
    "message": "The post was canceled because the organization was off-boarded and its accounts disconnected.",
}
BY_LAYERS = {"code": "CANCELED_BY_LAYERS", "message": "Canceled by Layers support."}

EXPECTED = {
    "partner cancel": None,  # the partner's own DELETE: it knows
    "partner revoke": DISCONNECTED,
    "partner release": RELEASED,
    "staff cancel": BY_LAYERS,
    "staff revoke": DISCONNECTED,
    "staff release": RELEASED,
}


@pytest.fixture
def staff(db) -> Client:
    return staff_login(Client(), superuser(STAFF))


def assert_names_nobody(owner, body: str) -> None:
    """Nothing the partner reads names the staff member, nor the key it called with (canceled_by does)."""
    for secret in (STAFF, f"lyr_{owner.key.prefix}", str(owner.key.pk), "staff ", "revoked by", "released by"):
        assert secret not in body, (secret, body)


def canceled_listed(owner) -> dict:
    answer = owner.client.get(f"/v1/projects/{owner.project.id}/scheduled-posts?status=canceled&limit=100")
    assert answer.status_code == 200, answer.content
    assert_names_nobody(owner, answer.content.decode())
    return {post["id"]: post for post in answer.json()["data"]}


@pytest.mark.parametrize("how", CANCEL_PATHS)
def test_a_canceled_post_says_why_unless_the_partner_canceled_it(owner, staff, how):
    post_id, _ = cancel_queued_post(how, owner, staff)

    shown = owner.client.get(f"/v1/scheduled-posts/{post_id}")

    assert shown.status_code == 200
    assert shown.json()["status"] == "canceled"
    assert shown.json()["error"] == EXPECTED[how]
    assert_names_nobody(owner, shown.content.decode())
    listed = canceled_listed(owner)
    assert listed[post_id] == shown.json()
    # The events the partner polls (an account's disconnection, among them) name nobody either.
    events = owner.client.get("/v1/events?limit=100")
    assert events.status_code == 200
    assert_names_nobody(owner, events.content.decode())


def test_the_partners_own_cancel_answers_without_an_error(owner):
    post_id = schedule_now(owner, make_account(owner).pk, when=later(hours=1))["id"]

    canceled = owner.client.delete(f"/v1/scheduled-posts/{post_id}")

    assert canceled.status_code == 200
    assert canceled.json()["status"] == "canceled" and canceled.json()["error"] is None


def test_staff_canceling_a_whole_list_tell_each_post_layers_canceled_it(owner, staff, settings):
    """The admin's "Select all" then cancel: the request cancels the first rows, a worker the rest; every post
    reads CANCELED_BY_LAYERS, whichever of the two canceled it."""
    settings.LAYERS_ADMIN_ACTION_ROWS = 5
    queued = seed(owner, 12, accounts=3, status="queued")

    with held_tasks() as held:
        select_all(staff, "cancel_posts", "?status__exact=queued")
    assert ScheduledPost.objects.filter(status="canceled").count() == 5
    run_worker(held)

    listed = canceled_listed(owner)
    assert set(listed) == set(queued)
    assert {json.dumps(post["error"]) for post in listed.values()} == {json.dumps(BY_LAYERS)}


def test_an_offboarded_partners_posts_say_the_organization_left(owner):
    """Off-boarding revokes the partner's keys, so it reads nothing more through them; its posts carry the reason
    all the same (what the API would answer, and what an export of its data would show)."""
    connected = make_account(owner).pk
    leased = lease_assign(owner).social_account_id
    posts = [schedule_now(owner, account, when=later(days=1))["id"] for account in (connected, leased)]

    account_services.organization_offboard(organization_id=owner.org.pk, actor=superuser(STAFF))

    listed = selectors.scheduled_post_list(organization=owner.org, project_id=owner.project.pk, status="canceled")
    shown = {post.pk: scheduled_post_data(post) for post in listed}
    assert set(shown) == set(posts)
    for post in shown.values():
        assert post["error"] == OFFBOARDED
        assert_names_nobody(owner, json.dumps(post))


def test_a_post_canceled_before_reasons_were_recorded_says_nothing(owner):
    """Posts canceled before the reason was stored (or by the release still serving during that deploy) have
    only the admin's free text, which is not read for the partner: their error stays null."""
    post_id = schedule_now(owner, make_account(owner).pk, when=later(hours=1))["id"]
    ScheduledPost.objects.filter(pk=post_id).update(
        status="canceled", canceled_by=f"account revoked by staff {STAFF}", cancel_reason=""
    )

    shown = owner.client.get(f"/v1/scheduled-posts/{post_id}")

    assert shown.json()["status"] == "canceled" and shown.json()["error"] is None
    assert_names_nobody(owner, shown.content.decode())


def test_a_failed_post_keeps_its_own_error(owner):
    """A post that failed (a worker found its account gone) keeps its failure, whatever else the row holds."""
    post_id = schedule_now(owner, make_account(owner).pk, when=later(hours=1))["id"]
    ScheduledPost.objects.filter(pk=post_id).update(
        status="failed", error_code="ACCOUNT_DISCONNECTED", error_message="The account was disconnected."
    )

    shown = owner.client.get(f"/v1/scheduled-posts/{post_id}")

    assert shown.json()["error"] == {"code": "ACCOUNT_DISCONNECTED", "message": "The account was disconnected."}


def test_the_list_of_canceled_posts_reads_the_same_few_queries_for_any_page(owner, staff):
    accounts = [make_account(owner) for _ in range(12)]
    for account in accounts:
        schedule_now(owner, account.pk, when=later(hours=1))
    staff.post("/admin/scheduling/scheduledpost/", {"action": "cancel_posts", "_selected_action": list(
        ScheduledPost.objects.values_list("pk", flat=True)
    )})  # fmt: skip
    counts = []
    for limit in (2, 12):
        with CaptureQueriesContext(connection) as queries:
            data = owner.client.get(
                f"/v1/projects/{owner.project.id}/scheduled-posts?status=canceled&limit={limit}"
            ).json()["data"]
        assert len(data) == limit and all(post["error"] == BY_LAYERS for post in data)
        counts.append(len(queries.captured_queries))
    assert counts[0] == counts[1]
