"""Ops in the admin: find scheduled posts by status / due window, see why one failed, retry a failed post
and cancel a queued one — through the same services as the API."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from scheduling.models import ScheduledPost
from tests.factories import make_account
from tests.scheduling.publish_helpers import schedule_now
from tests.staff import admin_object_url, with_mfa


@pytest.fixture
def staff(db):
    user = with_mfa(get_user_model().objects.create_superuser("ops", "ops@layers.test", "pw-ops-12345"))
    client = Client()
    client.force_login(user)
    return client


def test_ops_filter_retry_and_cancel(owner, staff):
    account = make_account(owner)
    failed = schedule_now(owner, account.pk, when=timezone.now())
    queued = schedule_now(owner, account.pk, when=timezone.now() + timedelta(minutes=30))
    ScheduledPost.objects.filter(pk=failed["id"]).update(
        status="failed", error_code="PLATFORM_REJECTED", error_message="spam_risk_too_many_posts", attempts=1
    )

    page = staff.get("/admin/scheduling/scheduledpost/?status__exact=failed")
    assert page.status_code == 200
    assert failed["id"].encode() in page.content and queued["id"].encode() not in page.content
    assert b"PLATFORM_REJECTED" in page.content
    due = staff.get("/admin/scheduling/scheduledpost/?due=hour")
    assert queued["id"].encode() in due.content and failed["id"].encode() not in due.content
    detail = staff.get(admin_object_url(ScheduledPost, failed["id"]))
    assert b"spam_risk_too_many_posts" in detail.content

    staff.post(
        "/admin/scheduling/scheduledpost/",
        {"action": "retry_posts", "_selected_action": [failed["id"], queued["id"]]},
    )
    staff.post("/admin/scheduling/scheduledpost/", {"action": "cancel_posts", "_selected_action": [queued["id"]]})

    retried = ScheduledPost.objects.get(pk=failed["id"])
    assert (retried.status, retried.error_code, retried.attempts) == ("queued", "", 0)
    assert retried.due_at <= timezone.now()
    assert ScheduledPost.objects.get(pk=queued["id"]).status == "canceled"
    assert owner.client.get(f"/v1/scheduled-posts/{queued['id']}").json()["status"] == "canceled"
