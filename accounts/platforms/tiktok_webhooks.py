"""TikTok's webhooks (PLATFORMS.md): verify the `TikTok-Signature` header and read the event.

TikTok POSTs events to the callback URL registered for the app, signed with the app's client secret:
`TikTok-Signature: t=<unix seconds>,s=<hex HMAC-SHA256(client_secret, "<t>.<raw body>")>`. The body is
`{"client_key", "event", "create_time", "user_openid", "content"}`, where `content` is documented as a
serialized JSON string (PLATFORMS.md shows it as an object: both are accepted). TikTok retries any answer
but a 200 for 72 hours and may deliver an event more than once, so whoever applies an event must be
idempotent."""

import hashlib
import hmac
import math
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings

from accounts.platforms.base import NoticeRejected
from accounts.platforms.decoding import json_loads
from config.api.parsers import UNSTORABLE, any_string_matches

SIGNATURE_HEADER = "TikTok-Signature"
# A signature older (or newer) than this is refused even when it is valid: a captured delivery cannot be
# replayed later. TikTok's own retries are signed anew.
TOLERANCE_SECONDS = 300


class WebhookRejected(NoticeRejected):
    """The delivery is not a valid TikTok event for this app. `code` goes into the error envelope."""


@dataclass(frozen=True)
class WebhookEvent:
    event: str
    user_openid: str
    created_at: datetime
    content: dict


def _signature_parts(header: str | None) -> tuple[int, list[str]]:
    timestamp, signatures = None, []
    for element in (header or "").split(","):
        prefix, _, value = element.strip().partition("=")
        # Anything else is not a signature: str.isdigit() takes other scripts' digits and int() refuses
        # more than 4,300 of them, and compare_digest() raises on non-ASCII (a header may carry Latin-1).
        if prefix == "t" and re.fullmatch(r"[0-9]{1,12}", value):
            timestamp = int(value)
        elif prefix == "s" and re.fullmatch(r"[0-9a-fA-F]{64}", value):
            signatures.append(value.lower())
    if timestamp is None or not signatures:
        raise WebhookRejected("INVALID_SIGNATURE", f"{SIGNATURE_HEADER} must be t=<unix seconds>,s=<hex>.", status=401)
    return timestamp, signatures


def verify(*, body: bytes, header: str | None, now: float | None = None) -> None:
    """Raise WebhookRejected unless `header` signs `body` with the app's client secret, recently."""
    timestamp, signatures = _signature_parts(header)
    secret = settings.LAYERS_TIKTOK_CLIENT_SECRET
    if not secret:
        raise WebhookRejected("NOT_CONFIGURED", "No TikTok client secret is configured.", status=503)
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures):
        raise WebhookRejected("INVALID_SIGNATURE", "The signature does not match the body.", status=401)
    if abs((time.time() if now is None else now) - timestamp) > TOLERANCE_SECONDS:
        raise WebhookRejected(
            "STALE_SIGNATURE", f"The signature's timestamp is more than {TOLERANCE_SECONDS} s away.", status=401
        )


def _json_object(text: bytes | str) -> dict | None:
    try:
        value = json_loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _unix_seconds(value) -> int | None:
    """`create_time` as whole seconds: documented as an integer, also read when it comes as a JSON string of
    digits or a float (a 400 to those was retried by TikTok for 72 hours and the event never applied)."""
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,12}", value):
        return int(value)
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse(*, body: bytes, header: str | None, now: float | None = None) -> WebhookEvent:
    """The verified event. The signature is checked first: nothing of an unsigned body is read."""
    verify(body=body, header=header, now=now)
    payload = _json_object(body)
    if payload is None:
        raise WebhookRejected("MALFORMED_REQUEST", "The body must be a JSON object.")
    if payload.get("client_key") not in (None, settings.LAYERS_TIKTOK_CLIENT_KEY):
        raise WebhookRejected("WRONG_CLIENT", "The event is for another TikTok app.")
    event, open_id, created = payload.get("event"), payload.get("user_openid"), payload.get("create_time")
    if not isinstance(event, str) or not event:
        raise WebhookRejected("MALFORMED_REQUEST", "`event` must be a non-empty string.")
    if not isinstance(open_id, str) or not open_id:
        raise WebhookRejected("MALFORMED_REQUEST", "`user_openid` must be a non-empty string.")
    created = _unix_seconds(created)
    # Bounded so that no integer can overflow the datetime below (year 9999 is 253402300799).
    if created is None or not 0 < created < 253402300800:
        raise WebhookRejected("MALFORMED_REQUEST", "`create_time` must be a Unix time in seconds.")
    content = payload.get("content") or {}
    if isinstance(content, str):
        content = _json_object(content)
    if not isinstance(content, dict):
        raise WebhookRejected("MALFORMED_REQUEST", "`content` must be a JSON object or its serialization.")
    # JSON can write a NUL or half a UTF-16 pair (`\u0000`, `\ud800`): PostgreSQL takes neither, not even in
    # the query that looks the user up, and the latter is no text to log. TikTok sends neither.
    if any_string_matches(payload, UNSTORABLE) or any_string_matches(content, UNSTORABLE):
        raise WebhookRejected("MALFORMED_REQUEST", "The event holds a NUL or a lone UTF-16 surrogate.")
    return WebhookEvent(
        event=event,
        user_openid=open_id,
        created_at=datetime.fromtimestamp(created, tz=UTC),
        content=content,
    )
