"""Browser tests: Debian's chromium (never a downloaded build) driven by playwright against the live
server. A staff member signs in through allauth, issues an API key in the admin and the key works; the
API docs render with no request leaving the machine."""

import os
import re

import httpx
import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from accounts import services
from accounts.models import ApiKey
from tests.e2e.browser import CHROMIUM, screenshot
from tests.e2e.conftest import enter_totp_code
from tests.staff import with_mfa

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery staple"


def test_staff_issue_an_api_key_in_the_admin_and_the_key_lists_the_orgs_projects(page, live_server):
    # given a staff member and a partner organization with two projects (and another org that must stay hidden)
    with_mfa(get_user_model().objects.create_user(username="ops", password=PASSWORD, is_staff=True, is_superuser=True))
    org = services.organization_create(name="Acme Browser Co")
    projects = [services.project_create(organization=org, name=f"Acme app {i}") for i in range(2)]
    other = services.organization_create(name="Globex")
    services.project_create(organization=other, name="Globex app")

    # when they open the admin, they are sent to the allauth sign-in page
    page.goto(f"{live_server.url}/admin/")
    expect(page).to_have_url(re.compile(r"/staff/login/\?next="))
    page.fill("input[name=login]", "ops")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    enter_totp_code(page, live_server, "ops")  # superusers must have MFA
    expect(page).to_have_url(re.compile(r"/admin/$"))
    expect(page.locator("#site-name")).to_contain_text("Layers back-office")

    # and add an API key for the organization with an allowlist
    page.goto(f"{live_server.url}/admin/accounts/apikey/add/")
    page.select_option("select[name=organization]", label=f"Acme Browser Co ({org.id})")  # as staff see it
    page.fill("input[name=name]", "browser key")
    page.fill("textarea[name=allowed_return_domains]", "App.Acme.test\nlocalhost:3000")
    page.click("input[name=_save]")

    # then the key is shown once
    shown = page.locator("#raw-api-key")
    expect(shown).to_be_visible()
    raw_key = shown.inner_text().strip()
    assert re.fullmatch(r"lyr_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", raw_key)
    expect(page.locator("#content")).to_contain_text("app.acme.test, localhost:3000")
    shot = screenshot(page, "admin-apikey-created")
    assert shot.stat().st_size > 10_000

    # and is not on the key's page afterwards
    page.click("text=Go to the key")
    expect(page.locator("textarea[name=allowed_return_domains]")).to_have_value("app.acme.test\nlocalhost:3000")
    assert raw_key not in page.content()
    key = ApiKey.objects.get(name="browser key")
    assert key.key_hash not in page.content()

    # and the key lists exactly the organization's projects
    response = httpx.get(f"{live_server.url}/v1/projects", headers={"Authorization": f"Bearer {raw_key}"}, timeout=10)
    assert response.status_code == 200
    assert sorted(p["id"] for p in response.json()["data"]) == sorted(p.id for p in projects)
    assert page.outside == []


@pytest.mark.parametrize(
    ("path", "rendered"),
    [("/docs/", ".opblock-summary-path"), ("/docs/redoc/", "[data-section-id]")],
)
def test_api_docs_render_with_no_request_leaving_the_machine(page, live_server, path, rendered):
    page.goto(f"{live_server.url}{path}")

    # the operations of the schema are rendered, which needs the schema and every bundle to have loaded
    expect(page.locator(rendered).first).to_be_visible(timeout=20_000)
    assert page.locator(f"{rendered}:has-text('projects')").count() >= 1
    page.wait_for_load_state("networkidle")
    screenshot(page, "docs-" + ("swagger" if path == "/docs/" else "redoc"), full_page=False)
    assert page.outside == []


def test_the_browser_is_debians_chromium():
    assert os.access(CHROMIUM, os.X_OK)


@pytest.mark.django_db(transaction=True)
def test_staff_find_the_project_of_a_new_managed_provider_by_its_organization_in_the_browser(page, live_server):
    # Two partners both call a project "Production": staff type the organization and pick the project that
    # says it is that organization's (the admin's own search-as-you-type list, served by the admin itself).
    from scheduling.models import ManagedProvider
    from tests.e2e.conftest import sign_in

    with_mfa(get_user_model().objects.create_user(username="ops", password=PASSWORD, is_staff=True, is_superuser=True))
    acme = services.project_create(organization=services.organization_create(name="Acme"), name="Production")
    globex = services.project_create(organization=services.organization_create(name="Globex"), name="Production")

    sign_in(page, live_server, "ops", PASSWORD)
    page.goto(f"{live_server.url}/admin/scheduling/managedprovider/add/")
    page.click("#id_project + .select2")
    page.fill(".select2-search__field", "globex")
    option = page.locator(".select2-results__option", has_text=f"Production — Globex ({globex.id})")
    expect(option).to_have_count(1)
    expect(page.locator(".select2-results__option", has_text=acme.id)).to_have_count(0)
    option.click()
    page.fill("input[name=name]", "Boost")
    page.fill("input[name=endpoint_url]", "https://provider.example/in")
    page.fill("input[name=new_secret]", "shared-secret")
    screenshot(page, "managed-provider-add")
    page.click("input[name=_save]")

    expect(page.locator(".messagelist")).to_contain_text("Boost")
    assert ManagedProvider.objects.get().project_id == globex.id
    assert page.outside == []
