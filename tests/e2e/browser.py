"""Shared pieces of the browser tests: Debian's chromium driven by Playwright (never a downloaded
browser), and settings that point the platform sandbox at the live test server."""

import contextlib
from pathlib import Path

from django.conf import settings as django_settings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
SCREENSHOTS = Path(django_settings.BASE_DIR) / "var" / "screenshots"


@contextlib.contextmanager
def browser_page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(15000)
            yield page
        finally:
            browser.close()


def screenshot(page, name: str, *, full_page: bool = True) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def point_platforms_at(settings, base_url: str) -> None:
    """Make every URL derived from LAYERS_PUBLIC_URL use the live server (as `make run` does on its port)."""
    sb = f"{base_url}/sandbox"
    settings.LAYERS_PUBLIC_URL = base_url
    settings.LAYERS_OAUTH_CALLBACK_BASE = f"{base_url}/oauth"
    settings.LAYERS_TIKTOK_AUTHORIZE_URL = f"{sb}/tiktok/v2/auth/authorize/"
    settings.LAYERS_TIKTOK_API_BASE = f"{sb}/tiktok"
    settings.LAYERS_INSTAGRAM_AUTHORIZE_URL = f"{sb}/instagram/oauth/authorize"
    settings.LAYERS_INSTAGRAM_API_BASE = f"{sb}/instagram/api"
    settings.LAYERS_INSTAGRAM_GRAPH_BASE = f"{sb}/instagram/graph"
    settings.LAYERS_PLATFORM_TRANSPORT = "http"  # real sockets to the live server, like production
