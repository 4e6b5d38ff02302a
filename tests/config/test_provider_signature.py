"""The `Layers-Signature` header sent with managed-distribution dispatches: a receiver verifies it as
API.md's webhook scheme says, and refuses a signature whose timestamp is not now (replay protection)."""

import hashlib
import hmac
from datetime import UTC, datetime

import time_machine

from config.signing import signature_header

NOW = datetime(2026, 4, 18, 12, 30, 0, tzinfo=UTC)


def test_the_signature_carries_the_current_time_and_signs_it_with_the_raw_body():
    body = b'{"scheduledPostId":"sp_1"}'
    with time_machine.travel(NOW, tick=False):
        header = signature_header(body, ["provider-shared-secret"])

    t, v1 = (part.split("=", 1)[1] for part in header.split(","))
    assert int(t) == int(NOW.timestamp())  # a receiver allowing 5 min of skew accepts it now, and only now
    expected = hmac.new(b"provider-shared-secret", f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    assert v1 == expected
