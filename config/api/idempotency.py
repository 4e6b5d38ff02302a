"""`Idempotency-Key` on POST: the same key and body within 24 h answer the first response again without
doing the work; the same key with another body (or from another API key) is 409 IDEMPOTENCY_KEY_REUSED.
Keys are scoped to the organization. A key is claimed (row inserted) before the work starts, so two concurrent
requests with one key cannot both do the work; a claim whose request died is taken over after IN_FLIGHT_TIMEOUT.

Every age here is read on one clock, the database's: a claim's created_at is the database's time of its INSERT
(the model's db_default, Now(): STATEMENT_TIMESTAMP() on PostgreSQL, not the transaction's start), and it is
compared with Now() in SQL. A retry reaches any web host, and hosts' clocks drift: compared with the time of a
host 60 s ahead of the one that claimed the key, a request still in flight looked abandoned and ran twice.

A request refused for what it sent (REFUSED_INPUT: 400, 413, 422) is not stored, as Stripe does not store a
request that failed validation: it did nothing, and storing it made the partner's corrected retry with the
same key a 409."""

import hashlib
import json
import re
from datetime import timedelta

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.db.models.functions import Now

from config.api.errors import ApiError, Conflict, Validation
from config.api.parsers import UNSTORABLE, any_string_matches

IN_FLIGHT_TIMEOUT = timedelta(seconds=60)
MAX_KEY_LENGTH = 255
# Printable ASCII (what fits a header unchanged) except the comma. Two `Idempotency-Key` header lines reach
# the application as one value joined by a comma (gunicorn, Django's server and the ASGI handler join
# repeated headers, as RFC 9110 5.3 lets any proxy on the way do): `a` + `b` arrives as `a,b`, and a key
# with a comma of its own cannot be told from it. Refusing the comma is the only way to refuse two keys
# rather than key the request by one the partner never sent; keys are UUIDs or the like in practice.
KEY_PATTERN = re.compile(rf"[ -+\--~]{{1,{MAX_KEY_LENGTH}}}")
KEY_RULE = f"Must be 1 to {MAX_KEY_LENGTH} printable ASCII characters other than a comma."
# Answers about the request's own input, which do no work. Every 422 of the API is raised before the
# operation changes anything (or inside the transaction it rolls back), state-dependent ones included ("this
# account is disconnected", the webhook endpoint cap): so none needs its answer kept to stop the work being done
# twice, and keeping it made the key unusable for the corrected request. A 409 (ACCOUNT_DISCONNECTED, …), 403 or
# 404 is still stored and replayed, as API.md says of any answer: it tells what was there when the request ran.
REFUSED_INPUT = frozenset({400, 413, 422})
SEVERAL_KEYS = (
    "Send one Idempotency-Key header, whose key has no comma: several headers arrive joined by commas, as "
    "one key that was never sent."
)


class Replay(ApiError):
    """Raised to short-circuit the view with the stored first response."""

    def __init__(self, status: int, body):
        super().__init__("replay")
        self.status, self.body = status, body


def fingerprint(request) -> str:
    raw = request._request.body
    try:
        canonical = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, UnicodeDecodeError, RecursionError):
        canonical = raw  # not JSON: the parser answers 400, but the key still identifies these exact bytes
    # The calling API key is part of the request: answers depend on it (oauth-url checks the returnUrl
    # against that key's allowlist), so another key of the organization must never be replayed its answer.
    caller = str(getattr(request.auth, "pk", "")).encode()
    head = request.method.encode() + b" " + request.path.encode() + b" " + caller
    return hashlib.sha256(head + b"\n" + canonical).hexdigest()


def begin(*, organization, key: str, request):
    """Claim `key` for this request, or raise Replay / Conflict. Returns the claimed row."""
    from accounts.models import IdempotencyKey

    if not KEY_PATTERN.fullmatch(key):
        raise Validation({"Idempotency-Key": [SEVERAL_KEYS if "," in key else KEY_RULE]})
    fp = fingerprint(request)
    with transaction.atomic():
        row = (
            IdempotencyKey.objects.select_for_update()
            .filter(organization=organization, key=key)
            # Aged by the database, which wrote created_at (the module's docstring), not by this host's clock.
            .annotate(
                stale=Q(created_at__lt=Now() - settings.LAYERS_IDEMPOTENCY_TTL),
                abandoned=Q(status_code__isnull=True, created_at__lt=Now() - IN_FLIGHT_TIMEOUT),
            )
            .first()
        )
        # A refusal stored by a version before REFUSED_INPUT (or by one still running during a rolling deploy)
        # did no work: read as absent, like a stale or abandoned claim.
        if row is not None and (row.stale or row.abandoned or row.status_code in REFUSED_INPUT):
            row.delete()
            row = None
        if row is not None:
            if row.fingerprint != fp:
                raise Conflict(
                    "This Idempotency-Key was already used with a different request.",
                    code="IDEMPOTENCY_KEY_REUSED",
                )
            if row.status_code is None:
                raise Conflict(
                    "A request with this Idempotency-Key is still being processed; retry shortly.",
                    code="IDEMPOTENCY_KEY_REUSED",
                )
            raise Replay(row.status_code, row.response_body)
        try:
            with transaction.atomic():
                return IdempotencyKey.objects.create(organization=organization, key=key, fingerprint=fp)
        except IntegrityError:
            raise Conflict(
                "A request with this Idempotency-Key is still being processed; retry shortly.",
                code="IDEMPOTENCY_KEY_REUSED",
            )


def finish(row, response) -> None:
    """Store the first response; forget the key (release the claim) when the request did not complete (5xx,
    throttled) or was refused for its input (REFUSED_INPUT), so that the partner can retry it, corrected."""
    from accounts.models import IdempotencyKey

    status = response.status_code
    if status >= 500 or status == 429 or status in REFUSED_INPUT:
        IdempotencyKey.objects.filter(pk=row.pk).delete()
        return
    body = json.loads(json.dumps(response.data, cls=DjangoJSONEncoder))
    if any_string_matches(body, UNSTORABLE):
        # PostgreSQL's jsonb cannot hold a NUL character or a lone surrogate. Only an error can carry one (it
        # echoes what was sent: every input string with one is refused), and an error has no effect to
        # protect: forget the key rather than fail the response.
        IdempotencyKey.objects.filter(pk=row.pk).delete()
        return
    IdempotencyKey.objects.filter(pk=row.pk).update(status_code=status, response_body=body)


def purge_expired() -> int:
    """Delete the records past their window (LAYERS_IDEMPOTENCY_TTL); returns how many. `begin` already treats
    such a record as absent: this only keeps the table from growing with every POST ever made. Aged on the
    database's clock, as `begin` ages them: a worker whose clock is ahead would delete a key still in its window."""
    from accounts.models import IdempotencyKey

    cutoff = Now() - settings.LAYERS_IDEMPOTENCY_TTL
    deleted, _ = IdempotencyKey.objects.filter(created_at__lt=cutoff).delete()
    return deleted
