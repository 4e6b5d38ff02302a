"""Support answering "my post sp_… never went out" from the admin: the post's page says what happened to
it — each publishing attempt with the platform's own code and words and its publish id, who or what canceled
it — and keeps a failure a staff retry replaced."""

import html
import re

import httpx
import pytest
import time_machine
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from scheduling import services
from scheduling.models import ScheduledPost
from tests.accounts.oauth_helpers import connected_account
from tests.billing.factories import lease_assign
from tests.factories import make_account
from tests.platform_helpers import inject_fault, intercepted
from tests.scheduling.publish_helpers import later, post, run_dispatcher, schedule_now
from tests.staff import admin_object_url, signed_in_staff, staff_login, superuser

POSTS = "/admin/scheduling/scheduledpost/"


@pytest.fixture
def staff(db) -> Client:
    return staff_login(Client(), superuser("ops"))


def _text(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment)).strip()


def field_shown(page: str, label: str) -> str | None:
    """The value the post page shows beside `label` (a read-only field), or None when there is no such field."""
    found = re.search(rf"<label>{re.escape(label)}:</label>\s*<div class=\"readonly\">(.*?)</div>", page, re.S)
    return None if found is None else _text(found.group(1))


def attempts_shown(page: str) -> list[dict[str, str]]:
    """The rows of the page's publishing attempts table, each as {column: text}."""
    group = re.search(r'id="attempt_log-group"(.*?)</table>', page, re.S)
    if group is None:
        return []
    rows = re.findall(r'<tr class="form-row[^"]*"[^>]*>(.*?)</tr>', group.group(1), re.S)
    return [
        {name: _text(value) for name, value in re.findall(r'<td class="field-(\w+)">\s*<p>(.*?)</p>', row, re.S)}
        for row in rows
    ]


def post_page(client: Client, post_id: str) -> str:
    page = client.get(admin_object_url(ScheduledPost, post_id))
    assert page.status_code == 200, page.status_code
    return page.content.decode()


# TikTok's status answer for a post it refused for its caption.
def caption_refused(request: httpx.Request, sandbox: httpx.WSGITransport) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "data": {"status": "FAILED", "fail_reason": "spam_risk_text"},
            "error": {"code": "ok", "message": "", "log_id": "L1"},
        },
    )


@pytest.mark.django_db(transaction=True)
def test_the_post_page_lists_each_attempt_of_a_post_rate_limited_until_given_up(owner, staff):
    """A post TikTok rate-limited again and again over its retry window, then given up: the page showed only
    `Attempts: N` and the last error. Each attempt is now a row: when it started and ended, what came of it,
    with the platform's words."""
    account = connected_account(owner, "tiktok", "throttled.creator")
    inject_fault("tiktok", "throttled.creator", "rate_limited", count=50)
    scheduled = schedule_now(owner, account["id"])
    for minutes in (0, 20, 40, 60):  # the last is past the retry window (an hour)
        with time_machine.travel(later(minutes=minutes)):
            run_dispatcher()
    assert post(owner, scheduled["id"])["error"]["code"] == "RATE_LIMITED"

    rows = attempts_shown(post_page(staff, scheduled["id"]))

    assert [(row["number"], row["platform"], row["outcome"], row["error_code"]) for row in rows] == [
        *((str(n), "tiktok", "retry later", "RATE_LIMITED") for n in range(1, 4)),
        ("4", "tiktok", "failed", "RATE_LIMITED"),
    ]  # the platform column: which platform said it, as the "Platforms now" panel counts it
    assert all("rate_limit_exceeded" in row["message"] for row in rows), rows  # TikTok's own code
    assert all(row["started_at"].endswith("UTC") and row["finished_at"].endswith("UTC") for row in rows)
    assert len({row["started_at"] for row in rows}) == 4  # one per run, minutes apart


def test_support_staff_who_may_only_view_posts_see_the_attempts(owner):
    post_id = schedule_now(owner, make_account(owner).pk, when=later(hours=1))["id"]
    ScheduledPost.objects.filter(pk=post_id).update(status="failed", attempts=1)
    row = ScheduledPost.objects.get(pk=post_id)
    row.attempt_log.create(
        number=1, started_at=timezone.now(), finished_at=timezone.now(), outcome="failed", error_code="X_CODE"
    )
    _, viewer = signed_in_staff("scheduling.view_scheduledpost")

    rows = attempts_shown(post_page(viewer, post_id))

    assert [row["error_code"] for row in rows] == ["X_CODE"]


@pytest.mark.django_db(transaction=True)
def test_publishing_a_post_writes_one_attempt_row_with_its_transition(owner, staff):
    """The record costs one insert per run that ends an attempt, made in the transaction of the post's own
    transition (no commit of its own), and nothing on the dispatcher's claim."""
    account = connected_account(owner, "tiktok", "one.row")
    scheduled = schedule_now(owner, account["id"])

    with CaptureQueriesContext(connection) as claim:
        services.posts_claim_due()
    with CaptureQueriesContext(connection) as publish:
        services.posts_publish(post_ids=[scheduled["id"]])

    assert [q for q in claim.captured_queries if "scheduledpostattempt" in q["sql"]] == []
    sql = [q["sql"] for q in publish.captured_queries]
    on_attempts = [i for i, statement in enumerate(sql) if "scheduledpostattempt" in statement]
    assert len(on_attempts) == 1 and sql[on_attempts[0]].startswith("INSERT"), sql
    insert = on_attempts[0]
    begin = max(i for i in range(insert) if sql[i] == "BEGIN")
    commit = min(i for i in range(insert, len(sql)) if sql[i] == "COMMIT")
    assert any(s.startswith('UPDATE "scheduling_scheduledpost" SET "status"') for s in sql[begin:commit]), sql
    (row,) = attempts_shown(post_page(staff, scheduled["id"]))
    assert (row["number"], row["outcome"]) == ("1", "published")
    assert row["publish_id"] == ScheduledPost.objects.get(pk=scheduled["id"]).publish_id != ""


def test_the_post_page_shows_no_updated_at_that_never_moves(owner, staff):
    """Every state change of a post is a conditional UPDATE, which never moves an auto_now column: the page's
    "Updated at" always read the creation time, published or canceled hours later. The attempts, canceled at
    and published at say when things happened; the column is not shown."""
    post_id = schedule_now(owner, make_account(owner).pk, when=later(hours=1))["id"]
    with time_machine.travel(later(minutes=30)):
        assert owner.client.delete(f"/v1/scheduled-posts/{post_id}").status_code == 200

    page = post_page(staff, post_id)

    assert field_shown(page, "Canceled at") is not None
    assert field_shown(page, "Updated at") is None


@pytest.mark.django_db(transaction=True)
def test_a_tiktok_refusal_carries_tiktoks_own_code_to_the_page_and_the_partner(owner, staff):
    """TikTok ended the post FAILED with `spam_risk_text`: the page and the API said PLATFORM_REJECTED and
    "TikTok refused the caption." without the code, which is what TikTok's documentation and support go by."""
    account = connected_account(owner, "tiktok", "caption.refused")
    scheduled = schedule_now(owner, account["id"])
    with intercepted({"/v2/post/publish/status/fetch/": caption_refused}):
        run_dispatcher()

    error = post(owner, scheduled["id"])["error"]
    page = post_page(staff, scheduled["id"])

    assert error["code"] == "PLATFORM_REJECTED"
    assert "TikTok refused the caption." in error["message"] and "(spam_risk_text)" in error["message"]
    assert "spam_risk_text" in field_shown(page, "Error message")
    (row,) = attempts_shown(page)
    assert row["outcome"] == "failed" and "spam_risk_text" in row["message"]


@pytest.mark.parametrize(
    "fail_code, fail_reason, message",
    [
        ("spam_risk_text", "TikTok refused the caption.", "TikTok refused the caption. (spam_risk_text)"),
        ("weird_new_reason", "weird_new_reason", "weird_new_reason"),  # a code TikTok has no sentence for
        ("2207052", "Error: Media upload has failed with error code 2207052", None),  # named already
        ("25/2207050", "instagram 25/2207050: The account is restricted", None),
        ("2207052", "Error code 22070521 of another kind", "Error code 22070521 of another kind (2207052)"),
    ],
)
def test_a_platforms_code_is_added_to_its_words_once(fail_code, fail_reason, message):
    from accounts.platforms.base import PublishStatus

    status = PublishStatus(state="failed", fail_code=fail_code, fail_reason=fail_reason)

    assert services._with_code(status) == (message or fail_reason)


@pytest.mark.django_db(transaction=True)
def test_a_staff_retry_keeps_the_failure_it_replaced_on_the_page(owner, staff):
    """The retry blanks the post's error and publish id (the post is queued again); the failure it replaced
    stays in the attempts, with its code, words and publish id, beside who queued it again."""
    account = connected_account(owner, "tiktok", "retried.after.refusal")
    scheduled = schedule_now(owner, account["id"])
    with intercepted({"/v2/post/publish/status/fetch/": caption_refused}):
        run_dispatcher()
    refused = ScheduledPost.objects.get(pk=scheduled["id"])
    assert refused.status == "failed" and refused.publish_id

    staff.post(POSTS, {"action": "retry_posts", "_selected_action": [refused.pk]})
    run_dispatcher()

    published = ScheduledPost.objects.get(pk=refused.pk)
    assert published.status == "published" and published.publish_id != refused.publish_id
    rows = attempts_shown(post_page(staff, refused.pk))
    assert [(row["outcome"], row["error_code"], row["publish_id"]) for row in rows] == [
        ("failed", "PLATFORM_REJECTED", refused.publish_id),
        ("queued again by staff", "-", "-"),
        ("published", "-", published.publish_id),
    ]
    assert "spam_risk_text" in rows[0]["message"]
    assert "staff ops" in rows[1]["message"]


def _confirm(staff: Client, url: str, action: str, pk: str):
    answer = staff.post(url, {"action": action, "_selected_action": [pk], "post": "yes"})
    assert answer.status_code == 302, answer.content.decode()[:2000]


CANCEL_PATHS = ("partner cancel", "partner revoke", "partner release", "staff cancel", "staff revoke", "staff release")


def cancel_queued_post(how: str, owner, staff: Client) -> tuple[str, str]:
    """Cancel a queued post the way `how` (one of CANCEL_PATHS) says; (post id, what the page should say canceled
    it, `staff` being signed in as "ops"). tests/scheduling/test_why_canceled.py reads the same posts in the API."""
    key = f"API key test ({owner.key.pk} / lyr_{owner.key.prefix}…)"
    leased = how.endswith("release")
    account_id = lease_assign(owner).social_account_id if leased else make_account(owner).pk
    post_id = schedule_now(owner, account_id, when=later(hours=1))["id"]
    if how == "partner cancel":
        assert owner.client.delete(f"/v1/scheduled-posts/{post_id}").status_code == 200
        return post_id, f"partner ({key})"
    if how == "partner revoke":
        assert owner.client.delete(f"/v1/social-accounts/{account_id}").status_code == 200
        return post_id, f"account revoked by partner ({key})"
    if how == "partner release":
        assert owner.client.delete(f"/v1/leased-accounts/{account_id}").status_code == 200
        return post_id, f"lease released by partner ({key})"
    if how == "staff cancel":
        staff.post(POSTS, {"action": "cancel_posts", "_selected_action": [post_id]})
        return post_id, "staff ops"
    if how == "staff revoke":
        _confirm(staff, "/admin/accounts/socialaccount/", "revoke_accounts", account_id)
        return post_id, "account revoked by staff ops"
    from leasing.models import Lease

    _confirm(staff, "/admin/leasing/lease/", "release_leases", Lease.objects.get(social_account_id=account_id).pk)
    return post_id, "lease released by staff ops"


@pytest.mark.parametrize("how", CANCEL_PATHS)
def test_the_post_page_says_who_or_what_canceled_it(owner, staff, how):
    post_id, expected = cancel_queued_post(how, owner, staff)

    page = post_page(staff, post_id)

    assert ScheduledPost.objects.get(pk=post_id).status == "canceled"
    assert field_shown(page, "Canceled by") == expected
