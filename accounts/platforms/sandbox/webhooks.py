"""TikTok's webhook deliveries, as the sandbox sends them: `authorization.removed`, signed with the app's
client secret the way TikTok signs (PLATFORMS.md), posted to the callback URL registered for the app
(LAYERS_SANDBOX_TIKTOK_WEBHOOK_URL: this server's own receiver by default).

The sandbox sends once and reports what the receiver answered; it does not retry as TikTok does for 72
hours, so that a test or a demo sees the outcome in the control call's answer."""

import hashlib
import hmac
import json
import time

import httpx
from django.conf import settings


def send_authorization_removed(*, open_id: str, reason: int) -> dict:
    now = int(time.time())
    body = json.dumps(
        {
            "client_key": settings.LAYERS_TIKTOK_CLIENT_KEY,
            "event": "authorization.removed",
            "create_time": now,
            "user_openid": open_id,
            "content": json.dumps({"reason": reason}),  # a serialized JSON string, as TikTok sends it
        }
    ).encode()
    signature = hmac.new(settings.LAYERS_TIKTOK_CLIENT_SECRET.encode(), f"{now}.".encode() + body, hashlib.sha256)
    url = settings.LAYERS_SANDBOX_TIKTOK_WEBHOOK_URL
    # The platform client's transport: real HTTP, or in tests this app in-process.
    from accounts.platforms.http import platform_http_client

    headers = {"Content-Type": "application/json", "TikTok-Signature": f"t={now},s={signature.hexdigest()}"}
    try:
        with platform_http_client() as http:
            response = http.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return {"url": url, "status": None, "error": type(exc).__name__}
    return {"url": url, "status": response.status_code}
