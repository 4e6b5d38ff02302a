"""The pages a partner's customer may see from Layers (the OAuth error page, the data deletion status page, a
link cut short), on a phone: the card stands clear of the screen's edges and nothing scrolls sideways."""

import pytest

from tests.e2e.browser import browser_page, screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PHONE = {"width": 375, "height": 700}


@pytest.mark.parametrize(
    "path", ["/oauth/tiktok/callback?state=st_unknown&code=x", "/data-deletion/", "/data-deletion/0000"]
)
def test_a_customer_page_fits_a_phone_screen_with_a_margin(live_server, path):
    with browser_page() as page:
        page.set_viewport_size(PHONE)
        page.goto(f"{live_server.url}{path}")
        card = page.locator("main").bounding_box()
        screenshot(page, "customer-page-" + path.strip("/").split("?")[0].replace("/", "-"))
        # The card touched both edges of a 375-px screen: its text ran into the glass.
        assert card["x"] >= 8, card
        assert card["x"] + card["width"] <= PHONE["width"] - 8, card
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
