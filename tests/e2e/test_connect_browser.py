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
        # Exactly the returnUrl, as the browser shows it. After Instagram, which sends the browser to our callback
        # with `#_`, an empty `#` that keeps the browser from carrying `#_` over our redirect (RFC 9110 10.2.2).
        assert page.url == (f"{return_url}#" if platform == "instagram" else return_url)

    status = api.get(f"/v1/social/oauth-status/{link['state']}").json()
    assert status["status"] == "completed"
    accounts = api.get(f"/v1/projects/{project.id}/social-accounts").json()["data"]
    assert [a["handle"] for a in accounts] == ["browser.creator"]
    assert accounts[0]["id"] == status["socialAccountId"]
