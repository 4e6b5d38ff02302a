"""State changes of webhooks: endpoints (create, rotate the secret, delete, disable / enable), the fan-out
of committed outbox events into deliveries, and the relay that claims, signs, sends and records them.

Delivery is at least once. A delivery is claimed in a short transaction (status `sending`, a lease, the
attempt number as claim token) by the task that sends it, when it starts, then sent with no transaction
open, and its result recorded in another short transaction — by the claimant only. A relay killed between
sending and recording leaves the claim to expire; the next tick sends again with the same event id and
body, and the partner dedups by event id. The tick only queues sends (deliveries_queue_due): a send still
waiting in a backlogged queue is no attempt, and is not numbered, logged or charged to the backoff."""

import email.utils
import hashlib
import hmac
import ipaddress
import json
import logging
import random
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q, Subquery
from django.utils import timezone

from accounts import callgate, crypto
from accounts.models import Event, Organization
from accounts.services import (
    EVENT_TYPES,
    api_key_source,
    organization_offboarded_at,
    partner_write_refused_if_offboarded,
)
from accounts.webhooks.models import WebhookDelivery, WebhookDeliveryAttempt, WebhookEndpoint, WebhookFanout
from config import ratelimit
from config.api.errors import Conflict, NotFound, RateLimited, Validation
from config.api.fields import datetime_output, json_excerpt
from config.batches import BatchOutcome
from config.marks import attempts_mark, recorded_since
from config.netguard import UnresolvedHost, UnsafeURL, assert_public_url, deadline, public_client
from config.queueing import enqueue_each

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
# Both secrets sign for this long after a rotation, so a partner can deploy the new one without a gap.
ROTATION_OVERLAP = timedelta(hours=24)
# Retries: 1 min after the first failure, ×3 each time, capped at 12 h, ±10 % jitter so that many
# deliveries failing together (a partner outage) do not come back in lockstep; the last attempt is made
# when the window closes, 3 days after the first attempt. Documented for partners in apis.py / README.
RETRY_WINDOW = timedelta(days=3)
FIRST_RETRY_DELAY = timedelta(minutes=1)
RETRY_FACTOR = 3
MAX_RETRY_DELAY = timedelta(hours=12)
RETRY_JITTER = 0.10
# A Retry-After asking for more than this is capped (a receiver cannot park a delivery for days).
MAX_RETRY_AFTER = timedelta(hours=12)
# The on-commit hook normally fans an event out within milliseconds; the periodic sweep leaves it this
# much head start before doing it itself (doing it twice would be harmless, only wasted work).
FANOUT_GRACE = timedelta(seconds=30)
CLAIM_BATCH = 200
USER_AGENT = "Layers-Webhooks/1.0"
# Fairness: every organization's sends share the `webhooks` worker's threads (make run: 4), and an attempt
# may wait LAYERS_WEBHOOK_TIMEOUT (15 s) for its receiver. So at most ENDPOINT_IN_FLIGHT sends to one
# endpoint at once, and LAYERS_WEBHOOK_ORG_IN_FLIGHT to all of one organization's endpoints (less than the
# worker's threads); a send over either is deferred a few seconds (not attempted, no thread held). An
# endpoint that left FAILURES_BEFORE_COOL_OFF attempts in a row without an answer (timeout, connection
# failure, a host name that did not resolve) gets no attempt for COOL_OFF: its deliveries wait, not
# attempted (a change of its URL ends the cool-off: _waiting_sent_now). accounts/callgate.py.
ENDPOINT_IN_FLIGHT = 2
FAILURES_BEFORE_COOL_OFF = 5
COOL_OFF = timedelta(minutes=1)
# And a bounded fan-out: one event makes at most this many deliveries (documented in README / OpenAPI).
MAX_ENDPOINTS_PER_ORGANIZATION = 20
# An endpoint creation's host lookup, one per organization at a time (endpoint_create): how long its mark may
# last (a process that died mid-lookup holds no one out for longer), and when a creation refused meanwhile is
# told to try again.
LOOKUP_HOLD_SECONDS = 60
LOOKUP_RETRY_SECONDS = 5


# --- Endpoints ---------------------------------------------------------------------------------------


def allow_private() -> bool:
    """Whether plain-http and private / loopback destinations are allowed (dev and tests only)."""
    value = getattr(settings, "LAYERS_WEBHOOK_ALLOW_PRIVATE", None)
    return settings.LAYERS_ALLOW_PRIVATE_FETCH if value is None else bool(value)


def _check_destination(url: str) -> None:
    """Raise UnsafeURL unless `url` is somewhere we may POST to. Checked at creation and again before every
    attempt, because what a host name resolves to can change after the endpoint was created."""
    _check_form(url)
    assert_public_url(url, allow_private=allow_private())


def _check_form(url: str) -> str:
    """The part of _check_destination that needs no DNS: raise UnsafeURL unless `url` is an absolute
    https URL (http too where private destinations are allowed) without credentials or fragment. Returns
    its host."""
    private_ok = allow_private()
    # urlsplit silently drops tabs and newlines (WHATWG), so it would check a URL other than the one httpx
    # is then given, which httpx refuses: such a URL is invalid here, not at every attempt.
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise UnsafeURL("the URL must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise UnsafeURL("not a valid URL")
    if parts.scheme != "https" and not (private_ok and parts.scheme == "http"):
        raise UnsafeURL("the URL must use https")
    if not parts.hostname:
        raise UnsafeURL("the URL must be absolute")
    if parts.username is not None or parts.password is not None:
        raise UnsafeURL("credentials in the URL are not allowed; verify the Layers-Signature header instead")
    if parts.fragment:
        raise UnsafeURL("the URL must not have a fragment")
    return parts.hostname


def _refusal_for_partner(host: str) -> str:
    """What a partner is told when `host`'s addresses were refused. An address written in the URL (or
    localhost) is named: that reveals nothing. A name is not: whether it does not resolve or resolves to a
    private address is what our resolver knows about it, and it resolves in our network, where internal
    service names (split-horizon DNS) answer private addresses; telling the two apart would let a partner
    list them one creation at a time."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost" and not host.endswith(".localhost"):
            return "The URL's host must resolve to public addresses only; check its name and DNS records."
    return f"{host} is not a public address."


def _sentence(message: str) -> str:
    # Not str.capitalize(), which lowercases the rest: "The url", a host name re-cased.
    return message[:1].upper() + message[1:] + "."


def _clean_events(events) -> list[str]:
    """The subscribed types in the order given, duplicates dropped; Validation for unknown or none."""
    if not isinstance(events, list | tuple) or not events:
        raise Validation({"events": ["Give at least 1 item."]})
    out: list[str] = []
    for index, type_ in enumerate(events):
        if type_ not in EVENT_TYPES:
            # Worded as the API's own field says it (config.api.fields.PartnerMessages).
            accepted = ", ".join(sorted(EVENT_TYPES))
            raise Validation({f"events.{index}": [f"{json_excerpt(type_)} is not one of: {accepted}."]})
        if type_ not in out:
            out.append(type_)
    return out


def _new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def endpoint_create(*, organization: Organization, url: str, events) -> tuple[WebhookEndpoint, str]:
    """Subscribe `url` to `events` for `organization`. Returns (endpoint, secret): the secret exists in
    plaintext only in this return value. Raises Validation (422) for an unknown or empty event list and for
    a URL that is not https or points at a private, loopback, link-local or metadata address, and
    RateLimited (429) while another lookup of the organization (a creation, a change of URL) runs."""
    events = _clean_events(events)
    url, host = _url_in_form(url)
    _refuse_over_the_cap(organization)  # before the lookup too: an organization at its cap makes none
    _refuse_unless_public(organization, url, host)
    secret = _new_secret()
    with transaction.atomic():
        # Creations of one organization serialize on its row, so concurrent ones cannot pass the cap together;
        # and with its off-boarding (accounts.services.organization_offboard), which marks it under that lock:
        # a creation that passed the key check before the mark (its URL's host resolving, say) is refused as
        # the revoked key it was called with, rather than left live after the off-boarding disabled the rest.
        partner_write_refused_if_offboarded(organization_id=organization.pk)
        _refuse_over_the_cap(organization)
        endpoint = WebhookEndpoint.objects.create(
            organization=organization, url=url, events=events, secret_enc=crypto.encrypt(secret)
        )
    return endpoint, secret


def _url_in_form(url) -> tuple[str, str]:
    """The URL as stored (trimmed) and its host; Validation (422) unless it has the form _check_form asks."""
    url = (url or "").strip()
    try:
        return url, _check_form(url)
    except UnsafeURL as exc:
        raise Validation({"url": [_sentence(str(exc))]})


def _refuse_unless_public(organization: Organization, url: str, host: str) -> None:
    """Look the URL's host up: Validation (422) unless it resolves to public addresses only, RateLimited (429)
    while another lookup of the organization (a creation, a change of URL) runs.

    The host is resolved here, in the web request, and a name whose nameserver never answers holds the
    request's thread for the resolver's whole timeout (not ours to bound): creations of one organization side
    by side took every web thread, and the API stopped answering every partner. One lookup per organization
    at a time; another meanwhile is refused for now."""
    with ratelimit.one_at_a_time("webhook-endpoint-lookup", organization.pk, ttl=LOOKUP_HOLD_SECONDS) as alone:
        if not alone:
            raise RateLimited(
                "Another webhook endpoint URL of your organization is being checked (its host is being looked "
                f"up); retry in {LOOKUP_RETRY_SECONDS} s.",
                retry_after=LOOKUP_RETRY_SECONDS,
            )
        try:
            assert_public_url(url, allow_private=allow_private())
        except UnsafeURL as exc:  # did not resolve, resolves to a non-public address, or not a valid host name
            log.info("webhook endpoint URL of organization %s refused: %s", organization.pk, exc)
            raise Validation({"url": [_refusal_for_partner(host)]})


def _refuse_over_the_cap(organization: Organization) -> None:
    if organization.webhook_endpoints.filter(deleted_at__isnull=True).count() >= MAX_ENDPOINTS_PER_ORGANIZATION:
        message = (
            f"An organization can have at most {MAX_ENDPOINTS_PER_ORGANIZATION} webhook endpoints (disabled "
            "ones included); delete one you no longer use (DELETE /v1/webhook-endpoints/{id}) first."
        )
        raise Validation({"url": [message]}, message=message)


def endpoint_rotate_secret(*, endpoint_id: str) -> tuple[WebhookEndpoint, str]:
    """Give the endpoint a new secret. Returns (endpoint, new secret). The secret it replaces keeps signing
    next to the new one for ROTATION_OVERLAP; a secret replaced earlier than that stops signing now.
    Raises NotFound (404) when the endpoint is deleted, including by a DELETE that committed after the
    view's lookup."""
    now = timezone.now()
    secret = _new_secret()
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.select_for_update().filter(pk=endpoint_id, deleted_at__isnull=True).first()
        if endpoint is None:
            raise NotFound()
        endpoint.previous_secret_enc = endpoint.secret_enc
        endpoint.previous_secret_expires_at = now + ROTATION_OVERLAP
        endpoint.secret_enc = crypto.encrypt(secret)
        endpoint.secret_rotated_at = now
        endpoint.save(
            update_fields=["previous_secret_enc", "previous_secret_expires_at", "secret_enc", "secret_rotated_at"]
        )
    return endpoint, secret


def _cancel_open_deliveries(endpoint_id: str, reason: str) -> int:
    """Stop every delivery of the endpoint that has not finished. An in-flight send may still complete, but
    its result is then discarded (its claim is no longer current)."""
    return WebhookDelivery.objects.filter(
        endpoint_id=endpoint_id, status__in=[WebhookDelivery.Status.PENDING, WebhookDelivery.Status.SENDING]
    ).update(status=WebhookDelivery.Status.CANCELED, lease_until=None, next_attempt_at=None, last_error=reason)


def endpoint_delete(*, endpoint_id: str) -> WebhookEndpoint:
    """Delete the endpoint (the row stays, hidden, for the deliveries' history) and cancel its unfinished
    deliveries. Repeating is a no-op."""
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint_id)
        if endpoint.deleted_at is None:
            endpoint.deleted_at = timezone.now()
            endpoint.save(update_fields=["deleted_at"])
            _cancel_open_deliveries(endpoint.pk, "endpoint deleted")
    return endpoint


def endpoint_disable(*, endpoint_id: str, reason: str, actor=None) -> WebhookEndpoint:
    """Stop delivering to the endpoint (`reason`: "gone" after a 410, "staff" from the admin) and cancel its
    unfinished deliveries. Returns early when it is already disabled."""
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint_id)
        if endpoint.status == WebhookEndpoint.Status.DISABLED:
            return endpoint
        endpoint.status = WebhookEndpoint.Status.DISABLED
        endpoint.disabled_reason = reason
        endpoint.disabled_at = timezone.now()
        endpoint.save(update_fields=["status", "disabled_reason", "disabled_at"])
        canceled = _cancel_open_deliveries(endpoint.pk, f"endpoint disabled ({reason})")
    log.info("webhook endpoint %s disabled (%s) by %s; %d deliveries canceled", endpoint.pk, reason, actor, canceled)
    return endpoint


def endpoint_enable(*, endpoint_id: str, actor=None) -> WebhookEndpoint:
    """Deliver to the endpoint again, from the next event on (canceled deliveries stay canceled; staff can
    resend them one by one): `enabled_at`, which the fan-out compares with each event's time as it compares
    the endpoint's creation. Without it, an event whose fan-out was lost while the organization had no live
    endpoint (the relay tick looks only at organizations with one) was fanned out to the endpoint once
    enabled, up to 3 days late. Staff's admin action and the partner's PATCH (endpoint_update) both enable here.
    Returns early when it is already active. Raises Conflict for a deleted one, and for one of an off-boarded
    organization: the off-boarding disabled it so that nothing more is sent to the
    partner (accounts.services.organization_offboard), and staff enabling it sent its events again."""
    with transaction.atomic():
        # The organization's row before the endpoint's, in the off-boarding's order (it marks the organization,
        # then disables each endpoint): an enable either commits before the mark, and the off-boarding disables
        # the endpoint again, or sees the mark.
        organization_id = WebhookEndpoint.objects.filter(pk=endpoint_id).values_list("organization_id", flat=True).get()
        offboarded_at = organization_offboarded_at(organization_id=organization_id)
        endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint_id)
        if endpoint.deleted_at is not None:
            raise Conflict("A deleted endpoint cannot be enabled.", code="ENDPOINT_DELETED")
        if endpoint.status == WebhookEndpoint.Status.ACTIVE:
            return endpoint
        if offboarded_at is not None:
            raise Conflict(
                f"Its organization was off-boarded on {offboarded_at:%Y-%m-%d %H:%M} UTC: the endpoint stays "
                "disabled, so that nothing more is sent to the partner.",
                code="ORGANIZATION_OFFBOARDED",
            )
        endpoint.status = WebhookEndpoint.Status.ACTIVE
        endpoint.disabled_reason = ""
        endpoint.disabled_at = None
        endpoint.enabled_at = timezone.now()
        endpoint.save(update_fields=["status", "disabled_reason", "disabled_at", "enabled_at"])
    log.info("webhook endpoint %s enabled by %s", endpoint.pk, actor)
    return endpoint


def endpoint_update(
    *,
    endpoint_id: str,
    organization: Organization,
    url: str | None = None,
    events=None,
    enabled: bool | None = None,
    api_key=None,
) -> WebhookEndpoint:
    """The partner's change of its endpoint (PATCH): new `events` and / or `url`, each checked as endpoint_create
    checks it, and `enabled` False to disable it (reason "partner", its unfinished deliveries canceled, as
    endpoint_disable does for staff) or True to enable it again (endpoint_enable, staff's rules: from then on it
    receives the events recorded from that moment, never those recorded while it was off). None leaves that one
    as it is. All or nothing. `api_key`: the partner's key, named in the log lines (the endpoint's history). A new
    `url` sends what waits for a retry there at once, and ends the endpoint's cool-off (_waiting_sent_now).

    Raises Validation (422) for events or a URL the creation refuses and for `enabled` True on an endpoint staff
    disabled (theirs to enable again), RateLimited (429) while another host
    lookup of the organization runs, NotFound (404) for an endpoint deleted (also by a DELETE that committed after
    the view's lookup), and the revoked key's 401 when the organization was off-boarded after the key check (as
    endpoint_create does; the off-boarding disabled the endpoint, and it must stay so)."""
    who = f"partner ({api_key_source(api_key)})"
    if events is not None:
        events = _clean_events(events)
    if url is not None:
        url, host = _url_in_form(url)
        # The same URL again (a client sending the whole object back) is no change: no lookup, no 429. Read
        # without a lock: a concurrent PATCH changing it meanwhile makes this one set a URL the endpoint had, and
        # every attempt checks its destination again anyway (_check_destination).
        current = WebhookEndpoint.objects.filter(pk=endpoint_id).values_list("url", flat=True).first()
        if url != current:
            # Outside the transaction, as at creation: no row lock held while a nameserver takes its time.
            _refuse_unless_public(organization, url, host)
    with transaction.atomic():
        # The organization's row first, then the endpoint's: the off-boarding's order (and endpoint_enable's).
        partner_write_refused_if_offboarded(organization_id=organization.pk)
        endpoint = (
            WebhookEndpoint.objects.select_for_update()
            .filter(pk=endpoint_id, organization=organization, deleted_at__isnull=True)
            .first()
        )
        if endpoint is None:
            raise NotFound()
        # Staff disable an endpoint for a reason of theirs (one aimed at someone else's server, say, or at the
        # partner's request while an incident lasts): the partner's key does not overrule them. Refused before
        # anything is written, so the request changes nothing (all or nothing).
        if enabled is True and endpoint.disabled_reason == WebhookEndpoint.DisabledReason.STAFF:
            raise Validation(
                {"enabled": ["Layers staff disabled this endpoint; ask Layers support to enable it again."]}
            )
        wanted = {"events": events, "url": url}
        changed = [name for name, value in wanted.items() if value is not None and value != getattr(endpoint, name)]
        if changed:
            saved = list(changed)
            if "events" in changed:
                # The list it had until now still decides for the events recorded until now, whose fan-out may
                # not have run yet (WebhookEndpoint.events_at). Those older than the retry window are kept no
                # longer: the relay tick no longer fans out their events.
                now = timezone.now()
                kept = [
                    before
                    for before in endpoint.events_before or ()
                    if datetime.fromisoformat(before["until"]) > now - RETRY_WINDOW
                ]
                endpoint.events_before = [*kept, {"until": now.isoformat(), "events": endpoint.events}]
                saved.append("events_before")
            for name in changed:
                setattr(endpoint, name, wanted[name])
            endpoint.save(update_fields=saved)
            log.info("webhook endpoint %s: %s changed by %s", endpoint.pk, " and ".join(changed), who)
        # The staff services themselves (savepoints of this transaction), so that both follow one set of rules.
        if enabled is True:
            endpoint = endpoint_enable(endpoint_id=endpoint.pk, actor=who)
        elif enabled is False:
            endpoint = endpoint_disable(
                endpoint_id=endpoint.pk, reason=WebhookEndpoint.DisabledReason.PARTNER, actor=who
            )
        if "url" in changed:
            _waiting_sent_now(endpoint)
    return endpoint


def _waiting_sent_now(endpoint: WebhookEndpoint) -> None:
    """The endpoint's URL just changed (endpoint_update, in its transaction, the endpoint locked): its deliveries
    waiting for a retry are made due now, and its failure streak and cool-off end (callgate.forgive). A partner
    fixes a broken URL and expects its backlog to flow; the backoff (up to 12 h) and the cool-off were about the
    old URL, and kept, they parked the deliveries that long. Each keeps its attempt numbers and its window
    (give_up_at, window_first_attempt): a retry made earlier neither extends nor restarts it, and fails again on
    the backoff it had reached. Sends queued and not started, in flight, and finished ones are left as they are.

    A send of the oldest is queued once this commits, as many as the gates take now (_sends_to_start), as a
    fan-out does; each answered send then queues the next (deliveries_queue_waiting), and the relay tick takes
    the rest in any case."""
    now = timezone.now()
    waiting = WebhookDelivery.objects.filter(
        Q(endpoint_id=endpoint.pk, status=WebhookDelivery.Status.PENDING, next_attempt_at__gt=now) & _not_queued(now)
    )
    # Locked in key order first, as a data deletion request and a whole-list resend lock theirs
    # (deliveries_body_rewritten, deliveries_resend): one UPDATE locks them in the plan's order, and could hold one
    # they wait for while waiting for one they hold. Before the gate: callgate's lock order (the caller's rows first).
    rows = list(waiting.select_for_update(of=("self",)).order_by("pk").values_list("pk", "created_at"))
    callgate.forgive(key=endpoint_gate_key(endpoint.pk))
    if not rows or not endpoint.is_live:
        return
    oldest = [pk for pk, _ in sorted(rows, key=lambda row: (row[1], row[0]))[:ENDPOINT_IN_FLIGHT]]
    starting = _sends_to_start(endpoint.organization_id, oldest)
    # Each row written once (deliveries_resend says why: a second write's foreign keys are checked again at commit).
    started = set(starting)
    WebhookDelivery.objects.filter(pk__in=[pk for pk, _ in rows if pk not in started]).update(next_attempt_at=now)
    if starting:
        # Marked queued as the tick marks what it queues: the tick leaves them to these sends for a lease.
        WebhookDelivery.objects.filter(pk__in=starting).update(next_attempt_at=now, queued_at=now)
        transaction.on_commit(lambda: deliveries_send_queued(starting))
    log.info("webhook endpoint %s: %d deliveries waiting for a retry made due at its new URL", endpoint.pk, len(rows))


# --- Fan-out -----------------------------------------------------------------------------------------


def event_body(event: Event) -> str:
    """The JSON a delivery sends: the event as GET /v1/events shows it. Built once per delivery and stored,
    so every attempt sends (and signs) the same bytes."""
    payload = {
        "id": event.pk,
        "type": event.type,
        "createdAt": datetime_output(event.created_at),
        "data": event.data,
    }
    return json.dumps(payload, cls=DjangoJSONEncoder, separators=(",", ":"), ensure_ascii=False)


def deliveries_body_rewritten(*, event_ids: list[str]) -> int:
    """Build again the stored body of every delivery of these events, sent or not, from the events as they are
    stored now (read back: jsonb orders the keys its own way, and GET /v1/events shows them so). For a change of
    an event's `data` made in the caller's transaction (a data deletion request scrubbing the person:
    accounts.services._events_scrubbed). Each attempt reads the body once and signs what it sends (_send): a
    delivery not sent yet sends the new body, whole, never old bytes under a new signature. Returns how many."""
    # Every delivery of them locked first, in key order, as a whole-list resend locks its batch (deliveries_resend):
    # updated event by event, the erasure took them in the events' order, and could hold one the resend waits for
    # while waiting for one it holds: a deadlock, failing Meta's deletion request or the staff member's resend.
    rewritten = 0
    with transaction.atomic():  # the caller's, normally
        list(
            WebhookDelivery.objects.select_for_update().filter(event_id__in=event_ids).order_by("pk").values_list("pk")
        )
        for event in Event.objects.filter(pk__in=event_ids).order_by("pk"):
            rewritten += WebhookDelivery.objects.filter(event_id=event.pk).update(body=event_body(event))
    return rewritten


def _subscribers(event: Event) -> list[WebhookEndpoint]:
    """Live endpoints of the event's organization that subscribed to its type (a partner's change of `events`
    counts for the events recorded after it: events_at), and existed (and, enabled again after being disabled,
    were enabled: endpoint_enable) when it happened."""
    return [
        endpoint
        for endpoint in WebhookEndpoint.objects.filter(
            Q(enabled_at__isnull=True) | Q(enabled_at__lte=event.created_at),
            organization_id=event.organization_id,
            status=WebhookEndpoint.Status.ACTIVE,
            deleted_at__isnull=True,
            created_at__lte=event.created_at,
        )
        # Filtered here rather than with a JSON lookup: `contains` on JSON is not portable to SQLite.
        if event.type in endpoint.events_at(event.created_at)
    ]


def event_fan_out(*, event_id: str, recorded: Event | None = None) -> list[str]:
    """Create one pending delivery, due now, per live endpoint of the event's organization that subscribes
    to its type and existed when the event happened. Safe to call any number of times: the first committed
    call wins (WebhookFanout marker), later ones return []. Returns the ids of the deliveries created and
    queues, after commit, a send of those its organization can take now (_sends_to_start).

    `recorded`: the event as the caller just wrote it (committed). Its organization, type and time decide
    the subscribers without reading the row back; the body is still built from the stored row, so that it
    is byte for byte what GET /v1/events shows (PostgreSQL's jsonb orders keys its own way)."""
    event = recorded or Event.objects.filter(pk=event_id).first()
    if event is None:
        return []
    if not _subscribers(event):
        # The common case (most events have no subscriber): just the marker, in one statement, instead of
        # a transaction, a savepoint and two more round trips. Concurrent calls insert the same marker once.
        # The event is marked after it, in a statement of its own: a worker dying in between leaves an event
        # with a marker and no fanned_out_at, which the tick marks (events_fan_out_missed); never the reverse.
        marker = WebhookFanout(event_id=event_id)
        WebhookFanout.objects.bulk_create([marker], ignore_conflicts=True)
        _mark_fanned_out(event_id, marker.fanned_out_at)
        return []
    with transaction.atomic():
        try:
            with transaction.atomic():
                # Concurrent fan-outs of one event serialize on this primary key; the loser stops here.
                marker = WebhookFanout.objects.create(event_id=event.pk)
        except IntegrityError:
            return []
        # Read (again) and locked until the deliveries commit: a data deletion request scrubbing this event
        # (accounts.services._events_scrubbed, which locks it too) either commits first, and the bodies are built
        # from the scrubbed row, or waits for these deliveries and rewrites them. Read unlocked, a body built
        # from the person's name was inserted after the erasure had rewritten the deliveries it could see. The
        # sequencer placing this event (several rows per statement) waits for these few statements.
        event = Event.objects.select_for_update(no_key=True).filter(pk=event.pk).first()
        if event is None:
            transaction.set_rollback(True)  # purged meanwhile: no marker for it
            return []
        endpoints = _subscribers(event)
        if not endpoints:
            _mark_fanned_out(event.pk, marker.fanned_out_at)
            return []
        body, now = event_body(event), timezone.now()
        WebhookDelivery.objects.bulk_create(
            [WebhookDelivery(endpoint=e, event=event, body=body, next_attempt_at=now) for e in endpoints],
            ignore_conflicts=True,  # a marker removed by hand must not make a second fan-out crash
        )
        ids = list(
            WebhookDelivery.objects.filter(
                event=event, endpoint__in=endpoints, status=WebhookDelivery.Status.PENDING, attempts=0
            ).values_list("pk", flat=True)
        )
        marker.deliveries = len(ids)
        marker.save(update_fields=["deliveries"])
        _mark_fanned_out(event.pk, marker.fanned_out_at)
        sends = _sends_to_start(event.organization_id, ids)
        if sends:
            WebhookDelivery.objects.filter(pk__in=sends).update(queued_at=timezone.now())
            transaction.on_commit(lambda: deliveries_send_queued(sends))
    return ids


def _sends_to_start(organization_id: str, delivery_ids: list[str]) -> list[str]:
    """Which of an event's new deliveries to queue a send of now: none while the organization has a send
    queued and not started yet, otherwise as many as its gates can take (in_flight less its sends in flight,
    of the organization and of each endpoint). The others stay pending and due: each answered send of the
    organization queues its next waiting ones (deliveries_queue_waiting), and the relay tick the rest.

    Queueing every delivery of every event put a burst's whole fan-out on the FIFO webhooks queue (a campaign
    of 5,000 posts to 20 endpoints: 100,000 sends), all but a few deferred when they started, one at a time
    on the organization's gate row, while every other organization's webhooks waited behind them. Read
    without a lock: two fan-outs of one organization at the same moment may both queue, a few sends at most."""
    if not delivery_ids:
        return []
    now = timezone.now()
    queued_not_started = WebhookDelivery.objects.filter(
        endpoint__organization_id=organization_id,
        status=WebhookDelivery.Status.PENDING,
        queued_at__gt=now - settings.LAYERS_WEBHOOK_LEASE,
    )
    if queued_not_started.exists():
        return []
    endpoints = dict(WebhookDelivery.objects.filter(pk__in=delivery_ids).values_list("pk", "endpoint_id"))
    org = _org_limit(organization_id)
    limits = {org.key: org} | {limit.key: limit for limit in (_endpoint_limit(e) for e in set(endpoints.values()))}
    gates = {gate.key: gate for gate in callgate.CallGate.objects.filter(key__in=list(limits))}
    room = {key: callgate.free(gates.get(key), limit, now=now) for key, limit in limits.items()}
    sends = []
    for delivery_id in delivery_ids:
        endpoint_key = endpoint_gate_key(endpoints[delivery_id])
        if room[org.key] <= 0:
            break
        if room[endpoint_key] > 0:
            sends.append(delivery_id)
            room[org.key] -= 1
            room[endpoint_key] -= 1
    return sends


def _mark_fanned_out(event_id: str, at) -> None:
    """Take the event out of the tick's search (Event.fanned_out_at): only once its marker is written."""
    Event.objects.filter(pk=event_id, fanned_out_at__isnull=True).update(fanned_out_at=at)


def events_fan_out_missed(*, limit: int = 500) -> int:
    """Fan out the events whose fan-out never committed (the worker died, the broker was down). Returns how
    many were fanned out.

    The beat runs this every 15 s, mostly to find nothing: the search reads the partial index of the events
    without fanned_out_at (event_org_fanout_pending), which holds the few events whose fan-out has not
    committed, not the table; looking for events without a marker instead read 3 days of events and every
    marker each time. Only the organizations with a live endpoint can have deliveries; events older than the
    retry window are past saving. An event found with its marker was fanned out by a release older than
    fanned_out_at (the previous one during a deploy, or after a rollback) or by a worker that died before
    marking it: it is marked, with its marker's time, and not fanned out again."""
    now = timezone.now()
    org_ids = set(
        WebhookEndpoint.objects.filter(status=WebhookEndpoint.Status.ACTIVE, deleted_at__isnull=True).values_list(
            "organization_id", flat=True
        )
    )
    if not org_ids:
        return 0
    event_ids = list(
        Event.objects.filter(
            organization_id__in=org_ids,
            created_at__gte=now - RETRY_WINDOW,
            created_at__lte=now - FANOUT_GRACE,
            fanned_out_at__isnull=True,
        )
        .order_by("created_at")
        .values_list("pk", flat=True)[:limit]
    )
    if not event_ids:
        return 0
    done = set(WebhookFanout.objects.filter(pk__in=event_ids).values_list("pk", flat=True))
    if done:
        marker_time = Subquery(WebhookFanout.objects.filter(pk=OuterRef("pk")).values("fanned_out_at")[:1])
        Event.objects.filter(pk__in=done, fanned_out_at__isnull=True).update(fanned_out_at=marker_time)
    missed = [event_id for event_id in event_ids if event_id not in done]
    for event_id in missed:
        event_fan_out(event_id=event_id)
    return len(missed)


# --- Relay: claim, send, record ----------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    delivery_id: str
    attempt: int
    # The gates (callgate) the claim holds a slot at, given back once the send is over.
    gates: tuple = ()
    # Whose deliveries get the slots once they are given back (deliveries_queue_waiting).
    organization_id: str = ""


def _not_queued(now) -> Q:
    # Not queued, or queued longer than a lease ago (the broker may have lost the message).
    return Q(queued_at__isnull=True) | Q(queued_at__lte=now - settings.LAYERS_WEBHOOK_LEASE)


def _claimable(now) -> Q:
    # Due pending rows, and rows whose claimant died (lease expired without a recorded result).
    return Q(status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now) | Q(
        status=WebhookDelivery.Status.SENDING, lease_until__lt=now
    )


@dataclass(frozen=True)
class ClosedGates:
    """Endpoints and organizations whose gate refuses a send now (deliveries_closed_gates)."""

    endpoint_ids: frozenset = frozenset()
    organization_ids: frozenset = frozenset()

    def and_organizations(self, organization_ids) -> "ClosedGates":
        """These gates, and `organization_ids` closed too."""
        return ClosedGates(self.endpoint_ids, self.organization_ids | frozenset(organization_ids))

    def open(self) -> Q:
        """Deliveries whose endpoint and organization can take a send now."""
        open_gates = ~Q(endpoint_id__in=self.endpoint_ids) if self.endpoint_ids else Q()
        if self.organization_ids:
            open_gates &= ~Q(endpoint__organization_id__in=self.organization_ids)
        return open_gates


def deliveries_closed_gates(*, now: datetime | None = None, streaks: bool = False) -> ClosedGates:
    """The endpoints in a cool-off or with ENDPOINT_IN_FLIGHT sends in flight, and the organizations with
    LAYERS_WEBHOOK_ORG_IN_FLIGHT in flight: a send queued for them now would only be deferred when it starts
    (_claim_or_defer). With `streaks`, also the endpoints in a failure streak (receivers_holding_back). One
    query, for a whole tick: only gates with a slot or a cool-off (or a streak) are read."""
    now = now or timezone.now()
    endpoint_prefix, org_prefix = endpoint_gate_key(""), org_gate_key("")
    held = ~Q(slots={}) | Q(down_until__gt=now)
    if streaks:
        held |= Q(failures__gte=FAILURES_BEFORE_COOL_OFF)
    gates = callgate.CallGate.objects.filter(
        (Q(key__startswith=endpoint_prefix) | Q(key__startswith=org_prefix)) & held
    )
    endpoints, organizations = set(), set()
    for gate in gates:
        if gate.key.startswith(endpoint_prefix):
            endpoint_id = gate.key.removeprefix(endpoint_prefix)
            streak = streaks and gate.failures >= FAILURES_BEFORE_COOL_OFF
            if streak or callgate.closed(gate, _endpoint_limit(endpoint_id), now=now):
                endpoints.add(endpoint_id)
        else:
            organization_id = gate.key.removeprefix(org_prefix)
            if callgate.closed(gate, _org_limit(organization_id), now=now):
                organizations.add(organization_id)
    return ClosedGates(frozenset(endpoints), frozenset(organizations))


def deliveries_queue_due(*, limit: int | None = None, closed: ClosedGates | None = None) -> list[str]:
    """The ids of up to `limit` (CLAIM_BATCH) deliveries that are due (or whose claimant died), marked queued:
    the tick queues a send (webhook_deliver) for each, which claims the attempt when it starts. Nothing is
    claimed here: a send that waits in a backlogged queue must not count as an attempt, be numbered, run the
    retry window or, once a lease has passed, be taken for a relay that died mid-send.

    A delivery queued less than a lease ago is left out, so that ticks do not pile copies of one send
    into a backlogged queue (each copy but the first would be a no-op); past a lease it is queued again,
    in case the broker lost the message — no later than before, when the tick's claim expired.

    Deliveries whose endpoint or organization gate is `closed` (read once per tick: deliveries_closed_gates)
    are left out: their send would only be deferred when it starts, a no-op every other organization's sends
    wait behind on the FIFO queue, queued again at every tick while the endpoint stayed down or full. They
    stay pending and due, untouched; the first tick after the gate opens queues them."""
    return [pk for pk, _ in deliveries_queue_due_of_organizations(limit=limit, closed=closed)]


def deliveries_queue_due_of_organizations(
    *, limit: int | None = None, closed: ClosedGates | None = None
) -> list[tuple[str, str]]:
    """deliveries_queue_due, each id with its organization's (the tick shares its batches out by them)."""
    now = timezone.now()
    closed = deliveries_closed_gates() if closed is None else closed
    with transaction.atomic():
        # SKIP LOCKED: concurrent ticks take disjoint rows, and neither waits on a claim in progress.
        rows = list(
            WebhookDelivery.objects.filter(_claimable(now) & _not_queued(now) & closed.open())
            .select_for_update(skip_locked=True, of=("self",))
            .order_by("next_attempt_at", "pk")
            .values_list("pk", "endpoint__organization_id")[: limit or CLAIM_BATCH]
        )
        WebhookDelivery.objects.filter(pk__in=[pk for pk, _ in rows]).update(queued_at=now)
    return rows


def deliveries_waiting_to_start(*, now: datetime) -> int:
    """Sends queued and not started yet: deliveries marked queued within the last lease and not claimed since.
    Whoever queues a send marks its delivery queued_at (the tick's deliveries_queue_due_of_organizations, the
    fan-out, deliveries_queue_waiting, a resend), and its claim clears the mark when the send starts (or is
    deferred: _claim_or_defer); a delivery queued longer than a lease ago no longer counts, as the tick queues
    it again (_not_queued). A sending row is queued only once its relay's lease ran out, and counts the same.

    Read on the indexes there were (a BitmapOr of whd_queued, pending rows marked queued, and whd_leased, sending
    rows), no new one: among 1M deliveries with an outage's 200,000 due, 2.7 ms with 2,000 waiting and 10,000
    more marked in earlier leases (still in whd_queued until sent or queued again), 1.6 ms with none."""
    return WebhookDelivery.objects.filter(
        Q(status=WebhookDelivery.Status.PENDING) | Q(status=WebhookDelivery.Status.SENDING),
        queued_at__gt=now - settings.LAYERS_WEBHOOK_LEASE,
    ).count()


def deliveries_queue_room(*, now: datetime | None = None) -> int:
    """How many sends the relay tick may queue now: LAYERS_WEBHOOK_MAX_WAITING less those queued and not started
    (deliveries_waiting_to_start). The gates count sends in progress only: while the webhook workers were down
    (nothing starts) they stayed open, and each lease the tick queued every due delivery again, in case the
    broker had lost its message. 200,000 due deliveries and an hour's outage put about 2.4M messages on the
    `webhooks` queue, and the workers, once back, went through no-op copies before the real sends. Now at most
    the bound waits within a lease: an hour's outage queues about 12 times the bound, whatever the backlog.

    The bound is a setting of its own, not LAYERS_DISPATCH_MAX_WAITING: webhook sends have their own queue and
    workers (LAYERS_WEBHOOK_QUEUE), sized apart from the publishing ones. Its default, one tick's most
    (MAX_BATCHES_PER_TICK batches of CLAIM_BATCH), leaves a relay whose workers keep up as it was. Read without a
    lock: two ticks at once (the beat sends one every 15 s) may pass it by a tick's worth at most."""
    now = now or timezone.now()
    return max(0, settings.LAYERS_WEBHOOK_MAX_WAITING - deliveries_waiting_to_start(now=now))


def deliveries_queue_turn(*, room: int, batches: int) -> int:
    """How many sends of one organization a tick queues (its turn) when it may queue `room` in `batches` batches:
    a batch (CLAIM_BATCH), or less when the room is short, so that the room is shared out by organizations in
    turn. Taken oldest first, a room smaller than a batch (the workers coming back after an outage free a few
    at a time) went to the organization whose backlog was oldest, tick after tick, and another organization's
    delivery due after it waited until that whole backlog had been sent."""
    return min(CLAIM_BATCH, max(1, room // max(1, batches)))


def deliveries_queue_waiting(*, organization_id: str) -> list[str]:
    """Once a send of `organization_id` has given its slots back: that organization's deliveries waiting for
    one — due, or deferred as "busy" until a few seconds from now — up to what its gates can take now, made
    due and marked queued (the caller queues a send of each). Without it a burst to a fast, healthy endpoint
    went out at the relay tick's pace, the gate's few slots per 15 s (500 events: half an hour); with it each
    answered send starts the next, and the burst goes out as fast as the endpoint answers. Deliveries in a
    longer wait (a retry's backoff, a cool-off) keep it."""
    now = timezone.now()
    closed = deliveries_closed_gates()
    if organization_id in closed.organization_ids:
        return []
    waiting = Q(status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now + 1.25 * callgate.BUSY_RETRY)
    with transaction.atomic():
        ids = list(
            WebhookDelivery.objects.filter(waiting & _not_queued(now) & closed.open())
            .filter(endpoint__organization_id=organization_id)
            .select_for_update(skip_locked=True, of=("self",))
            .order_by("next_attempt_at", "pk")
            .values_list("pk", flat=True)[: settings.LAYERS_WEBHOOK_ORG_IN_FLIGHT]
        )
        WebhookDelivery.objects.filter(pk__in=ids, next_attempt_at__gt=now).update(next_attempt_at=now)
        WebhookDelivery.objects.filter(pk__in=ids).update(queued_at=now)
    return ids


def deliveries_unqueue(*, delivery_ids: list[str]) -> None:
    """Forget that these were queued (the broker refused the messages): the next tick queues them again."""
    WebhookDelivery.objects.filter(pk__in=delivery_ids).update(queued_at=None)


def deliveries_send_queued(delivery_ids: list[str]) -> int:
    """Queue a send (webhook_deliver) of each delivery marked queued; how many the broker took. It refuses
    the rest too once it refuses one (enqueue_each): those are unqueued, for the next tick."""
    from accounts.webhooks.tasks import webhook_deliver

    sent = enqueue_each(webhook_deliver, delivery_ids)
    if sent < len(delivery_ids):
        deliveries_unqueue(delivery_ids=delivery_ids[sent:])
    return sent


def endpoint_gate_key(endpoint_id: str) -> str:
    return f"webhook-endpoint:{endpoint_id}"


def org_gate_key(organization_id: str) -> str:
    return f"webhook-org:{organization_id}"


def _endpoint_limit(endpoint_id: str) -> callgate.Limit:
    return callgate.Limit(
        endpoint_gate_key(endpoint_id),
        in_flight=ENDPOINT_IN_FLIGHT,
        failures_to_trip=FAILURES_BEFORE_COOL_OFF,
        cool_off=COOL_OFF,
    )


def _org_limit(organization_id: str) -> callgate.Limit:
    return callgate.Limit(org_gate_key(organization_id), in_flight=settings.LAYERS_WEBHOOK_ORG_IN_FLIGHT)


def _gate_limits(endpoint_id: str, organization_id: str) -> list[callgate.Limit]:
    return [_endpoint_limit(endpoint_id), _org_limit(organization_id)]


def delivery_claim(*, delivery_id: str) -> Claim | None:
    """Claim this delivery if it is due and nobody holds it; None otherwise (deferred included). The task
    that sends it claims it, when it starts (the tick only queues sends: deliveries_queue_due)."""
    claim = _claim_or_defer(delivery_id)
    return claim if isinstance(claim, Claim) else None


def _claim_or_defer(delivery_id: str) -> Claim | str | None:
    """delivery_claim, or "deferred" when its endpoint or organization has its sends in flight already, or
    is in a cool-off (callgate): then the delivery is due again a little later — no attempt counted, its
    retry window neither started nor moved (a delivery deferred past the window's end still gets its last
    attempt, which then fails it if it fails) — and the slot taken here is given back by delivery_deliver."""
    now = timezone.now()
    with transaction.atomic():
        # SKIP LOCKED: a relay already claiming it (an on-commit task and a tick's) makes this one a no-op
        # instead of a wait. The endpoint is read, not locked (endpoint_disable locks it before deliveries).
        row = (
            WebhookDelivery.objects.filter(_claimable(now), pk=delivery_id)
            .select_related("endpoint")
            .select_for_update(skip_locked=True, of=("self",))
            .first()
        )
        if row is None:
            return None
        if row.status == WebhookDelivery.Status.SENDING:
            WebhookDeliveryAttempt.objects.filter(delivery=row, number=row.attempts, finished_at__isnull=True).update(
                finished_at=now, error="no result recorded: the relay stopped mid-attempt; sent again"
            )
        limits = _gate_limits(row.endpoint_id, row.endpoint.organization_id)
        refused = callgate.enter(
            limits=limits,
            holder=row.pk,
            lease=settings.LAYERS_WEBHOOK_LEASE,
            now=now,
        )
        if refused is not None:
            row.status = WebhookDelivery.Status.PENDING
            row.next_attempt_at = refused.retry_at
            row.lease_until = None
            row.queued_at = None  # the next tick queues it once it is due
            row.save(update_fields=["status", "next_attempt_at", "lease_until", "queued_at"])
            return "deferred"
        row.status = WebhookDelivery.Status.SENDING
        row.attempts += 1
        row.lease_until = now + settings.LAYERS_WEBHOOK_LEASE
        row.queued_at = None  # started: whatever the tick queued for it is now a no-op
        row.first_attempt_at = row.first_attempt_at or now
        if row.give_up_at is None:
            # The first attempt of a retry window (the first ever, or the first after a staff resend):
            # the backoff counts from here, Layers-Delivery-Attempt goes on counting every attempt.
            row.give_up_at = now + RETRY_WINDOW
            row.window_first_attempt = row.attempts
        row.last_attempt_at = now
        row.save(
            update_fields=[
                "status",
                "attempts",
                "lease_until",
                "queued_at",
                "first_attempt_at",
                "give_up_at",
                "window_first_attempt",
                "last_attempt_at",
            ]
        )
        WebhookDeliveryAttempt.objects.create(delivery=row, number=row.attempts, started_at=now)
    return Claim(row.pk, row.attempts, tuple(limits), row.endpoint.organization_id)


def retry_delay(attempt: int) -> timedelta:
    """The nominal wait after failed attempt number `attempt` (1-based, of the current retry window),
    before jitter."""
    return min(FIRST_RETRY_DELAY * RETRY_FACTOR ** (attempt - 1), MAX_RETRY_DELAY)


def parse_retry_after(value: str | None, *, now: datetime) -> timedelta | None:
    """Retry-After as delay-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit() also accepts "²", which int() refuses
        return timedelta(seconds=min(int(value), int(MAX_RETRY_AFTER.total_seconds())))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(when - now, timedelta(0))


def next_attempt_time(*, attempt: int, now: datetime, give_up_at: datetime, retry_after: timedelta | None) -> datetime:
    """When to try again after failed attempt `attempt` of the window: the jittered backoff, or later if the receiver
    asked for it with Retry-After (never earlier than either), and never after the window closes."""
    delay = retry_delay(attempt) * random.uniform(1 - RETRY_JITTER, 1 + RETRY_JITTER)  # noqa: S311 - jitter
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    return min(now + delay, give_up_at)


def signature_header(*, secrets_: list[str], timestamp: int, body: bytes) -> str:
    """`t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, one v1 per signing secret."""
    signed = f"{timestamp}.".encode() + body
    parts = [f"t={timestamp}"]
    parts += [f"v1={hmac.new(s.encode(), signed, hashlib.sha256).hexdigest()}" for s in secrets_]
    return ",".join(parts)


def _refuse_inside_a_transaction() -> None:
    if transaction.get_connection().in_atomic_block:
        raise RuntimeError("webhook sends make a network call and must not run inside a transaction")


@dataclass(frozen=True)
class _Result:
    status_code: int | None = None
    error: str = ""
    retry_after: str | None = None


def _post(url: str, *, body: bytes, headers: dict) -> _Result:
    """One POST, no redirects followed (a 3xx is a failure: its Location is never requested), the response
    body never read (a receiver cannot make us download anything), and the whole attempt — connecting,
    sending, the status line and headers — within LAYERS_WEBHOOK_TIMEOUT, or it is a timeout.

    The whole attempt, not each wait (httpx's timeouts): a receiver dripping its answer a byte at a time
    would otherwise hold a worker thread for as long as it liked (the webhook queue's, or one publishing
    shares where LAYERS_WEBHOOK_QUEUE is empty), and past the delivery's lease the next relay tick would
    claim it and send it a second time."""
    timeout = settings.LAYERS_WEBHOOK_TIMEOUT
    try:
        # The client connects only to an address it has just checked (a name can change its answer between
        # _check_destination and now), with no proxy from the environment and no redirect followed.
        with (
            deadline(timeout),
            public_client(allow_private=allow_private(), timeout=timeout) as client,
            client.stream("POST", url, content=body, headers=headers) as response,
        ):
            return _Result(status_code=response.status_code, retry_after=response.headers.get("retry-after"))
    except httpx.TimeoutException as exc:
        return _Result(error=f"timeout ({type(exc).__name__})")
    except (httpx.HTTPError, httpx.InvalidURL) as exc:  # InvalidURL is not an HTTPError: an attempt all the same
        return _Result(error=f"{type(exc).__name__}: {exc}"[:500])


def delivery_send(*, delivery_id: str, attempt: int) -> str:
    """Send claimed attempt `attempt` of the delivery and record its result. Returns the outcome:
    "delivered", "retry", "failed", "gone" (410: endpoint disabled), "canceled" (endpoint no longer live),
    or "skipped" when the claim is not current (already recorded, canceled, or taken over after its lease).

    Never called inside a transaction: the network call must not hold database locks."""
    return _send(delivery_id=delivery_id, attempt=attempt)[0]


def _send(*, delivery_id: str, attempt: int) -> tuple[str, bool | None]:
    """delivery_send, and whether the receiver answered (any HTTP status: True; no answer in time, no
    connection, or its host name did not resolve: False; no request made otherwise: None), which is what the
    endpoint's cool-off counts."""
    _refuse_inside_a_transaction()
    delivery = WebhookDelivery.objects.select_related("endpoint").filter(pk=delivery_id).first()
    if delivery is None or delivery.status != WebhookDelivery.Status.SENDING or delivery.attempts != attempt:
        return "skipped", None
    endpoint = delivery.endpoint
    if not endpoint.is_live:
        return _record(delivery_id, attempt, _Result(error="endpoint no longer active"), cancel=True), None
    now = timezone.now()
    try:
        _check_destination(endpoint.url)
    except UnresolvedHost as exc:
        # No request made, but no answer either: a name server that does not answer held this thread for the
        # resolver's own timeout (5-10 s; no deadline covers the lookup), as a receiver that hangs does, so it
        # counts toward the endpoint's cool-off the same way. The delivery is retried as any refusal is.
        return _record(delivery_id, attempt, _Result(error=f"refused: {exc}")), False
    except UnsafeURL as exc:
        return _record(delivery_id, attempt, _Result(error=f"refused: {exc}")), None
    body = delivery.body.encode()
    timestamp = int(now.timestamp())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Layers-Signature": signature_header(secrets_=endpoint.signing_secrets(now), timestamp=timestamp, body=body),
        "Layers-Event-Id": delivery.event_id,
        "Layers-Delivery-Id": delivery.pk,
        "Layers-Delivery-Attempt": str(attempt),
    }
    result = _post(endpoint.url, body=body, headers=headers)
    return _record(delivery_id, attempt, result), result.status_code is not None


def _record(delivery_id: str, attempt: int, result: _Result, *, cancel: bool = False) -> str:
    now = timezone.now()
    with transaction.atomic():
        delivery = (
            WebhookDelivery.objects.select_for_update()
            .filter(pk=delivery_id, status=WebhookDelivery.Status.SENDING, attempts=attempt)
            .first()
        )
        code = result.status_code
        error = result.error or ("" if code is None or 200 <= code < 300 else f"HTTP {code}")
        if delivery is None:
            # Canceled meanwhile (the endpoint deleted or disabled while the request was in flight): the
            # attempt's answer still goes in its log, which would otherwise show an attempt that never ended.
            # If another relay took over after our lease, it has already closed this attempt: left as it is.
            WebhookDeliveryAttempt.objects.filter(
                delivery_id=delivery_id, number=attempt, finished_at__isnull=True
            ).update(finished_at=now, status_code=code, error=error[:500])
            return "skipped"
        WebhookDeliveryAttempt.objects.filter(delivery=delivery, number=attempt).update(
            finished_at=now, status_code=code, error=error[:500]
        )
        delivery.last_status_code, delivery.last_error = code, error[:500]
        delivery.lease_until = None
        if cancel:
            delivery.status, delivery.next_attempt_at, outcome = WebhookDelivery.Status.CANCELED, None, "canceled"
        elif code is not None and 200 <= code < 300:
            delivery.status, delivery.delivered_at, delivery.next_attempt_at = (
                WebhookDelivery.Status.DELIVERED,
                now,
                None,
            )
            outcome = "delivered"
        elif code == 410:
            delivery.status, delivery.failed_at, delivery.next_attempt_at = WebhookDelivery.Status.FAILED, now, None
            delivery.last_error = "HTTP 410: the endpoint is gone and was disabled"
            outcome = "gone"
        elif now >= delivery.give_up_at:
            delivery.status, delivery.failed_at, delivery.next_attempt_at = WebhookDelivery.Status.FAILED, now, None
            outcome = "failed"
        else:
            delivery.status = WebhookDelivery.Status.PENDING
            delivery.next_attempt_at = next_attempt_time(
                # The backoff of the current window: a staff resend starts again from 1 minute.
                attempt=attempt - delivery.window_first_attempt + 1,
                now=now,
                give_up_at=delivery.give_up_at,
                retry_after=parse_retry_after(result.retry_after, now=now),
            )
            outcome = "retry"
        delivery.save(
            update_fields=[
                "status",
                "last_status_code",
                "last_error",
                "lease_until",
                "next_attempt_at",
                "delivered_at",
                "failed_at",
            ]
        )
    if outcome == "gone":
        # The receiver says the URL is gone for good: stop everything else queued for it too. Done after the
        # delivery's transaction so that locks are always taken endpoint first, then deliveries (no deadlock
        # with a concurrent disable); if we die in between, the next delivery's 410 disables it.
        endpoint_disable(endpoint_id=delivery.endpoint_id, reason=WebhookEndpoint.DisabledReason.GONE)
    if outcome in ("failed", "gone"):
        log.warning("webhook delivery %s %s after %d attempts: %s", delivery_id, outcome, attempt, error)
    return outcome


def delivery_deliver(*, delivery_id: str) -> str:
    """Claim the delivery if it is due and send it (the on-commit path of a fresh delivery or a resend).
    "deferred" when its endpoint or organization has no room now (_claim_or_defer)."""
    _refuse_inside_a_transaction()
    claim = _claim_or_defer(delivery_id)
    if not isinstance(claim, Claim):
        return claim or "skipped"
    answered = None
    try:
        outcome, answered = _send(delivery_id=claim.delivery_id, attempt=claim.attempt)
        return outcome
    finally:
        callgate.leave(limits=list(claim.gates), holder=claim.delivery_id, answered=answered)
        # The slots just given back go to the organization's deliveries waiting for one. Only after an
        # answer: a receiver that answers sets the pace of its burst, one that hangs or refuses connections
        # gets no more than the relay tick sends it (and its cool-off once it trips).
        if answered:
            deliveries_send_queued(deliveries_queue_waiting(organization_id=claim.organization_id))


def delivery_resend(*, delivery_id: str, actor=None) -> WebhookDelivery:
    """Staff: send an undelivered delivery (pending, failed or canceled) again now, with a fresh 3-day retry
    window: its end is cleared here and set by the next claim, which also restarts the backoff from 1
    minute (window_first_attempt); the attempt numbers go on counting. Raises Conflict when it was already
    delivered, when its endpoint is disabled or deleted, while an attempt is in flight, when it is waiting to be
    sent already, or when the delivery is gone (the retention purge).

    A delivered one is refused: resent, it went back into the retry cycle and, if the receiver failed this
    time, ended `failed` with its `delivered_at` still set, a row saying both. The receiver has it (a 2xx);
    a partner who lost it replays it from GET /v1/events."""
    outcome = deliveries_resend(delivery_ids=[delivery_id], actor=actor)
    if delivery_id in outcome.skipped:
        raise outcome.skipped[delivery_id]
    return WebhookDelivery.objects.get(pk=delivery_id)


def delivery_attempts_mark() -> dict:
    """The delivery attempts recorded so far, for deliveries_resend's `attempted_after` (config.marks: ids, which
    only grow whatever the hosts' clocks say, with those not committed yet at the click: a relay claiming a
    delivery as staff click commits its attempt after the click, and it is recorded since)."""
    return attempts_mark(WebhookDeliveryAttempt)


def deliveries_resend(
    *, delivery_ids: list[str], actor=None, attempted_after: dict | int | None = None, send_now: bool = True
) -> BatchOutcome:
    """delivery_resend of many deliveries at once, in one transaction (the admin's resend of a whole list once a
    partner's receiver is back: 200,000 deliveries after a day down), each under its rules; the others left
    with the Conflict delivery_resend raises.

    The sends are paced, not queued one per delivery: with `send_now`, those the organization's gates can take
    now are queued at once, as an event's fan-out queues its deliveries (_sends_to_start); the others are left
    due for the relay, whose tick and answered sends (deliveries_queue_waiting) take them as the receiver
    answers (all of them without `send_now`: the worker doing the rest of a long list). A send per delivery put
    200,000 messages on the webhooks queue, nearly all deferred as soon as they started, ahead of every other
    partner's sends.

    A delivery already pending and due in a window not yet attempted (resent a moment ago, by a colleague
    clicking at the same time or by this action run again) is left alone and said to be waiting: staff are
    told what they did. `attempted_after`: delivery_attempts_mark() when staff chose them; a delivery attempted
    since is left alone too (the worker doing the rest of a long list may run minutes later), its attempt read
    as config.marks says (a plain id, from a task queued before the mark carried more, as it was then)."""
    now = timezone.now()
    outcome = BatchOutcome()
    with transaction.atomic():
        # Endpoints first, then the deliveries, each in key order, as endpoint_delete / endpoint_disable lock (the
        # endpoint, then its open deliveries). Locking the delivery and the endpoint in one query (select_related
        # without `of`) took them the other way round: a resend at the moment the partner deleted the endpoint,
        # or it was disabled, deadlocked and the admin answered 500. Waiting for the endpoint's lock also lets a
        # resend racing a delete or disable see it deleted or disabled, and be refused, rather than report a
        # resend that the delete then cancels.
        endpoint_ids = set(
            WebhookDelivery.objects.filter(pk__in=delivery_ids).values_list("endpoint_id", flat=True).distinct()
        )
        endpoints = {
            endpoint.pk: endpoint
            for endpoint in WebhookEndpoint.objects.select_for_update().filter(pk__in=endpoint_ids).order_by("pk")
        }
        rows = {
            row.pk: row
            for row in WebhookDelivery.objects.select_for_update()
            .filter(pk__in=delivery_ids)
            .order_by("pk")
            .defer("body")
        }
        attempted = set()
        if attempted_after is not None:
            since = WebhookDeliveryAttempt.objects.filter(recorded_since(attempted_after), delivery_id__in=rows)
            attempted = set(since.values_list("delivery_id", flat=True))
        resent = []
        for pk in delivery_ids:
            row = rows.get(pk)
            try:
                _check_resendable(
                    row, endpoint=row and endpoints.get(row.endpoint_id), now=now, attempted=pk in attempted
                )
            except Conflict as refused:
                outcome.skipped[pk] = refused
                continue
            resent.append(row)
        by_organization: dict[str, list[str]] = {}
        for row in resent if send_now else ():
            by_organization.setdefault(endpoints[row.endpoint_id].organization_id, []).append(row.pk)
        starting = [pk for org, ids in by_organization.items() for pk in _sends_to_start(org, ids)]
        # Each row written once: a row updated twice in one transaction has its foreign keys checked again at
        # commit (PostgreSQL checks a row version this transaction made), a share lock on its event that waits
        # for the retention purge holding the event and waiting for this delivery: a deadlock.
        fields = {"status": WebhookDelivery.Status.PENDING, "next_attempt_at": now, "give_up_at": None}
        fields |= {"lease_until": None, "failed_at": None}
        started = set(starting)
        later = [row.pk for row in resent if row.pk not in started]
        WebhookDelivery.objects.filter(pk__in=later).update(**fields, queued_at=None)
        if starting:
            # Marked queued as the tick marks what it queues: the tick leaves them to these sends for a lease.
            WebhookDelivery.objects.filter(pk__in=starting).update(**fields, queued_at=now)
            transaction.on_commit(lambda: deliveries_send_queued(starting))
    outcome.done = [row.pk for row in resent]
    if resent:
        log.info("%d webhook delivery(ies) resent by %s: %s", len(resent), actor, ", ".join(outcome.done[:5]))
    return outcome


def _check_resendable(row: WebhookDelivery | None, *, endpoint: WebhookEndpoint | None, now, attempted: bool) -> None:
    """Raise the Conflict that keeps the delivery `row` (read locked, or None: gone) from being resent."""
    if row is None:  # the retention purge deleted it (with its event) after staff picked it
        raise Conflict("The delivery no longer exists: its event passed the retention.", code="DELIVERY_GONE")
    if row.status == WebhookDelivery.Status.DELIVERED:
        raise Conflict(
            "Already delivered (the receiver answered 2xx); the partner can replay the event from GET /v1/events.",
            code="DELIVERY_ALREADY_DELIVERED",
        )
    if endpoint is None or not endpoint.is_live:
        raise Conflict("The endpoint is disabled or deleted; enable it first.", code="ENDPOINT_NOT_ACTIVE")
    if row.status == WebhookDelivery.Status.SENDING and row.lease_until and row.lease_until > now:
        raise Conflict("An attempt is in flight; try again in a few minutes.", code="DELIVERY_IN_FLIGHT")
    if attempted:
        raise Conflict(
            "It was attempted again after this resend was asked for: look at it again before resending it.",
            code="DELIVERY_CHANGED",
        )
    if row.status == WebhookDelivery.Status.PENDING and row.give_up_at is None and row.next_attempt_at <= now:
        raise Conflict(
            "It is waiting to be sent already (resent a moment ago, or never attempted yet).",
            code="DELIVERY_ALREADY_DUE",
        )


# --- What is late, for ops ("Layers now": scheduling/pipeline_status.py) -----------------------------------

# A delivery (or a fan-out) counts as late once it has waited this long past when the relay should have taken
# it: above the relay tick's 15 s, so that a healthy relay shows none.
LATE_AFTER = timedelta(seconds=60)


def receivers_holding_back(*, now: datetime | None = None) -> ClosedGates:
    """The endpoints and organizations whose own receivers hold their due deliveries back now, by design: a gate
    the relay leaves alone (deliveries_closed_gates: sends in flight up to its limit, a cool-off), and endpoints
    in a failure streak (FAILURES_BEFORE_COOL_OFF attempts without an answer and none answered since: between two
    cool-offs their sends are probes, the rest wait). Their due deliveries are a partner's receiver being slow or
    down, not the relay being behind. One query, on the gates that have a slot, a cool-off or a failure streak."""
    return deliveries_closed_gates(now=now, streaks=True)


def deliveries_late_pending(*, now: datetime) -> Q:
    """Pending deliveries due more than LATE_AFTER ago: sends the relay should have made and has not (no relay
    tick, no `webhooks` worker taking the queue, or a queue backed up). The whd_due partial index's condition
    and column, so that a count reads its late entries only, oldest first."""
    return Q(status=WebhookDelivery.Status.PENDING, next_attempt_at__lt=now - LATE_AFTER)


def deliveries_late_sending(*, now: datetime) -> Q:
    """Deliveries claimed by a relay that died mid-send, whose lease ended more than LATE_AFTER ago: the next
    tick should have sent them again. The whd_leased partial index's condition and column."""
    return Q(status=WebhookDelivery.Status.SENDING, lease_until__lt=now - LATE_AFTER)


def deliveries_sendable(*, held: ClosedGates) -> Q:
    """Deliveries to a live endpoint whose receiver does not hold them back (`held`: receivers_holding_back). A
    disabled or deleted endpoint's deliveries are canceled with it (_cancel_open_deliveries): left out here all
    the same, they are never sent, by design."""
    return Q(endpoint__status=WebhookEndpoint.Status.ACTIVE, endpoint__deleted_at__isnull=True) & held.open()


def events_fan_out_late(*, now: datetime) -> Q:
    """Events whose fan-out has not committed LATE_AFTER after the relay tick's sweep may take them (FANOUT_GRACE),
    among those the sweep looks for (events_fan_out_missed: organizations with a live endpoint, within the retry
    window): their deliveries do not exist yet, so no delivery shows them late. The event_org_fanout_pending
    partial index's condition and columns. The organizations are read first, as the sweep reads them (one small
    query): given as a list, they lead the index's search, and the entries of other organizations are never
    read. As a subquery, the planner read the whole table when those were many (events a release older than
    fanned_out_at left unmarked in an organization without a live endpoint stay in the index): 190 ms at 200k."""
    live = WebhookEndpoint.objects.filter(status=WebhookEndpoint.Status.ACTIVE, deleted_at__isnull=True)
    return Q(
        organization_id__in=set(live.values_list("organization_id", flat=True)),
        created_at__gte=now - RETRY_WINDOW,
        created_at__lt=now - FANOUT_GRACE - LATE_AFTER,
        fanned_out_at__isnull=True,
    )


# --- Retention ---------------------------------------------------------------------------------------

PURGE_BATCH = 2000
# A run of the purge takes batches for at most this long; the next run (hourly, `events-retention`) goes on.
# It runs on the default queue, beside publishing: the first run after a year of events (900,000, about 0.35 s
# a batch) held a worker about 3 to 5 minutes. A batch started before the budget ends may overrun it.
PURGE_RUN_BUDGET = timedelta(seconds=60)


def _expired_events(cutoff):
    # The NOT EXISTS reads the whd_unfinished_event partial index (the few deliveries still to be sent).
    unfinished = WebhookDelivery.objects.filter(
        event=OuterRef("pk"), status__in=[WebhookDelivery.Status.PENDING, WebhookDelivery.Status.SENDING]
    )
    return Event.objects.filter(created_at__lt=cutoff).filter(~Exists(unfinished)).order_by()


def events_purge_expired(*, now=None, batch_size: int = PURGE_BATCH) -> int:
    """Delete the events older than LAYERS_EVENT_RETENTION, with their webhook deliveries and attempts.
    Returns how many events were deleted.

    Every post, connect and renewal writes an event and one delivery per subscribed endpoint. Without this,
    the outbox grows for as long as the service runs. `GET /v1/events` promises recent events; a delivery
    is retried for 3 days only. An event is kept while any of its deliveries is still pending or being
    sent, for example after a staff resend. Each batch is its own short transaction. A run stops taking batches
    once PURGE_RUN_BUDGET is spent: a backlog (the first purge after months of events) is worked off over
    several runs instead of holding a worker of the default queue for minutes."""
    retention = settings.LAYERS_EVENT_RETENTION
    if not retention:
        return 0
    stop_at = time.monotonic() + PURGE_RUN_BUDGET.total_seconds()
    cutoff = (now or timezone.now()) - retention
    deleted = 0
    while True:
        candidates = list(_expired_events(cutoff).values_list("pk", flat=True)[:batch_size])
        if not candidates:
            return deleted
        deleted += _purge_batch(candidates, cutoff)
        if len(candidates) < batch_size or time.monotonic() >= stop_at:
            return deleted


def _purge_batch(candidates: list[str], cutoff) -> int:
    """Delete those of `candidates` that are still expired. The events are locked, oldest first, then their
    deliveries, and the condition is checked again under the locks: a staff resend racing the purge either
    commits first, and the event is kept, or waits and then finds the delivery gone. Events before deliveries,
    as a data deletion request takes them (accounts.services._events_scrubbed): deliveries first, an erasure
    holding one of these events and waiting for its delivery deadlocked with this purge."""
    with transaction.atomic():
        list(Event.objects.select_for_update().filter(pk__in=candidates).order_by("created_at", "pk").values_list("pk"))
        # Deliveries in key order, as a whole-list resend locks its batch (deliveries_resend): read in the
        # plan's order, the purge could hold one the resend waits for while waiting for one the resend holds.
        list(
            WebhookDelivery.objects.select_for_update().filter(event_id__in=candidates).order_by("pk").values_list("pk")
        )
        ids = list(_expired_events(cutoff).filter(pk__in=candidates).values_list("pk", flat=True))
        WebhookDeliveryAttempt.objects.filter(delivery__event_id__in=ids).delete()
        WebhookDelivery.objects.filter(event_id__in=ids).delete()
        Event.objects.filter(pk__in=ids).delete()  # and its WebhookFanout row
    return len(ids)
