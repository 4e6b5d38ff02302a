"""The `Layers-Signature` scheme shared by webhooks and managed-distribution dispatches:
`t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>` (one v1= per valid secret)."""

import hashlib
import hmac
import time


def signature_header(body: bytes, secrets: list[str], *, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    signed = f"{t}.".encode() + body
    parts = [f"t={t}"] + [f"v1={hmac.new(s.encode(), signed, hashlib.sha256).hexdigest()}" for s in secrets]
    return ",".join(parts)
