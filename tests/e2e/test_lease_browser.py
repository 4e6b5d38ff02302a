"""Ops fulfil a lease request in the admin, in a real browser; the partner API then lists the account."""

import httpx
import pytest
from django.contrib.auth import get_user_model

from accounts import services
from leasing.models import PoolAccount
from tests.e2e.browser import screenshot
from tests.e2e.conftest import sign_in
from tests.leasing.helpers import add_pool
from tests.staff import with_mfa

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
PASSWORD = "correct horse battery staple"


def test_staff_assign_a_matching_account_and_the_partner_sees_it(page, live_server):
    with_mfa(get_user_model().objects.create_user(username="ops", password=PASSWORD, is_staff=True, is_superuser=True))
    org = services.organization_create(name="Lease Browser Co")
    project = services.project_create(organization=org, name="Lease app")
    _, raw = services.api_key_create(organization=org, return_domains=["app.lease.test"])
    api = httpx.Client(base_url=live_server.url, headers={"Authorization": f"Bearer {raw}"}, timeout=15)
    (match,) = add_pool(1, vertical="fitness", geos=["US"])
    add_pool(1, vertical="gaming", geos=["US"])  # not a match: must not be offered
    body = {"projectId": project.id, "count": 1, "niche": {"vertical": "fitness", "language": "en-US", "geo": ["US"]}}
    request_id = api.post(f"/v1/projects/{project.id}/leased-accounts/request", json=body).json()["requestId"]

    sign_in(page, live_server, "ops", PASSWORD)
    page.goto(f"{live_server.url}/admin/leasing/leaserequest/")
    page.click(f"text={request_id}")
    page.click("button[value=take]")
    assert "ops since" in page.inner_text("#reviewer")
    handle = PoolAccount.objects.get(pk=match).handle
    rows = page.locator("#candidates tbody tr")
    assert rows.count() == 1 and f"@{handle}" in rows.first.inner_text()
    page.check(f"#pick-{match}")
    screenshot(page, "lease-fulfil")
    page.click("#assign-selected")

    assert page.inner_text("#request-status") == "assigned"
    assert f"@{handle}" in page.inner_text("#assigned")
    screenshot(page, "lease-assigned")
    leased = api.get(f"/v1/projects/{project.id}/leased-accounts").json()["data"]
    assert [entry["handle"] for entry in leased] == [handle]
    assert api.get(f"/v1/projects/{project.id}/leased-accounts/requests/{request_id}").json()["status"] == "assigned"
    assert page.outside == []
