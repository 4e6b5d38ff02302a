"""Meta's `signed_request` (Instagram's Deauthorize callback and Data deletion request callback): verify it and
read the user it names.

Meta POSTs a form with one field, `signed_request` = `<base64url(signature)>.<base64url(payload)>` (no padding),
where the signature is HMAC-SHA256 keyed with the app secret over the *encoded* payload string, and the
payload is JSON: `{"algorithm": "HMAC-SHA256", "issued_at": <unix seconds>, "user_id": "<app-scoped id>"}`.

There is no timestamp window, unlike TikTok's webhook: Meta documents none and no retry schedule, so a request
is not refused for its age. What is applied cannot harm a later consent (a binding whose token was stored after
`issued_at` is left alone) and a deletion request seen again is answered from its first answer."""

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from accounts.platforms.base import NoticeRejected
from accounts.platforms.decoding import json_loads
from config.api.parsers import UNSTORABLE, any_string_matches

FIELD = "signed_request"
ALGORITHM = "HMAC-SHA256"
# Meta's requests are a few hundred characters; this bounds the work an unsigned caller can ask for.
MAX_LENGTH = 4096
_PART = re.compile(r"[A-Za-z0-9_-]+={0,2}")
# The longest id PlatformIdentity.platform_user_id stores.
MAX_USER_ID = 128


class SignedRequestRejected(NoticeRejected):
    """Not a valid signed request of this app. `code` goes into the error envelope."""


@dataclass(frozen=True)
class SignedRequest:
    user_id: str
    issued_at: datetime
    # The digest of the signed payload: the same request sent again has the same key.
    key: str


def _malformed(message: str) -> SignedRequestRejected:
    return SignedRequestRejected("MALFORMED_REQUEST", message)


def _decode(part: str) -> bytes:
    stripped = part.rstrip("=")
    try:
        return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except (binascii.Error, ValueError) as exc:  # a length no byte string encodes to
        raise _malformed(f"`{FIELD}` is not base64url.") from exc


def parse(value: str | None, *, secret: str) -> SignedRequest:
    """The verified request. The signature is checked before anything of the payload is read."""
    if not secret:
        raise SignedRequestRejected("NOT_CONFIGURED", "No Instagram app secret is configured.", status=503)
    if not value:
        raise _malformed(f"The form field `{FIELD}` is required.")
    if len(value) > MAX_LENGTH:
        raise _malformed(f"`{FIELD}` is longer than {MAX_LENGTH} characters.")
    encoded_signature, dot, encoded_payload = value.partition(".")
    if not (dot and _PART.fullmatch(encoded_signature) and _PART.fullmatch(encoded_payload)):
        raise _malformed(f"`{FIELD}` must be <base64url signature>.<base64url payload>.")
    signature = _decode(encoded_signature)
    if len(signature) != hashlib.sha256().digest_size:
        raise _malformed(f"The signature of `{FIELD}` is not an HMAC-SHA256 (32 bytes).")
    expected = hmac.new(secret.encode(), encoded_payload.encode("ascii"), hashlib.sha256).digest()
    if not hmac.compare_digest(expected, signature):
        raise SignedRequestRejected("INVALID_SIGNATURE", "The signature does not match the payload.", status=401)
    try:
        payload = json_loads(_decode(encoded_payload).decode("utf-8"))
    except ValueError as exc:  # not UTF-8, not JSON, or nested too deeply (decoding.json_loads)
        raise _malformed("The payload is not UTF-8 JSON.") from exc
    if not isinstance(payload, dict):
        raise _malformed("The payload must be a JSON object.")
    # Signed, but only an HMAC-SHA256 was checked: a payload naming another algorithm was not meant for it.
    algorithm = payload.get("algorithm")
    if not isinstance(algorithm, str) or algorithm.upper() != ALGORITHM:
        raise SignedRequestRejected("UNSUPPORTED_ALGORITHM", f"`algorithm` must be {ALGORITHM}.")
    user_id, issued = payload.get("user_id"), payload.get("issued_at")
    if isinstance(user_id, int) and not isinstance(user_id, bool):
        user_id = str(user_id)
    # A NUL or half a UTF-16 pair reaches no PostgreSQL query; Meta's ids are digits.
    if not isinstance(user_id, str) or not 0 < len(user_id) <= MAX_USER_ID or any_string_matches(user_id, UNSTORABLE):
        raise _malformed(f"`user_id` must be a non-empty string of at most {MAX_USER_ID} characters.")
    # Bounded so that no integer can overflow the datetime below (year 9999 is 253402300799).
    if not isinstance(issued, int) or isinstance(issued, bool) or not 0 < issued < 253402300800:
        raise _malformed("`issued_at` must be a Unix time in seconds.")
    return SignedRequest(
        user_id=user_id,
        issued_at=datetime.fromtimestamp(issued, tz=UTC),
        key=hashlib.sha256(encoded_payload.rstrip("=").encode("ascii")).hexdigest(),
    )
