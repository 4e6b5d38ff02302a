"""A newcomer's walk, in a real browser: ask for an OAuth URL, consent on the sandbox page, land on the
returnUrl, see the account in the API."""

import pytest

from accounts import services
from tests.e2e.browser import browser_page, point_platforms_at, screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("platform", ["tiktok", "instagram"])
def test_customer_connects_an_account_in_the_browser(live_server, settings, platform):
    point_platforms_at(settings, live_server.url)
    host = live_server.url.split("://", 1)[1]
    org = services.organization_create(name="Browser Org")
    project = services.project_create(organization=org, name="Browser App")
    _, raw = services.api_key_create(organization=org, return_domains=[host])
    from rest_framework.test import APIClient

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return_url = f"{live_server.url}/healthz?from=layers"
    link = api.post(
        f"/v1/projects/{project.id}/social/oauth-url",
        {"platform": platform, "returnUrl": return_url, "usageNote": "Browser App will publish your clips"},
        format="json",
    ).json()

    with browser_page() as page:
        page.goto(link["authorizeUrl"])
        assert "Browser App will publish your clips" in page.content()
        page.fill("input[name=username]", "browser.creator")
        screenshot(page, f"consent-{platform}")
        page.click("button[name=decision][value=approve]")
        page.wait_for_url(f"{live_server.url}/healthz*")
        assert page.url.split("#")[0] == return_url  # exactly the returnUrl, nothing added

    status = api.get(f"/v1/social/oauth-status/{link['state']}").json()
    assert status["status"] == "completed"
    accounts = api.get(f"/v1/projects/{project.id}/social-accounts").json()["data"]
    assert [a["handle"] for a in accounts] == ["browser.creator"]
    assert accounts[0]["id"] == status["socialAccountId"]
