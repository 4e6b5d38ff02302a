from urllib.parse import urlsplit

import pytest
from django.contrib.auth import get_user_model

from tests.e2e.browser import CHROMIUM, CHROMIUM_ARGS
from tests.staff import totp_code


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    # playwright's sync API runs an event loop on this thread; Django would then refuse ORM calls from the
    # test body ("async context") although nothing here is async.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            yield browser
            browser.close()


@pytest.fixture
def page(browser, live_server):
    """A page whose every request is checked: anything not addressed to the live server is aborted and
    recorded in `page.outside`, so a test can assert that nothing left the machine."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    origin = urlsplit(live_server.url).netloc
    outside: list[str] = []

    def gate(route):
        url = route.request.url
        if urlsplit(url).scheme in ("data", "blob") or urlsplit(url).netloc == origin:
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    context.route("**/*", gate)
    page = context.new_page()
    page.set_default_timeout(15000)
    page.outside = outside
    yield page
    context.close()


def sign_in(page, live_server, username: str, password: str) -> None:
    """Staff sign-in through allauth, as a person does it: password, then the authenticator's code."""
    page.goto(f"{live_server.url}/admin/")
    page.fill("input[name=login]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    enter_totp_code(page, live_server, username)


def enter_totp_code(page, live_server, username: str) -> None:
    """The MFA step of the sign-in (staff who can assign accounts, move money or grant permissions must have MFA)."""
    page.wait_for_url(f"{live_server.url}/staff/2fa/authenticate/")
    page.fill("input[name=code]", totp_code(get_user_model().objects.get(username=username)))
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/admin/")
