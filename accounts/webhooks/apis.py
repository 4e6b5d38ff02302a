"""Partner API of webhook endpoints (create, list, get, change, delete, rotate the secret). Thin views: auth →
org-scoped selector → input serializer → one service → output serializer. The partner guide to receiving
webhooks is WEBHOOKS_GUIDE below (it is the OpenAPI description of the create operation; README.md carries a
short version)."""

from datetime import datetime

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from accounts import crypto
from accounts.services import EVENT_TYPES
from accounts.webhooks import selectors, services
from accounts.webhooks.models import WebhookEndpoint
from config.api import idempotency
from config.api.fields import StrictSerializer, TimestampField, datetime_output
from config.api.pagination import paginate
from config.api.schema import IDEMPOTENCY_PARAMETER, errors, list_schema
from config.api.views import ApiView, body_length

TAGS = ["webhooks"]

# What each event type's `data` is: the resource as its GET showed it when the event was recorded (the OpenAPI
# EventOutput.data description says it too; README.md's Webhooks section in its own words).
EVENT_DATA_BY_TYPE = (
    "**What `data` is, by type**: for `social_account.*` the social account as `GET /v1/social-accounts/{id}` "
    "shows it; for `scheduled_post.*` the post as `GET /v1/scheduled-posts/{id}` shows it; for "
    "`lease_request.*` the request as `GET /v1/projects/{projectId}/leased-accounts/requests/{requestId}` shows "
    "it. Leased accounts are announced by `lease_request.assigned` only (their ids are its `socialAccountIds`; "
    "no `social_account.connected` is sent for them); it is recorded with the assignment, before their avatars "
    "are copied, so read each account's `avatarUrl` from `GET /v1/social-accounts/{id}`. Later changes of a "
    "leased account are `social_account.*` events like any other's (`needs_reauth`, `reconnected`, "
    "`disconnected` when it is released)."
)

WEBHOOKS_GUIDE = (
    """
Subscribe an HTTPS URL to event types. Layers POSTs each matching event to it, signed, retried, at least once.

**Request.** `POST <your url>` with the body `{"id": "evt_…", "type": "…", "createdAt": "…", "data": {…}}`
(the event as `GET /v1/events` shows it) and the headers `Content-Type: application/json`,
`Layers-Event-Id` (the event id), `Layers-Delivery-Id` (`whd_…`), `Layers-Delivery-Attempt` (1, 2, …: the
number of this request among all those made for the delivery, still counting up after a resend by Layers
support) and `Layers-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`.

**Verify the signature** on the raw body bytes, before parsing them. During the 24 hours after a secret
rotation the header carries two `v1=` values (new secret, then old): accept the request if any matches.
A retry of this request with its `Idempotency-Key` answers the first response, with the secret issued then:
once you have rotated it (`rotate-secret`), that secret stops signing 24 hours later, so keep the secret the
rotation gave you, not a replayed one.

```python
import hashlib, hmac, time

def verify(raw_body: bytes, header: str | None, secret: str, tolerance: int = 300) -> bool:
    items = [part.split("=", 1) for part in (header or "").split(",") if "=" in part]
    stamps = [v for k, v in items if k == "t"]
    if len(stamps) != 1 or not (stamps[0].isascii() and stamps[0].isdigit()) or len(stamps[0]) > 12:
        return False  # no signature of ours: answer 400, never crash
    t = stamps[0]
    expected = hmac.new(secret.encode(), f"{t}.".encode() + raw_body, hashlib.sha256).hexdigest().encode()
    fresh = abs(time.time() - int(t)) <= tolerance  # every attempt is signed afresh: old t = replay
    return fresh and any(hmac.compare_digest(expected, v.encode()) for k, v in items if k == "v1")
```

The same in Node.js (compare lengths first: `crypto.timingSafeEqual` throws on buffers of different lengths,
and a forged `v1=00` would otherwise take the process down):

```js
const crypto = require("node:crypto");

function verify(rawBody, header, secret, tolerance = 300) {  // rawBody: the Buffer as received
  const items = String(header || "").split(",").filter((p) => p.includes("="))
    .map((p) => [p.slice(0, p.indexOf("=")), p.slice(p.indexOf("=") + 1)]);
  const stamps = items.filter(([k]) => k === "t").map(([, v]) => v);
  if (stamps.length !== 1 || !/^[0-9]{1,12}$/.test(stamps[0])) return false;
  const expected = Buffer.from(crypto.createHmac("sha256", secret)
    .update(Buffer.concat([Buffer.from(`${stamps[0]}.`), rawBody])).digest("hex"));
  const fresh = Math.abs(Date.now() / 1000 - Number(stamps[0])) <= tolerance;
  return fresh && items.some(([k, v]) => k === "v1" && v.length === expected.length
    && crypto.timingSafeEqual(Buffer.from(v), expected));
}
```

**Event data is a snapshot** taken when the event was recorded, never updated afterwards; every delivery of
the event carries the same one. The one exception: an Instagram user's data deletion request (Meta's) blanks
their accounts' `handle` and `displayName` (`""`) and `avatarUrl` (null) in the events already recorded, and in
the deliveries not sent yet (a retry of one sends the blanked body, signed as sent).
`social_account.connected` is recorded as the account is created, before its avatar is copied and its layers are
provisioned, so it always arrives with `avatarUrl: null` and `layers: []`: do not store the avatar from it, read
`GET /v1/social-accounts/{id}` for the account as it is now.

"""
    + EVENT_DATA_BY_TYPE
    + """

**Answer any 2xx** within 15 seconds (do slow work after answering): the status line and headers must be
complete 15 seconds after we start connecting, however steadily they arrive. Anything else — another
status, a redirect, a timeout, a refused connection — is a failed attempt.

**Retries.** A failed attempt is retried with exponential backoff (×3 from 1 minute, capped at 12 hours,
±10 % jitter): about +1 min, +4 min, +13 min, +40 min, +2 h, +6 h, +18 h, +30 h, +42 h, +54 h and +66 h
after the first attempt, and a last one at +72 h; then the delivery is failed (a resend by Layers support
starts a new 3-day window, on the same schedule from +1 min). A `Retry-After` header
(seconds or an HTTP date, honoured up to 12 hours) postpones the next attempt to at least that time.
Changing the endpoint's URL (`PATCH /v1/webhook-endpoints/{id}`) sends the deliveries waiting for a retry to the
new URL at once, within the limits below: each keeps its attempt numbers and its 3-day window.
Missed events stay available from `GET /v1/events` for replay, for 30 days.

**Limits.** An organization has at most 20 endpoints (disabled ones included): creating a 21st is refused
with 422 `VALIDATION` (delete one you no longer use first). Creating an endpoint (or changing its URL) looks the
URL's host up, one lookup of your organization at a time: another sent meanwhile is refused with 429
`RATE_LIMITED` (`Retry-After: 5`). At most 2
requests are in flight to one endpoint at a time, and at most 2 to all of an organization's endpoints
together; a delivery over either is sent as soon as one of them is answered (so a burst goes out at the
pace your endpoint answers), or by the next relay tick (every 15 s) if none is. After 5 attempts in a
row that got no answer (a timeout, no connection, or a host name that did not resolve) the endpoint gets
no request for 1 minute, or until you change its URL; then it is tried again. A delivery held back by these
limits is not an attempt: it keeps its number (`Layers-Delivery-Attempt`) and its 3-day window, which starts at
its first attempt (a delivery held back when its window ends still gets its last attempt).

**At least once.** The same event can arrive more than once (for example when we could not record your
answer); every copy has the same `id` and the same body. Deduplicate on the `id` in the verified body: the
signature covers the body only, not the `Layers-Event-Id`, `Layers-Delivery-Id` or `Layers-Delivery-Attempt`
headers, so a copy of a request with another `Layers-Event-Id` still verifies. Order is not guaranteed: an
event retried after a failed attempt can arrive after a newer event about the same object (a
`social_account.needs_reauth` after the `social_account.reconnected` that followed it). Treat an event as
"this object changed" and read the object as it is now (`GET /v1/social-accounts/{id}`,
`GET /v1/scheduled-posts/{id}`, the lease request), rather than applying the snapshots in the order they
arrive. `createdAt` is when the change began (it can be slightly out of commit order); `GET /v1/events`
lists events in the order they were committed.

**410 Gone disables the endpoint**: it turns `disabled` (`disabledReason: "gone"`), its queued deliveries
stop, and no further event is sent to it; enable it again with `PATCH /v1/webhook-endpoints/{id}`
`{"enabled": true}` once your URL accepts requests (it then receives the events recorded from that moment on).

**No redirects are followed**: a 3xx is a failed attempt and its `Location` is never requested. The URL
must be `https` and resolve to public addresses only (private, loopback, link-local and cloud-metadata
addresses are refused when the endpoint is created or its URL changed, and again before every attempt), with
no credentials in it — authenticate requests with the signature.
"""
)


class EndpointOutput(serializers.Serializer):
    id = serializers.CharField(help_text="we_<32 hex>")
    url = serializers.CharField()
    events = serializers.ListField(child=serializers.ChoiceField(choices=sorted(EVENT_TYPES)))
    status = serializers.ChoiceField(
        choices=WebhookEndpoint.Status.choices, help_text="`disabled`: nothing is delivered (see disabledReason)."
    )
    disabledReason = serializers.SerializerMethodField(
        help_text="`gone` (your URL answered 410), `staff` (disabled by Layers) or `partner` (you disabled it: "
        "PATCH with `enabled: false`); null when active."
    )
    createdAt = TimestampField(source="created_at")
    previousSecretExpiresAt = serializers.SerializerMethodField(
        help_text="After a rotation, until when the previous secret also signs (a second v1=); else null."
    )

    def get_disabledReason(self, endpoint) -> str | None:  # noqa: N802 - the public field name
        return endpoint.disabled_reason or None

    def get_previousSecretExpiresAt(self, endpoint) -> datetime | None:  # noqa: N802 - the public field name
        expires = endpoint.previous_secret_expires_at
        # Once passed, the previous secret signs nothing any more (WebhookEndpoint.signing_secrets): null.
        if not endpoint.previous_secret_enc or expires is None or expires <= timezone.now():
            return None
        return datetime_output(endpoint.previous_secret_expires_at)


class EndpointWithSecretOutput(EndpointOutput):
    secret = serializers.CharField(
        help_text="whsec_…: the signing secret, shown only in this response. Store it; it is never shown again."
    )


class EndpointCreateInput(StrictSerializer):
    url = serializers.CharField(
        max_length=2048,
        help_text="Absolute https URL whose host resolves to public addresses only, with no credentials and no "
        "fragment: a host name that does not resolve, or resolves to a private, loopback, link-local or metadata "
        "address, is refused (422, one message for both).",
    )
    # Declared as what the service accepts (an enum, at least one): a client generated from the document knows
    # both rules, and the messages are every field's (config.api.fields.PartnerMessages).
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=sorted(EVENT_TYPES)),
        min_length=1,
        help_text=f"Non-empty list of event types: {', '.join(sorted(EVENT_TYPES))}. Unknown types → 422.",
    )


class EndpointUpdateInput(StrictSerializer):
    # Each field as the creation declares it, none required, at least one sent (min_fields).
    min_fields = 1

    url = serializers.CharField(
        max_length=2048,
        required=False,
        help_text="A new destination, checked as at creation (absolute https, public addresses only, no "
        "credentials, no fragment; 422 otherwise). A new URL gets the deliveries waiting for a retry at once "
        "(within the in-flight limits; each keeps its attempt numbers and 3-day window), and ends the pause after 5 "
        "unanswered attempts.",
    )
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=sorted(EVENT_TYPES)),
        min_length=1,
        required=False,
        help_text="The new list of event types, replacing the old one (not added to it). Non-empty; unknown "
        "types → 422.",
    )
    enabled = serializers.BooleanField(
        required=False,
        help_text="`false` disables the endpoint (`disabledReason: partner`) and cancels its unfinished "
        "deliveries; `true` enables a disabled one again (disabled by a 410 or by you; one Layers staff disabled "
        "stays so: 422, ask Layers support).",
    )


ENDPOINT_UPDATE = """
Change an endpoint instead of deleting it and creating another (which would have a new id and a new secret to
deploy). Send any of `events`, `url` and `enabled` (at least one; any other field, `{}`, `null` or a value of
another JSON type → 422 `VALIDATION`). The answer is the endpoint as `GET` shows it (never its secret, which
does not change: rotate it with `rotate-secret`). All or nothing: a request with one invalid field changes nothing.

- `events` replaces the subscribed types (the same rules as at creation: non-empty, known types, duplicates
  dropped). Events recorded from then on are sent by the new list; those recorded before go by the old one,
  even if they are sent afterwards.
- `url` is checked as at creation: https, no credentials or fragment, and its host looked up, one lookup of your
  organization at a time (another creation or change of URL meanwhile → 429 `RATE_LIMITED`, `Retry-After: 5`);
  a host that does not resolve or resolves to a private, loopback, link-local or metadata address → 422. Sending
  the URL the endpoint already has looks nothing up (and changes nothing). A new URL gets the deliveries waiting
  for a retry at once, signed with the same secret: as many as the in-flight limits allow (2 at a time), the
  others as it answers or by the next relay tick (every 15 s). Each keeps its attempt numbers
  (`Layers-Delivery-Attempt`) and its 3-day window, which sending it earlier neither extends nor restarts; one that
  fails again waits the backoff its window had reached. A pause after 5 attempts without an answer ends too: it
  was about the old URL. Changing only `events` or `enabled` leaves waiting retries as they were.
- `enabled: false` disables the endpoint (`status: disabled`, `disabledReason: partner`) and cancels its
  unfinished deliveries; nothing more is sent to it. `enabled: true` enables a disabled endpoint again (your
  URL answered 410, or you disabled it): it receives the events recorded from that moment on, never those
  recorded while it was off, nor the deliveries canceled then (replay those from
  `GET /v1/events`). An endpoint Layers staff disabled (`disabledReason: staff`) stays disabled: 422
  `VALIDATION` on `enabled`, and nothing else in the request is changed; ask Layers support. Sending the state
  it is already in changes nothing.

No `Idempotency-Key` (it applies to POST): a PATCH sets values, so sending the same one again leaves the
endpoint as the first did, and answers it as it is then.
"""


def _with_secret(endpoint, secret: str) -> dict:
    return {**EndpointOutput(endpoint).data, "secret": secret}


class DeletedOutput(serializers.Serializer):
    id = serializers.CharField()
    deleted = serializers.BooleanField()


class SecretRevealingApiView(ApiView):
    """A view whose response shows a secret once. An Idempotency-Key replay must show it again, but the
    stored first response must not hold it in plaintext: it is stored encrypted and decrypted on replay."""

    _ENC = "enc:"

    def finalize_response(self, request, response, *args, **kwargs):
        data = getattr(response, "data", None)
        if self._idempotency_row is None or not isinstance(data, dict) or "secret" not in data:
            return super().finalize_response(request, response, *args, **kwargs)
        secret = data["secret"]
        data["secret"] = self._ENC + crypto.encrypt(secret)
        try:
            return super().finalize_response(request, response, *args, **kwargs)
        finally:
            data["secret"] = secret  # rendered after this returns: the partner gets the plaintext

    def handle_exception(self, exc):
        if isinstance(exc, idempotency.Replay) and isinstance(exc.body, dict):
            stored = exc.body.get("secret")
            if isinstance(stored, str) and stored.startswith(self._ENC):
                exc.body = {**exc.body, "secret": crypto.decrypt(stored[len(self._ENC) :])}
        return super().handle_exception(exc)


class EndpointListApi(SecretRevealingApiView):
    @list_schema(
        EndpointOutput,
        "WebhookEndpointPage",
        operation_id="webhook_endpoints_list",
        tags=TAGS,
        description="Your organization's webhook endpoints, newest first (deleted ones are not listed). "
        "Secrets are never listed.",
    )
    def get(self, request):
        qs = selectors.endpoint_list(organization=self.organization)
        return paginate(request, qs, lambda rows: EndpointOutput(rows, many=True).data)

    @extend_schema(
        request=EndpointCreateInput,
        responses={201: EndpointWithSecretOutput, **errors(400, 422)},
        parameters=[IDEMPOTENCY_PARAMETER],
        operation_id="webhook_endpoints_create",
        tags=TAGS,
        summary="Create a webhook endpoint (and how to receive webhooks)",
        description=WEBHOOKS_GUIDE,
    )
    def post(self, request):
        data = EndpointCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        endpoint, secret = services.endpoint_create(
            organization=self.organization, url=data.validated_data["url"], events=data.validated_data["events"]
        )
        return Response(_with_secret(endpoint, secret), status=201)


class EndpointDetailApi(ApiView):
    @extend_schema(
        responses={200: EndpointOutput, **errors()},
        operation_id="webhook_endpoints_get",
        tags=TAGS,
        description="One endpoint of your organization (no secret). A deleted endpoint is 404.",
    )
    def get(self, request, endpointId: str):
        endpoint = selectors.endpoint_get(organization=self.organization, endpoint_id=endpointId)
        return Response(EndpointOutput(endpoint).data)

    @extend_schema(
        request=EndpointUpdateInput,
        responses={200: EndpointOutput, **errors(400, 422)},
        operation_id="webhook_endpoints_update",
        tags=TAGS,
        summary="Change a webhook endpoint's events or URL, or disable / enable it",
        description=ENDPOINT_UPDATE,
    )
    def patch(self, request, endpointId: str):
        endpoint = selectors.endpoint_get(organization=self.organization, endpoint_id=endpointId)
        data = EndpointUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        endpoint = services.endpoint_update(
            endpoint_id=endpoint.pk, organization=self.organization, api_key=request.auth, **data.validated_data
        )
        return Response(EndpointOutput(endpoint).data)

    @extend_schema(
        responses={200: DeletedOutput, **errors()},
        operation_id="webhook_endpoints_delete",
        tags=TAGS,
        description="Delete the endpoint: nothing more is sent to it, including retries already queued. "
        "Afterwards the id answers 404 (a repeated DELETE too).",
    )
    def delete(self, request, endpointId: str):
        endpoint = selectors.endpoint_get(organization=self.organization, endpoint_id=endpointId)
        services.endpoint_delete(endpoint_id=endpoint.pk)
        return Response(DeletedOutput({"id": endpoint.pk, "deleted": True}).data)


class RotateSecretInput(StrictSerializer):
    """No field: the secret is always Layers' own, random (a partner's `secret` must not look accepted)."""


class EndpointRotateSecretApi(SecretRevealingApiView):
    post_takes_body = False

    @extend_schema(
        # Optional, and `{}` if sent: an empty serializer would be left out of the document altogether.
        request={
            "application/json": {
                "type": "object",
                "additionalProperties": False,
                "maxProperties": 0,
                "description": "Optional: send no body, or `{}`. Any field is refused (422); the new secret is "
                "always generated by Layers.",
            }
        },
        responses={200: EndpointWithSecretOutput, **errors(422)},
        parameters=[IDEMPOTENCY_PARAMETER],
        operation_id="webhook_endpoints_rotate_secret",
        tags=TAGS,
        description="Issue a new signing secret, shown only in this response. For the next 24 hours every "
        "request is signed with both the new and the previous secret (`Layers-Signature: t=…,v1=<new>,v1=<old>`), "
        "so you can deploy the new secret without rejecting deliveries; then only the new one signs. Rotating "
        "again within the 24 hours drops the oldest secret at once.",
    )
    def post(self, request, endpointId: str):
        endpoint = selectors.endpoint_get(organization=self.organization, endpoint_id=endpointId)
        if body_length(request):
            # {"secret": "whsec_mine"} was ignored and answered 200 with a random secret: the partner then
            # checked signatures with their own and refused every delivery. Fields are refused as on every POST.
            RotateSecretInput(data=request.data).is_valid(raise_exception=True)
        endpoint, secret = services.endpoint_rotate_secret(endpoint_id=endpoint.pk)
        return Response(_with_secret(endpoint, secret))
