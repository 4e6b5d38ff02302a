"""What the platforms post to the app when a user removes it, as the sandbox sends them:
- TikTok's `authorization.removed` webhook, signed with the app's client secret the way TikTok signs
  (PLATFORMS.md), posted to the callback URL registered for the app (LAYERS_SANDBOX_TIKTOK_WEBHOOK_URL);
- Instagram's (Meta's) Deauthorize callback and Data deletion request callback: a form whose one field is a
  `signed_request` signed with the Instagram app secret, posted to the URLs registered in Meta's App Dashboard
  (LAYERS_SANDBOX_INSTAGRAM_DEAUTHORIZE_URL, LAYERS_SANDBOX_INSTAGRAM_DATA_DELETION_URL).
Each defaults to this server's own receiver.

The sandbox sends once and reports what the receiver answered; it does not retry as TikTok does for 72
hours, so that a test or a demo sees the outcome in the control call's answer."""

import base64
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
    headers = {"Content-Type": "application/json", "TikTok-Signature": f"t={now},s={signature.hexdigest()}"}
    return _post(url, content=body, headers=headers)[0]


def _post(url: str, **kwargs) -> tuple[dict, httpx.Response | None]:
    # The platform client's transport: real HTTP, or in tests this app in-process.
    from accounts.platforms.http import platform_http_client

    try:
        with platform_http_client() as http:
            response = http.post(url, **kwargs)
    except httpx.HTTPError as exc:
        return {"url": url, "status": None, "error": type(exc).__name__}, None
    return {"url": url, "status": response.status_code}, response


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def instagram_signed_request(*, user_id: str) -> str:
    """Meta's `signed_request` for that user: base64url(HMAC-SHA256(app secret, encoded payload)), a dot, the
    encoded payload, without padding."""
    payload = _b64url(
        json.dumps({"algorithm": "HMAC-SHA256", "issued_at": int(time.time()), "user_id": user_id}).encode()
    )
    key = settings.LAYERS_INSTAGRAM_CLIENT_SECRET.encode()
    return f"{_b64url(hmac.new(key, payload.encode(), hashlib.sha256).digest())}.{payload}"


def send_instagram_deauthorize(*, user_id: str) -> dict:
    url = settings.LAYERS_SANDBOX_INSTAGRAM_DEAUTHORIZE_URL
    return _post(url, data={"signed_request": instagram_signed_request(user_id=user_id)})[0]


def send_instagram_data_deletion(*, user_id: str) -> dict:
    """Also reports the receiver's JSON answer (`url`, `confirmation_code`), which Meta shows the person."""
    url = settings.LAYERS_SANDBOX_INSTAGRAM_DATA_DELETION_URL
    sent, response = _post(url, data={"signed_request": instagram_signed_request(user_id=user_id)})
    if response is not None and response.status_code == 200:
        try:
            sent["answer"] = response.json()
        except ValueError:
            sent["answer"] = None
    return sent
