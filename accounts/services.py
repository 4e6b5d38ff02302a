"""State changes of the accounts app: organizations, projects, API keys, the event outbox, and the
connected-account lifecycle (OAuth connect / reauth, bindings, revoke, token health, post-connect fan-out)."""

import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import zip_longest
from urllib.parse import urlencode, urlsplit, urlunsplit

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, Count, F, Max, Q, QuerySet, Value, When
from django.utils import timezone

from accounts import crypto
from accounts.models import (
    KEY_PREFIX,
    ApiKey,
    DataDeletionRequest,
    Event,
    EventSubjectId,
    OAuthSession,
    OnboardingStep,
    Organization,
    Platform,
    PlatformIdentity,
    Project,
    SocialAccount,
    SocialAccountStatusChange,
    api_key_label,
)
from accounts.platforms.base import PlatformError, Profile, TokenInvalid, TokenSet
from accounts.platforms.scopes import (
    PUBLISHING,
    SCOPES,
    grant_lacks_publishing,
    publishing_scopes_missing,
    stored_scopes,
)
from accounts.selectors import aware_utc
from accounts.serializers import social_account_data
from accounts.token_margin import refresh_due, refresh_due_q
from config.api.errors import ApiError, Conflict, Validation
from config.api.fields import to_the_millisecond
from config.api.ids import is_valid
from config.api.returnurl import check_return_url, normalize_allowlist_entry
from config.batches import BatchOutcome, row_batches
from config.dbreconnect import write_again_after_a_dropped_connection
from config.queueing import enqueue_on_commit
from config.text import shorten

# Writing last_used_at on every request would make every API call a write; a minute is precise enough.
LAST_USED_RESOLUTION = timedelta(minutes=1)

EVENT_TYPES = frozenset(
    {
        "social_account.connected",
        "social_account.needs_reauth",
        "social_account.reconnected",
        "social_account.disconnected",
        "lease_request.assigned",
        "lease_request.rejected",
        "scheduled_post.published",
        "scheduled_post.failed",
    }
)


def organization_create(*, name: str) -> Organization:
    """Create a partner organization, with its wallet at $0.00 (billing.services.wallets_open)."""
    from billing.services import wallets_open

    name = name.strip()
    if not name:
        raise ValueError("An organization needs a name.")
    with transaction.atomic():
        organization = Organization.objects.create(name=name)
        wallets_open([organization.pk])
    return organization


def project_create(*, organization: Organization, name: str) -> Project:
    """Create a project in `organization`."""
    name = name.strip()
    if not name:
        raise ValueError("A project needs a name.")
    return Project.objects.create(organization=organization, name=name)


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def normalize_allowlist(domains) -> list[str]:
    """Normalize and de-duplicate return domains; raises ValueError naming the first bad entry."""
    out: list[str] = []
    for entry in domains:
        try:
            value = normalize_allowlist_entry(str(entry))
        except ValueError as exc:
            raise ValueError(
                f"'{entry}' is not a valid return host ({exc}): write a host, host:port, or an origin such as "
                "https://app.acme.com:8443, with no path."
            )
        if value not in out:
            out.append(value)
    return out


def api_key_issue(*, key: ApiKey) -> str:
    """Give an unsaved key its prefix and hash and save it (api_key_create; the admin's add form). Returns the
    raw key, which is never stored. Raises ValueError for an off-boarded organization (organization_offboard),
    whose row it locks to decide: an off-boarding either commits first and the key is refused, or finds it."""
    key.prefix = secrets.token_hex(6)
    raw = f"{KEY_PREFIX}{key.prefix}_{secrets.token_urlsafe(32)}"
    key.key_hash = _hash(raw)
    with transaction.atomic():
        api_key_issuable_check(organization_id=key.organization_id, lock=True)
        key.save()
    return raw


def api_key_create(*, organization: Organization, return_domains, name: str = "", actor=None) -> tuple[ApiKey, str]:
    """Issue a key. Returns (row, raw key): the raw key exists only in this return value. Raises ValueError
    for an off-boarded organization (api_key_issue)."""
    key = ApiKey(
        organization=organization,
        name=name,
        allowed_return_domains=normalize_allowlist(return_domains),
        created_by=actor,
    )
    return key, api_key_issue(key=key)


def organization_offboarded_at(*, organization_id: str, lock: bool = True) -> datetime | None:
    """When the organization was off-boarded (organization_offboard), or None. `lock`: read under the row lock
    the off-boarding's mark takes (FOR NO KEY UPDATE, which the foreign-key checks of rows inserted for the
    organization do not wait on), so that whatever the caller then adds for it, in its transaction, either
    commits before the mark (and the off-boarding, reading after it, undoes it) or sees the mark."""
    rows = Organization.objects.select_for_update(no_key=True) if lock else Organization.objects
    return rows.filter(pk=organization_id).values_list("offboarded_at", flat=True).first()


def partner_write_refused_if_offboarded(*, organization_id: str) -> None:
    """For a partner's call that adds something for its organization, in the caller's transaction, before the
    write: a call that passed the key check just before the off-boarding revoked its key either commits first
    (the off-boarding, waiting on the organization's row, then reads it and undoes it) or, made after the mark,
    is refused here as the revoked key it was made with (401). Without it, what such a call made outlived the
    off-boarding (a lease request left `requested` for good, an endpoint left live, a connect link). The row
    lock is the only order: the rows' foreign keys to the organization are checked at commit, not at the insert."""
    if organization_offboarded_at(organization_id=organization_id) is not None:
        raise ApiError("Unknown or revoked API key.", code="UNAUTHENTICATED", status=401)


def api_key_issuable_check(*, organization_id: str, lock: bool = False) -> None:
    """Raise ValueError if no key may be issued for the organization: it was off-boarded."""
    offboarded_at = organization_offboarded_at(organization_id=organization_id, lock=lock)
    if offboarded_at is not None:
        raise ValueError(
            f"The organization was off-boarded on {offboarded_at:%Y-%m-%d %H:%M} UTC: no API key can be issued for it."
        )


def api_key_revoke(*, key: ApiKey) -> ApiKey:
    """Revoke a key for good; repeating is a no-op."""
    ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    key.refresh_from_db()
    return key


def api_keys_revoke(*, key_ids: list[str]) -> list[str]:
    """Revoke the keys of `key_ids` (a batch: the admin's revoke of a whole list) in one transaction; the ids of
    those this call revoked, in key order. A key revoked already, or by someone else meanwhile (two staff over
    one list: the second waits for the first's row locks and then finds them revoked), is not among them."""
    with transaction.atomic():
        ids = list(
            ApiKey.objects.select_for_update()
            .filter(pk__in=key_ids, revoked_at__isnull=True)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        ApiKey.objects.filter(pk__in=ids).update(revoked_at=timezone.now())
    return ids


# Every partner request starts by finding its key, so the lookup is one hand-written statement rather than
# `select_related(...).only(...).first()`: the ORM spent more CPU compiling that query than the database took
# to answer it (BENCHMARKS.md, bench_api). Portable SQL (PostgreSQL, and SQLite for `make run`).
_API_KEY_SQL = """
SELECT k.id, k.key_hash, k.last_used_at, k.allowed_return_domains, o.id, o.name
  FROM accounts_apikey k
  JOIN accounts_organization o ON o.id = k.organization_id
 WHERE k.prefix = %s AND k.revoked_at IS NULL
"""


def _loaded(model, **values):
    """An instance as the ORM builds it from a row: the columns not given stay deferred (loaded if touched).
    `from_db` takes the values in the model's field order."""
    fields = [f.attname for f in model._meta.concrete_fields if f.attname in values]
    return model.from_db(connection.alias, fields, [values[name] for name in fields])


def api_key_authenticate(*, raw: str) -> ApiKey | None:
    """The active key matching `raw` (with its organization), or None. Compares hashes in constant time."""
    # Keys are printable ASCII: anything else (a NUL PostgreSQL refuses, Latin-1 from a header) is no key.
    if not raw.startswith(KEY_PREFIX) or not (raw.isascii() and raw.isprintable()):
        return None
    prefix = raw[len(KEY_PREFIX) :].split("_", 1)[0]
    with connection.cursor() as cursor:
        cursor.execute(_API_KEY_SQL, [prefix])
        row = cursor.fetchone()
    if row is None or not hmac.compare_digest(row[1], _hash(raw)):
        return None
    key_id, key_hash, last_used_at, domains, organization_id, organization_name = row
    if isinstance(domains, str):  # jsonb and SQLite's JSON both arrive as text through a plain cursor
        domains = json.loads(domains)
    key = _loaded(
        ApiKey,
        id=key_id,
        organization_id=organization_id,
        prefix=prefix,  # matched by the statement: what logs and the status history name the key by
        key_hash=key_hash,
        last_used_at=aware_utc(last_used_at),
        allowed_return_domains=domains,
    )
    key.organization = _loaded(Organization, id=organization_id, name=organization_name)
    now = timezone.now()
    if key.last_used_at is None or key.last_used_at < now - LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


def api_key_log_label(key: ApiKey) -> str:
    """A key as logs name it: its id and prefix (never the key), and its organization."""
    return f"{api_key_source(key)} of organization {key.organization_id} ({key.organization.name})"


def api_key_refused_label(*, raw: str) -> str:
    """What logs say of a credential api_key_authenticate refused, for support to tell a partner which of its
    keys is refused and why: the key's id, prefix and organization when the prefix is a key's (revoked, or the
    rest of it wrong); only the first characters of an unknown prefix; nothing of anything else. Never the key,
    nor its secret part. Reads the key by its prefix (unique), revoked ones included: only on a refusal."""
    if not raw.startswith(KEY_PREFIX) or not (raw.isascii() and raw.isprintable()):
        return "a credential that is not a Layers API key"
    prefix = raw[len(KEY_PREFIX) :].split("_", 1)[0]
    key = ApiKey.objects.select_related("organization").filter(prefix=prefix).first() if prefix else None
    if key is None:
        return f"unknown prefix {KEY_PREFIX}{prefix[:4]}…"
    return f"{api_key_log_label(key)}, " + ("revoked" if key.revoked_at else "the rest of the key wrong")


def event_record(*, organization_id: str, type: str, data: dict) -> Event:
    """Record an outbox event inside the caller's transaction.

    Must be called inside `transaction.atomic()` together with the change it describes: the event then
    exists exactly when the change does (a rollback takes both). Raises RuntimeError outside a
    transaction and ValueError for a type the contract does not list."""
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type!r}")
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("event_record must run inside the transaction of the change it reports")
    event = Event.objects.create(organization_id=organization_id, type=type, data=data)
    transaction.on_commit(lambda: _after_event_commit(event))
    return event


EVENT_SEQUENCE_BATCH = 1000


def events_sequence(*, organization_id: str) -> int:
    """Give the organization's committed events that have no position yet their positions, oldest first,
    after every position given before; returns how many were placed. GET /v1/events lists by position.

    One sequencer at a time per organization (an advisory lock on PostgreSQL; SQLite's transactions here
    are IMMEDIATE, so writers are serialized anyway). An event whose transaction had not committed when a
    sequencer read is placed by a later one, above every position anyone could see before: a poller that
    reads newest first down to the last event it saw never misses it, however late its transaction commits.
    Every unplaced event is placed, batch after batch: a page must never show old events as the newest
    while newer ones wait unplaced (a backlog of a partner who never polled, or rows older than positions;
    the webhook tick also places them, events_sequence_pending)."""
    placed = 0
    while True:
        batch = _events_sequence_batch(organization_id=organization_id)
        placed += batch
        if batch < EVENT_SEQUENCE_BATCH:
            return placed


def _events_sequence_batch(*, organization_id: str) -> int:
    unplaced = Event.objects.filter(organization_id=organization_id, position__isnull=True)
    if not unplaced.exists():  # the usual case, read on a partial index: no lock, no write
        return 0
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended('layers.event_sequence:' || %s, 0))",
                    [organization_id],
                )
        # Locked here, oldest first, before the UPDATE below locks them in whatever order its plan reads them:
        # a data deletion request locks events oldest first too (_events_scrubbed), and the two, each holding
        # an event the other waited for, deadlocked (Meta's request answered 500, or GET /v1/events).
        pending = list(
            unplaced.order_by("created_at", "id").select_for_update(no_key=True).only("id")[:EVENT_SEQUENCE_BATCH]
        )
        top = Event.objects.filter(organization_id=organization_id).aggregate(top=Max("position"))["top"] or 0
        for offset, event in enumerate(pending, start=1):
            event.position = top + offset
        Event.objects.bulk_update(pending, ["position"])
    return len(pending)


def events_sequence_pending(*, organizations: int = 100) -> int:
    """The webhook tick's part: place the events of up to `organizations` organizations that have unplaced
    ones, so that a partner who never polls has no backlog for its first GET /v1/events to place."""
    pending = (
        Event.objects.filter(position__isnull=True).values_list("organization_id", flat=True).distinct().order_by()
    )
    return sum(events_sequence(organization_id=org) for org in list(pending[:organizations]))


def _after_event_commit(event: Event) -> None:
    """Hook for delivery: the event is fanned out to its webhook deliveries once it is committed.

    From a request, through the broker (side effects stay off the request path). From a Celery task (a
    publish, a token check) the worker fans it out itself: the same work without a message each way
    (bench_publish: 14.7-15.8 → 12.0 ms of worker CPU per post), and no broker needed for it. Either way a
    failure is only logged: the change is committed, and the relay tick fans out every event whose fan-out
    never committed."""
    from celery import current_task

    from accounts.webhooks.services import event_fan_out
    from accounts.webhooks.tasks import webhook_fan_out

    try:
        if current_task:
            # The event as written: no need to read it back to find that nobody subscribes (the common case).
            event_fan_out(event_id=event.pk, recorded=event)
        else:
            webhook_fan_out.delay(event.pk)
    except Exception:  # noqa: BLE001 - the change is committed: never fail it; the relay tick fans out later
        logging.getLogger(__name__).warning("webhook fan-out of %s not done", event.pk, exc_info=True)


# --- Connected accounts: OAuth connect / reauth, bindings, revoke, token health ----------------------

log = logging.getLogger(__name__)


def social_account_status_record(
    *, account: SocialAccount, from_status: str, source: str, reason: str = ""
) -> SocialAccountStatusChange:
    """Append the transition of `account` from `from_status` ("" when it was just created) to its current
    status to its history, inside the caller's transaction: the one making the transition, so that the row
    exists exactly when the change does. `source` says what made it (see the *_source helpers), `reason`
    why (what the platform said; never a token). Raises RuntimeError outside a transaction."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("social_account_status_record must run inside the transaction of the change it records")
    return SocialAccountStatusChange.objects.create(
        social_account_id=account.pk,
        from_status=from_status or "",
        to_status=account.status,
        reason=shorten(reason or "", SocialAccountStatusChange.reason.field.max_length),
        source=source[: SocialAccountStatusChange.source.field.max_length],
    )


def api_key_source(key: ApiKey | None) -> str:
    """An API key as histories and logs name it (accounts.models.api_key_label). The key authentication loads
    has no name: reading it costs a query, on a connect, a revoke or a refused call only."""
    if key is None:
        return "an API key since deleted"
    return api_key_label(key_id=key.pk, name=key.name, prefix=key.prefix)


def staff_source(user) -> str:
    return f"staff {user.get_username()}" if user is not None else "staff (a user since deleted)"


# The failure codes appended to the partner's returnUrl as `layers_oauth_error` (a public contract).
OAUTH_ERRORS = (
    "access_denied",
    "expired",
    "already_used",
    "account_mismatch",
    "token_exchange_failed",
    "platform_error",
)


def oauth_callback_url(platform: str) -> str:
    return f"{settings.LAYERS_OAUTH_CALLBACK_BASE}/{platform}/callback"


def _client(platform: str):
    from accounts.platforms.clients import get_client

    return get_client(platform)


@dataclass(frozen=True)
class AuthorizeLink:
    session: OAuthSession
    authorize_url: str


def oauth_session_start(
    *,
    api_key: ApiKey,
    project: Project,
    platform: str,
    return_url: str,
    usage_note: str = "",
    social_account: SocialAccount | None = None,
    scopes: list[str] | None = None,
) -> AuthorizeLink:
    """Start a connect (or, with `social_account`, a reauth): check the returnUrl against the key's
    allowlist (422 malformed / 403 not listed), store a single-use state valid for
    LAYERS_OAUTH_STATE_TTL, and build the platform's authorize URL.
    Raises Conflict ACCOUNT_DISCONNECTED / ACCOUNT_LEASED for a reauth of such an account, and ApiError 401 once
    the organization is off-boarded (partner_write_refused_if_offboarded)."""
    purpose = OAuthSession.Purpose.CONNECT
    if social_account is not None:
        purpose = OAuthSession.Purpose.REAUTH
        if social_account.status == SocialAccount.Status.DISCONNECTED:
            raise Conflict("This account is disconnected; connect it again instead.", code="ACCOUNT_DISCONNECTED")
        if social_account.kind == SocialAccount.Kind.LEASED:
            raise Conflict(
                "Leased accounts are kept authorized by Layers: when a leased account's token dies, Layers ops "
                "reconnect it from the Layers admin (same account id, social_account.reconnected fires).",
                code="ACCOUNT_LEASED",
            )
    check_return_url(return_url, allowlist=api_key.allowed_return_domains)
    _check_scopes(platform, scopes or [])
    with transaction.atomic():
        # A link written after the off-boarding expired the pending ones was handed out, consented to at the
        # platform, and only then refused (`expired`) by the bind: refused here (401), or expired by it.
        partner_write_refused_if_offboarded(organization_id=project.organization_id)
        session = OAuthSession.objects.create(
            organization_id=project.organization_id,
            project=project,
            api_key=api_key,
            platform=platform,
            purpose=purpose,
            return_url=return_url,
            usage_note=usage_note or "",
            scopes=",".join(scopes or []),
            social_account=social_account,
            expires_at=_state_expiry(),
        )
    return _authorize_link(session, scopes=scopes, usage_note=usage_note)


def _state_expiry():
    """When a new OAuth state ends, to the millisecond: the partner is given it as expiresAt (written to the
    millisecond), and a state kept to the microsecond read `pending` for up to a millisecond after it."""
    return to_the_millisecond(timezone.now() + settings.LAYERS_OAUTH_STATE_TTL)


def _check_scopes(platform: str, scopes: list[str]) -> None:
    """422 on `scopes.<i>` for each scope `platform` does not know (another platform's included): the
    platform would answer the authorize URL with an error page of its own and never send the customer back
    to the returnUrl, leaving the state pending until it expires."""
    known = SCOPES[platform]
    name = Platform(platform).label  # as the platform writes its name: TikTok, Instagram
    named = f"{'an' if name[0] in 'AEIOU' else 'a'} {name}"
    fields = {
        f"scopes.{i}": [f"Not {named} scope; one of: {', '.join(known)}."]
        for i, scope in enumerate(scopes)
        if scope not in known
    }
    if fields:
        raise Validation(fields)
    if scopes and not set(scopes) & PUBLISHING[platform]:
        # The callback refuses a grant without any of them (access_denied): a link asking for none could only
        # end there, after the customer consented for nothing.
        needed = " or ".join(sorted(PUBLISHING[platform]))
        message = f"Must include a publishing scope ({needed}): Layers refuses a grant without one."
        raise Validation({"scopes": [message]})


def _authorize_link(session: OAuthSession, *, scopes: list[str] | None = None, usage_note: str = "") -> AuthorizeLink:
    url = _client(session.platform).authorize_url(
        state=session.state,
        redirect_uri=oauth_callback_url(session.platform),
        scopes=scopes or None,
        usage_note=usage_note,
    )
    return AuthorizeLink(session=session, authorize_url=url)


def oauth_pool_session_start(*, pool_account, staff_user, return_url: str) -> AuthorizeLink:
    """Staff connect a pool account of Layers' own (leasing.services.pool_account_connect_start checks it may
    be): a single-use state like a partner's, valid for LAYERS_OAUTH_STATE_TTL, asking for the platform's
    full default scopes (a leased account must publish, and read metrics). `return_url` is the pool account's
    admin page, where the callback sends staff back, whatever the outcome; the session belongs to no
    organization, so no partner can read it (oauth-status answers 404)."""
    session = OAuthSession.objects.create(
        platform=pool_account.platform,
        purpose=OAuthSession.Purpose.POOL,
        pool_account=pool_account,
        staff_user=staff_user,
        return_url=return_url,
        expires_at=_state_expiry(),
    )
    return _authorize_link(session)


def oauth_sessions_purge_expired(*, now=None) -> int:
    """Delete the OAuth sessions whose state expired more than LAYERS_OAUTH_SESSION_RETENTION ago; returns how
    many. Every oauth-url and reauth-url call stores one, consented to or not, so without this the table grows
    for as long as partners ask for links. Past its expiry a state can no longer complete; kept a while, it
    still answers oauth-status (`completed`, `failed`, `expired`) and the callback's `expired` / `already_used`
    redirect; once deleted it is unknown (404, and the callback's error page). The account a session
    connected is not touched: the session points at the account, never the reverse."""
    retention = settings.LAYERS_OAUTH_SESSION_RETENTION
    if not retention:
        return 0
    cutoff = (now or timezone.now()) - retention
    deleted, _ = OAuthSession.objects.filter(expires_at__lt=cutoff).delete()
    return deleted


def _with_error(return_url: str, code: str) -> str:
    """`return_url` with `layers_oauth_error=<code>` appended, its existing query kept byte for byte (decoding
    and re-encoding it would rewrite `%20` as `+`, `?flag` as `?flag=`, and non-UTF-8 escapes as U+FFFD,
    breaking a signature the partner put in its own URL)."""
    parts = urlsplit(return_url)
    query = "&".join(q for q in (parts.query.rstrip("&"), urlencode({"layers_oauth_error": code})) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


@dataclass(frozen=True)
class CallbackOutcome:
    """Where to send the end-customer: `redirect_url`, or no redirect at all (unknown state → error page).
    A staff pool connect (`pool_account_id` set) goes back to the pool account's admin page, with `message`
    for staff (the error code is not added to that URL)."""

    redirect_url: str | None
    error_code: str | None = None
    account: SocialAccount | None = None
    pool_account_id: str | None = None
    message: str = ""
    # A staff pool connect's callback in a browser that is not its staff member's: refused, nothing done.
    refused: bool = False


# What staff read on the pool account's page when their connect did not go through.
POOL_CONNECT_ERRORS = {
    "access_denied": "Access was not allowed on TikTok's page: nothing was changed.",
    "expired": "This TikTok sign-in link expired: nothing was changed. Press Connect on TikTok again.",
    "already_used": "This TikTok sign-in link was already used: nothing was changed by it. Press Connect on "
    "TikTok again if the account still needs it.",
    "account_mismatch": "account_mismatch: the TikTok user who consented is another TikTok user than this pool "
    "account's; nothing was changed.",
    "token_exchange_failed": "TikTok did not exchange the authorization code (token_exchange_failed): nothing was "
    "changed. Try again.",
    "platform_error": "TikTok or Layers failed while connecting (platform_error): nothing was changed. Try again.",
}


POOL_CONNECT_NOT_YOURS = (
    "This TikTok sign-in was started from the Layers admin, and only the staff member who started it can finish "
    "it, signed in to the admin in this browser. Nothing was changed. If that is you, sign in to the admin and "
    "press Connect on TikTok again."
)


def _started_by(session: OAuthSession, user) -> bool:
    """Whether `user` (the callback request's) is the signed-in, still active staff member who started this
    pool connect, and may still change pool accounts (a permission taken away while TikTok had the browser
    counts). Deleted since (staff_user null), nobody is."""
    return bool(
        user is not None
        and user.is_authenticated
        and user.is_active
        and user.is_staff
        and session.staff_user_id is not None
        and user.pk == session.staff_user_id
        and user.has_perm("leasing.change_poolaccount")
    )


def _outcome(session: OAuthSession, code: str | None = None, *, account=None, message: str = "") -> CallbackOutcome:
    """Where the callback sends the browser back for `session`, with `code` on failure."""
    if session.purpose == OAuthSession.Purpose.POOL:
        return CallbackOutcome(
            redirect_url=session.return_url,
            error_code=code,
            account=account,
            pool_account_id=session.pool_account_id,
            message=message or (POOL_CONNECT_ERRORS.get(code, code) if code else ""),
        )
    return CallbackOutcome(
        redirect_url=_with_error(session.return_url, code) if code else session.return_url,
        error_code=code,
        account=account,
    )


def _session_fail(
    session: OAuthSession, code: str, *, message: str = "", platform_message: str = ""
) -> CallbackOutcome:
    """Fail the state with `code` (what the partner is told), keeping `platform_message` (what the platform
    said, made safe by _platform_text) for the admin."""
    OAuthSession.objects.filter(pk=session.pk).update(
        status=OAuthSession.Status.FAILED,
        error_code=code,
        platform_message=platform_message,
        completed_at=timezone.now(),
    )
    return _outcome(session, code, message=message)


def _session_label(session: OAuthSession) -> str:
    """How the oauth log lines name a session: the short state the admin's OAuth sessions list shows and finds
    it by (the whole state is a bearer secret until used), and whose it is — the organization and project of
    a partner's, the pool account of a staff connect — so that ops can tell one partner's failures from
    every partner's."""
    if session.purpose == OAuthSession.Purpose.POOL:
        return f"{session.short_state} (pool account {session.pool_account_id})"
    return f"{session.short_state} ({session.organization_id} {session.project_id})"


# Bounds of what a platform said, as logged and as kept on the session.
PLATFORM_CODE_LENGTH = 64
PLATFORM_MESSAGE_LENGTH = 300


def _platform_text(text, *, limit: int = PLATFORM_MESSAGE_LENGTH, secrets: tuple[str | None, ...] = ()) -> str:
    """What a platform said (the error its redirect carried, its refusal's code or message) made safe to log and
    keep: `secrets` (the code and state the callback carried) and any credential parameter or OAuth state
    blanked (some platforms echo the request back in their descriptions), every character that is not
    printable (a line break would forge a log line) made a space, and cut to `limit` — after the blanking, so
    that no cut leaves part of a secret behind."""
    from accounts.platforms.http import blank_secrets
    from config.logfilters import redact_secrets

    text = redact_secrets(blank_secrets(str(text or ""), *secrets))
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    return shorten(text, limit)


def oauth_callback(
    *,
    platform: str,
    state: str | None,
    code: str | None,
    error: str | None,
    error_reason: str | None = None,
    error_description: str | None = None,
    user=None,
) -> CallbackOutcome:
    """Complete the authorization the platform redirected back with.

    The state is claimed (pending → exchanging) under a row lock before the platform is called, so a
    replayed or concurrent callback answers `already_used` and never creates a second account; the code
    exchange and profile fetch run outside any transaction.

    A partner's state is a bearer secret by design (the end-customer is nobody we know). A staff pool connect
    is not: its authorize URL may leak (a screenshot, a chat), and whoever consented through it would become a
    Layers pool account, leased to partners. So its callback must come from the browser of the staff member
    who started it (`user`, the request's signed-in user); any other is refused before anything else — not
    even `already_used` or `expired` is told — without exchanging the code, and the state is left pending:
    failing it would let anyone holding the link cancel ops' connect, and the staff member can still finish
    it in their own browser until it expires."""
    if not state or not is_valid("st", state):
        return CallbackOutcome(redirect_url=None)
    waited = _callback_underway_waited(state=state, platform=platform)
    with transaction.atomic():
        session = OAuthSession.objects.select_for_update().filter(state=state).first()
        if session is None or session.platform != platform:
            # A state minted for the other platform is treated as unknown: no redirect anywhere.
            return CallbackOutcome(redirect_url=None)
        if session.purpose == OAuthSession.Purpose.POOL and not _started_by(session, user):
            log.warning(
                "oauth %s: pool connect callback refused: not the browser of the staff member who started it",
                _session_label(session),
            )
            return CallbackOutcome(redirect_url=None, refused=True, message=POOL_CONNECT_NOT_YOURS)
        if session.status != OAuthSession.Status.PENDING:
            if waited and session.status in (OAuthSession.Status.COMPLETED, OAuthSession.Status.FAILED):
                # This callback arrived while another was exchanging the code (a reload, a second tap), and
                # the browser shows only this one's answer: where the other sent it, not already_used.
                return _outcome(session, session.error_code or None, account=session.social_account)
            return _outcome(session, "already_used")
        if timezone.now() >= session.expires_at:
            # Left pending: oauth-status reports `expired`, as the contract says.
            return _outcome(session, "expired")
        if error == "access_denied":
            return _session_fail(session, "access_denied")
        if error or not code:
            return _platform_failed_the_redirect(
                session, error=error, reason=error_reason, description=error_description, code=code
            )
        if session.purpose == OAuthSession.Purpose.REAUTH and not _reauth_target_live(session):
            # The partner disconnected the account after making this link (DELETE): a reauth can no longer
            # bring it back (connecting again mints a new id), so the link is spent. Checked before the code
            # is exchanged: exchanging it would authorize the app again at the platform for a user the partner
            # has just revoked. API.md's fixed codes have none for this: `already_used` (there: "state was
            # already completed or failed") is the nearest — the link is spent — and README and the OpenAPI
            # text say it also means this; platform_error would send the partner looking for an outage.
            return _session_fail(session, "already_used")
        session.status = OAuthSession.Status.EXCHANGING
        session.exchange_started_at = timezone.now()
        session.save(update_fields=["status", "exchange_started_at"])

    try:
        return _exchange_and_bind(session=session, platform=platform, code=code)
    except Exception:
        # Not a platform's refusal (handled inside): the database dropping the connection while binding, an
        # answer the client cannot read (an odd expires_in), a bug. The customer did consent: send them back
        # with platform_error rather than our 500 page, and fail the state, or it would stay exchanging
        # (pending, then failed only after OAuthSession.EXCHANGE_DEADLINE) while retries answer already_used.
        # The traceback names no token: the clients redact theirs, and the database sees them encrypted.
        log.exception("oauth %s: callback failed after the state was claimed", _session_label(session))
        return _claimed_session_crashed(session)


# How long a callback waits for another callback of its state that is exchanging the code (a customer's reload
# or second tap) before answering already_used as it did before. The exchange usually takes a second or two; at
# most the web request's platform deadline (web_request_deadline, from LAYERS_PLATFORM_TIMEOUT), which keeps the
# waiting request, too, within gunicorn's graceful_timeout. The callback's rate limit bounds how many wait at once.
CALLBACK_UNDERWAY_WAIT_SECONDS = 30
CALLBACK_UNDERWAY_POLL_SECONDS = 0.2


def _callback_underway_waited(*, state: str, platform: str) -> bool:
    """Whether another callback of `state` was exchanging its code when this one arrived; if so, return once
    it has finished (or CALLBACK_UNDERWAY_WAIT_SECONDS have passed). The browser shows only the last
    navigation's answer: a customer who reloads the slow page, or taps Authorize twice, was sent to the
    partner with already_used while their account connected a moment later — API.md's already_used is a
    state "already completed or failed", and it was neither yet. Read without a lock, and never held across
    the other's work (its own writes take the row's lock). A claim between this read and the caller's lock
    still answers already_used. Not for a staff pool connect: its callback refuses any other browser first."""
    from accounts.platforms.http import web_request_deadline

    deadline = time.monotonic() + min(CALLBACK_UNDERWAY_WAIT_SECONDS, web_request_deadline())
    underway = OAuthSession.objects.filter(state=state, platform=platform, status=OAuthSession.Status.EXCHANGING)
    underway = underway.exclude(purpose=OAuthSession.Purpose.POOL)
    waited = False
    while underway.exists():
        waited = True
        if time.monotonic() >= deadline:
            break
        time.sleep(CALLBACK_UNDERWAY_POLL_SECONDS)
    return waited


def _platform_failed_the_redirect(
    session: OAuthSession, *, error: str | None, reason: str | None, description: str | None, code: str | None
) -> CallbackOutcome:
    """The platform sent the customer back with an error other than their refusal (TikTok's
    `unauthorized_client`, `invalid_scope`, a redirect_uri not registered: the app's setup, which fails every
    connect alike until ops fix it), or with neither a code nor an error. The partner is told `platform_error`
    (API.md's codes); what the platform said — its error, Instagram's `error_reason` beside it (the narrower
    cause), its description — is logged and kept on the session for the admin, blanked of the code and state
    the redirect carried and of anything echoed with them."""
    said = _platform_text(error, limit=PLATFORM_CODE_LENGTH, secrets=(code, session.pk)) or "no code and no error"
    because = _platform_text(reason, limit=PLATFORM_CODE_LENGTH, secrets=(code, session.pk))
    if because:
        said = f"{said} ({because})"
    described = _platform_text(description, secrets=(code, session.pk))
    log.warning(
        "oauth %s: the platform sent the customer back with %s%s",
        _session_label(session),
        said,
        f": {described}" if described else "",
    )
    return _session_fail(session, "platform_error", platform_message=f"{said}: {described}" if described else said)


def _refusal(exc: PlatformError, *, secrets: tuple[str | None, ...] = ()) -> str:
    """A platform's refusal as a log line names it: its kind and the platform's own code (TikTok's
    `invalid_client` — Layers' client secret is wrong, every connect fails — and `invalid_grant` — this
    customer's code — are both a RequestRejected)."""
    code = _platform_text(exc.code, limit=PLATFORM_CODE_LENGTH, secrets=secrets)
    return f"{type(exc).__name__}: {code}" if code else type(exc).__name__


def _exchange_and_bind(*, session: OAuthSession, platform: str, code: str) -> CallbackOutcome:
    client = _client(platform)
    try:
        tokens = client.exchange_code(code=code, redirect_uri=oauth_callback_url(platform))
    except PlatformError as exc:
        log.warning("oauth %s: code exchange failed (%s)", _session_label(session), _refusal(exc, secrets=(code,)))
        return _session_fail(
            session, "token_exchange_failed", platform_message=_platform_text(str(exc), secrets=(code, session.pk))
        )
    outcome = _bind_grant(session=session, client=client, tokens=tokens)
    if outcome.error_code:
        # Refused with the state failed and committed: the tokens just issued are stored nowhere.
        _withdraw_unbound_grant(session=session, tokens=tokens)
    return outcome


def _bind_grant(*, session: OAuthSession, client, tokens: TokenSet) -> CallbackOutcome:
    """Bind the grant the code was exchanged for, as the session's purpose says, or fail the state."""
    try:
        profile = client.get_profile(access_token=tokens.access_token, scopes=tokens.scopes)
    except PlatformError as exc:
        secrets = (tokens.access_token, tokens.refresh_token)
        log.warning("oauth %s: profile fetch failed (%s)", _session_label(session), _refusal(exc, secrets=secrets))
        return _session_fail(session, "platform_error", platform_message=_platform_text(str(exc), secrets=secrets))

    if session.purpose == OAuthSession.Purpose.REAUTH:
        return _reauth_complete(session=session, tokens=tokens, profile=profile)
    if grant_lacks_publishing(session.platform, tokens.scopes) or (
        session.purpose == OAuthSession.Purpose.POOL and publishing_scopes_missing(session.platform, tokens.scopes)
    ):
        return _refuse_without_publishing(session, tokens.scopes)
    if session.purpose == OAuthSession.Purpose.POOL:
        return _pool_connect_complete(session=session, tokens=tokens, profile=profile)
    try:
        account = social_account_bind(session=session, tokens=tokens, profile=profile)
    except OrganizationOffboarded:
        # Off-boarded while this callback exchanged the code: its link is expired (organization_offboard), and
        # the grant is withdrawn by the caller, bound to nothing.
        return _session_fail(session, "expired")
    return CallbackOutcome(redirect_url=session.return_url, account=account)


def _reauth_target_live(session: OAuthSession) -> bool:
    return (
        SocialAccount.objects.filter(pk=session.social_account_id)
        .exclude(status=SocialAccount.Status.DISCONNECTED)
        .exists()
    )


def _refuse_without_publishing(session: OAuthSession, granted) -> CallbackOutcome:
    """The platform reported the scopes it granted, and none lets Layers post (grant_lacks_publishing): the
    customer unticked the publishing permission on the consent page. Binding the grant would make an account
    every post of which fails (CREDENTIAL_INVALID, then reauth_required), so the state fails with
    `access_denied` — the customer declined a permission the service needs — and nothing is bound. A pool
    connect needs every publishing scope (publishing_scopes_missing): partners lease the account to post in
    both modes, and the one a grant lacked failed their posts after ops were told it was fixed."""
    log.info("oauth %s: granted without the publishing scopes; refused", _session_label(session))
    message = ""
    if session.purpose == OAuthSession.Purpose.POOL:
        needed = " and ".join(publishing_scopes_missing(session.platform, granted))
        message = (
            f"TikTok granted the connect without the publishing permission ({needed} unticked): a pool account "
            "must post, so nothing was changed. Connect on TikTok again and leave them ticked."
        )
    return _session_fail(session, "access_denied", message=message)


def _withdraw_unbound_grant(*, session: OAuthSession, tokens: TokenSet) -> None:
    """A grant the callback obtained but bound to nothing (refused for its scopes, a reauth consented as
    another user or whose account was disconnected meanwhile, a refused pool connect, a profile the platform
    would not give) is withdrawn at the platform: the customer was told it failed, and the app must not stay
    authorized for them with tokens nobody holds. Unless the same platform user is still held by a live
    binding (any project or organization, the reauth's own account included) or by the pool: the platform's
    revoke withdraws the whole user's grant and would kill those (_revoke_grant_unless_shared). Best-effort,
    after the state's failure is committed: whatever goes wrong is logged, and the customer still lands with
    the code the refusal chose."""
    try:
        _revoke_grant_unless_shared(
            account_id=None, platform=session.platform, platform_user_id=tokens.platform_user_id, tokens=tokens
        )
    except Exception:
        log.exception("oauth %s: withdrawing the unbound grant failed", _session_label(session))


def _claimed_session_crashed(session: OAuthSession) -> CallbackOutcome:
    """Where to send the customer after an unexpected error past the claim. A state the work completed
    before the error (committed) stays completed and the customer lands as on success; otherwise the state
    fails with platform_error. Recording that may fail too (the database is down): the customer is still
    sent back with the code, and the state reads failed once OAuthSession.EXCHANGE_DEADLINE has passed."""
    code = "platform_error"
    failed = _outcome(session, code)
    try:
        marked = OAuthSession.objects.filter(pk=session.pk, status=OAuthSession.Status.EXCHANGING).update(
            status=OAuthSession.Status.FAILED, error_code=code, completed_at=timezone.now()
        )
        if not marked and OAuthSession.objects.filter(pk=session.pk, status=OAuthSession.Status.COMPLETED).exists():
            return _outcome(session, message="Connected on TikTok.")
    except Exception:
        log.exception("oauth %s: could not record the failed callback", _session_label(session))
    return failed


def store_tokens(account: SocialAccount, tokens: TokenSet) -> None:
    """Write a token set onto `account` (caller saves, inside its transaction). TikTok rotates refresh
    tokens, so the access and refresh token are always written together."""
    account.access_token_enc = crypto.encrypt(tokens.access_token)
    account.refresh_token_enc = crypto.encrypt(tokens.refresh_token) if tokens.refresh_token else ""
    account.token_expires_at = tokens.expires_at
    account.token_lifetime = tokens.lifetime
    account.refresh_expires_at = tokens.refresh_expires_at
    account.scopes = ",".join(tokens.scopes)
    account.token_version += 1
    account.token_refreshed_at = timezone.now()
    account.health_checked_at = timezone.now()
    account.health_next_attempt_at = None
    account.refresh_claimed_until = None


def _identity_upsert(
    *, organization_id: str, platform: str, profile: Profile, platform_user_id: str, tokens: TokenSet | None = None
) -> PlatformIdentity:
    identity, _ = PlatformIdentity.objects.get_or_create(
        organization_id=organization_id, platform=platform, platform_user_id=platform_user_id
    )
    return _identity_profile_store(identity, profile, tokens=tokens)


def _identity_profile_store(
    identity: PlatformIdentity, profile: Profile, *, tokens: TokenSet | None = None
) -> PlatformIdentity:
    """Give the identity the profile the platform just answered, and the other ids the platform named the user
    by (Instagram: /me's `id` on every profile read, the code exchange's `user_id` with the `tokens` of a
    connect or reauth), which Meta's signed requests may carry (platform_user_identities). Inside a
    transaction that also locks a binding of it, only once that binding's row is locked (social_account_bind
    says why)."""
    # A profile without a username (a TikTok token without user.info.profile) keeps the handle we know; a
    # user first seen that way is named by its display name until a token that may read the handle comes.
    # Both cut to their columns (a longer display name failed every connect of its creator), between
    # graphemes; a handle without "…", which would read as part of it.
    handle = shorten(
        profile.username or identity.handle or profile.display_name, PlatformIdentity.handle.field.max_length, mark=""
    )
    display_name = shorten(profile.display_name or "", PlatformIdentity.display_name.field.max_length)
    # An id not answered this time keeps the one known: a health check's profile carries no code exchange.
    app_scoped_id = profile.app_scoped_id or identity.app_scoped_id
    token_user_id = (tokens.token_user_id if tokens else None) or identity.token_user_id
    now = (handle, display_name, app_scoped_id, token_user_id)
    if (identity.handle, identity.display_name, identity.app_scoped_id, identity.token_user_id) != now:
        identity.handle, identity.display_name, identity.app_scoped_id, identity.token_user_id = now
        identity.save(update_fields=["handle", "display_name", "app_scoped_id", "token_user_id", "updated_at"])
    return identity


class OrganizationOffboarded(Exception):
    """The session's organization was off-boarded (organization_offboard): nothing is bound to it."""


def social_account_bind(*, session: OAuthSession, tokens: TokenSet, profile: Profile) -> SocialAccount:
    """Bind the consenting platform user to the session's project.

    One identity per organization; a live binding of that identity in the project is reused (token
    refreshed, same id, no second fan-out but the copy of a missing picture); otherwise a new account is
    created and the post-connect fan-out is queued after commit. The partial unique constraint settles two
    concurrent connects.

    Lock order, as everywhere a binding and its identity are written together: the binding's row first,
    then the identity's profile (_reauth_complete, leasing.services.pool_account_connect, through
    social_account_reconnect). Writing the renamed profile first deadlocked with a reauth of the same binding
    completing at once, which holds the binding and then renames the identity: PostgreSQL killed one, and a
    customer who had consented landed on `platform_error`. So the identity is only read (or created) here,
    and its profile written once the binding is locked."""
    with transaction.atomic():
        # The organization's row, locked as organization_offboard locks it to mark it: a bind either commits
        # first, and the off-boarding (which reads the live accounts after its mark) disconnects it, or finds the
        # mark and binds nothing. Checked only when the state was claimed, a callback exchanging its code while
        # ops off-boarded the partner bound a live account, holding a token, that nothing would ever revoke.
        if organization_offboarded_at(organization_id=session.organization_id) is not None:
            raise OrganizationOffboarded(session.organization_id)
        identity, _ = PlatformIdentity.objects.get_or_create(
            organization_id=session.organization_id,
            platform=session.platform,
            platform_user_id=tokens.platform_user_id,
        )
        live = SocialAccount.objects.exclude(status=SocialAccount.Status.DISCONNECTED)
        account = live.select_for_update().filter(project_id=session.project_id, identity=identity).first()
        _identity_profile_store(identity, profile, tokens=tokens)
        created = fan_out = False
        if account is None:
            account = SocialAccount(
                organization_id=session.organization_id,
                project_id=session.project_id,
                identity=identity,
                platform=session.platform,
                return_url=session.return_url,
            )
            store_tokens(account, tokens)
            try:
                with transaction.atomic():
                    account.save()
                created = True
            except IntegrityError:
                account = live.select_for_update().get(project_id=session.project_id, identity=identity)
        if created:
            social_account_status_record(
                account=account, from_status="", source=f"connect through {api_key_source(session.api_key)}"
            )
            # Only a new binding is `connected`: the partner already heard of a reused one (API.md: same id,
            # no second fan-out), which records at most `reconnected`, below.
            event_record(
                organization_id=account.organization_id,
                type="social_account.connected",
                data=social_account_data(account),
            )
        elif account.kind == SocialAccount.Kind.LEASED:
            # A customer consenting as the user of an account leased to this project gets that binding's id,
            # but Layers keeps its token (as reauth-url's 409 ACCOUNT_LEASED says) and the account its status;
            # nothing changed, so no event. The token just issued is left unused (revoking it would revoke
            # Layers' grant too: one grant per user and app).
            pass
        else:
            was = account.status
            store_tokens(account, tokens)
            account.status = SocialAccount.Status.CONNECTED
            account.reauth_required_at = None
            account.reauth_reason = ""
            # A reauth without a returnUrl goes back to the page the partner connected from last.
            account.return_url = session.return_url
            account.save()
            # A binding without its picture (a data deletion request blanked it; its copy waited for a live
            # token) gets it copied now, as a reauth does (social_account_reconnect): the fan-out does only
            # what is missing.
            fan_out = not account.avatar_url
            if was == SocialAccount.Status.REAUTH_REQUIRED:
                social_account_status_record(
                    account=account,
                    from_status=was,
                    source=f"connect again through {api_key_source(session.api_key)}",
                )
                event_record(
                    organization_id=account.organization_id,
                    type="social_account.reconnected",
                    data=social_account_data(account),
                )
        OAuthSession.objects.filter(pk=session.pk).update(
            status=OAuthSession.Status.COMPLETED, social_account=account, completed_at=timezone.now()
        )
        if created or fan_out:
            from accounts.tasks import social_account_after_connect

            # A broker outage must not make the customer's callback fail once the account is committed: the
            # provisioning tick queues the fan-out of accounts still without their layers (see
            # social_accounts_unprovisioned).
            enqueue_on_commit(social_account_after_connect, account.pk)
    return account


def _reauth_complete(*, session: OAuthSession, tokens: TokenSet, profile: Profile) -> CallbackOutcome:
    with transaction.atomic():
        # `of`: the binding only. The identity is read, not locked: its profile is written once the binding is
        # held (social_account_reconnect), as a connect of the same user does (social_account_bind's lock order).
        account = (
            SocialAccount.objects.select_for_update(of=("self",))
            .select_related("identity")
            .filter(pk=session.social_account_id)
            .first()
        )
        if account is None or account.status == SocialAccount.Status.DISCONNECTED:
            # Disconnected after the callback's check, while the code was being exchanged: spent, as there.
            return _session_fail(session, "already_used")
        if account.kind == SocialAccount.Kind.LEASED:
            return _session_fail(session, "platform_error")
        if account.identity.platform_user_id != tokens.platform_user_id:
            return _session_fail(session, "account_mismatch")
        # A reauth may ask for fewer scopes than a connect (reauth-url's `scopes`), so only a grant that lets
        # Layers post in no mode at all is refused, as at connect; the account keeps the token it had.
        if grant_lacks_publishing(account.platform, tokens.scopes):
            return _refuse_without_publishing(session, tokens.scopes)
        social_account_reconnect(
            account=account, tokens=tokens, profile=profile, source=f"reauth through {api_key_source(session.api_key)}"
        )
        OAuthSession.objects.filter(pk=session.pk).update(
            status=OAuthSession.Status.COMPLETED, completed_at=timezone.now()
        )
    return CallbackOutcome(redirect_url=session.return_url, account=account)


def social_account_reconnect(
    *, account: SocialAccount, tokens: TokenSet, profile: Profile | None, source: str
) -> SocialAccount:
    """A fresh consent of the account's own platform user: the new token on the same binding (same id),
    status connected, `social_account.reconnected` recorded, and the transition in its status history with
    `source` (who reconnected it). The caller holds the account's row lock inside its transaction and has
    checked the consenting user is the account's. A partner's reauth and a staff reconnect of a leased account
    (leasing.services.pool_account_connect) both end here, and so does a leased account's dead pair replaced by
    the live one a late refresh of the previous lease obtained (leasing.services.
    pool_account_take_refreshed_tokens): `profile` None, as a refresh brings none (the identity stays as is)."""
    if profile is not None:
        # The event must show the profile as it is now (a renamed handle): the identity read before is stale.
        account.identity = _identity_upsert(
            organization_id=account.organization_id,
            platform=account.platform,
            profile=profile,
            platform_user_id=tokens.platform_user_id,
            tokens=tokens,
        )
    was = account.status
    store_tokens(account, tokens)
    account.status = SocialAccount.Status.CONNECTED
    account.reauth_required_at = None
    account.reauth_reason = ""  # the reason stays in the status history
    account.save()
    social_account_status_record(account=account, from_status=was, source=source)
    event_record(
        organization_id=account.organization_id,
        type="social_account.reconnected",
        data=social_account_data(account),
    )
    if not account.avatar_url:
        # Its copy waited for a live token (social_account_rehost_avatar copies for connected accounts only),
        # maybe past the provisioning tick's day: the fan-out is idempotent and does only what is missing.
        from accounts.tasks import social_account_after_connect

        enqueue_on_commit(social_account_after_connect, account.pk)
    return account


def _pool_connect_complete(*, session: OAuthSession, tokens: TokenSet, profile: Profile) -> CallbackOutcome:
    """A staff pool connect consented to: the leasing service gives the pool account (or its live leased
    binding) the new token, or refuses, changing nothing; the state completes or fails with it."""
    from leasing.services import PoolConnectRefused, pool_account_connect

    with transaction.atomic():
        try:
            with transaction.atomic():  # a refusal undoes whatever the service had begun
                connected = pool_account_connect(
                    pool_account_id=session.pool_account_id, tokens=tokens, profile=profile, actor=session.staff_user
                )
        except PoolConnectRefused as exc:
            log.info("oauth %s: pool connect refused (%s)", _session_label(session), exc.code)
            return _session_fail(session, exc.code, message=exc.message)
        OAuthSession.objects.filter(pk=session.pk).update(
            status=OAuthSession.Status.COMPLETED,
            social_account=connected.social_account,
            completed_at=timezone.now(),
        )
    return _outcome(session, account=connected.social_account, message=connected.message)


@dataclass(frozen=True)
class RevokeResult:
    account: SocialAccount
    canceled_scheduled_posts: int
    released: bool
    # Whether this call disconnected it: False when it was disconnected already (by the partner's DELETE, a
    # colleague, a worker), which a caller must not report as its own doing.
    revoked: bool = True


def social_account_revoke(*, account_id: str, actor=None, api_key: ApiKey | None = None) -> RevokeResult:
    """Disconnect an account for good: status disconnected (row kept), tokens wiped, queued posts
    canceled, a leased account released; then, after commit, the app's grant is revoked at the platform
    (best-effort), unless another live binding or the pool still holds the same platform user (see
    _revoke_grant_unless_shared), and the copy of the customer's avatar is deleted (avatars_delete). The
    partner's returnUrl is forgotten with the avatar: a disconnected account is never reauthorized, and
    OAuth sessions holding the same URL are purged after LAYERS_OAUTH_SESSION_RETENTION_DAYS. Repeating it
    changes nothing and reports 0 canceled posts. `actor` is the staff member, `api_key` the partner's key when
    their API call revokes (a lease's history, the canceled posts and the account's status history name them)."""
    with transaction.atomic():
        account = SocialAccount.objects.select_for_update(of=("self",)).select_related("identity").get(pk=account_id)
        if account.status == SocialAccount.Status.DISCONNECTED:
            return RevokeResult(account=account, canceled_scheduled_posts=0, released=False, revoked=False)
        # A leased account's token belongs to Layers' pool account: it goes back there, never revoked.
        connected = account.kind == SocialAccount.Kind.CONNECTED and account.access_token
        tokens = _token_set(account) if connected else None
        was = account.status
        account.status = SocialAccount.Status.DISCONNECTED
        account.disconnected_at = timezone.now()
        canceled, released = _disconnect_effects(account=account, actor=actor, api_key=api_key)
        account.access_token_enc = account.refresh_token_enc = ""
        account.avatar_url = account.return_url = ""
        account.token_version += 1
        account.save()
        by = staff_source(actor) if actor is not None else api_key_source(api_key) if api_key is not None else "Layers"
        social_account_status_record(
            account=account,
            from_status=was,
            source=f"{'lease release' if account.kind == SocialAccount.Kind.LEASED else 'revoke'} by {by}",
            reason=f"{canceled} queued post(s) canceled" + (", lease released" if released else ""),
        )
        event_record(
            organization_id=account.organization_id,
            type="social_account.disconnected",
            data=social_account_data(account),
        )
        transaction.on_commit(lambda: _avatars_delete_queued(account_id=account_id))
        if tokens:
            platform, user_id, pk = account.platform, account.identity.platform_user_id, account.pk
            # robust: the disconnect is committed by then; a failure there must not turn it into a 500.
            transaction.on_commit(
                lambda: _revoke_grant_unless_shared(
                    account_id=pk, platform=platform, platform_user_id=user_id, tokens=tokens
                ),
                robust=True,
            )
    return RevokeResult(account=account, canceled_scheduled_posts=canceled, released=released)


def _revoke_grant_unless_shared(
    *, account_id: str | None, platform: str, platform_user_id: str, tokens: TokenSet
) -> None:
    """Revoke the app's authorization at the platform, unless the same platform user is still held elsewhere.

    TikTok's /v2/oauth/revoke/ and Instagram's DELETE /me/permissions withdraw the app's access for the whole
    user, not one token: revoking it while the same user is still bound in another organization or project
    (identities are per organization, the platform's grant is not), leased, or in the pool with a token would
    kill those bindings behind their owners' backs (their next call fails, they get a needs_reauth for
    something another organization did). So the grant goes only with the last live holder; otherwise only
    our copy of this binding's token is wiped (done already, in the revoke's transaction). `account_id` is
    the binding being revoked (not counted as a holder), or None for a grant the OAuth callback obtained and
    bound to nothing (_withdraw_unbound_grant).

    Two holders revoking at the same moment: this runs after the revoke's commit (on_commit, so after the
    outermost transaction even when a caller wraps the revoke in its own), and its read runs in autocommit
    with a fresh snapshot. Of two revokes of the same user, the one that commits second therefore sees the
    first one's binding disconnected and revokes the grant: they cannot both skip the platform call because
    each saw the other still live (tests/accounts/test_revoke_shared_user.py holds both inside their
    transactions to show it). No lock is needed for that. Both may call the platform; the second finds its
    token already dead, and its refresh token too (_revoke_at_platform): nothing left to revoke.

    Not covered: a connect of the same user whose code exchange happens before this revoke's platform call
    but which commits after this read gets a token the revoke kills (the platform revokes every token of the
    grant). That binding fails its next call and goes to reauth_required like any dead token (the behaviour
    every shared revoke had before). Closing it would mean holding a lock across both platform round trips
    (the connect's code exchange and this revoke), which DESIGN.md rules out."""
    from leasing.services import pool_holds_platform_user

    holders = platform_user_holders(platform=platform, platform_user_id=platform_user_id, excluding=account_id)
    what = account_id or "an unbound grant"
    if holders.exists() or pool_holds_platform_user(platform=platform, platform_user_id=platform_user_id):
        log.info("revoke of %s: the %s user is still bound elsewhere; grant kept, token wiped", what, platform)
        return
    try:
        _revoke_at_platform(platform=platform, tokens=tokens, what=what)
    except PlatformError as exc:
        # The customer's grant may outlive the disconnect (its refresh token working for up to a year) and
        # nothing retries: the token to revoke with is wiped already. A warning for ops, and a line on the
        # account's history for support, who answer the customer asking why the app is still listed.
        code = exc.log_code
        log.warning(
            "revoke of %s at %s failed (%s): %s; token wiped locally, the grant may still be alive at the "
            "platform and nothing retries it",
            what,
            platform,
            type(exc).__name__,
            code,
        )
        if account_id is not None:
            _revoke_failure_record(account_id=account_id, platform=platform, code=code)


def _revoke_failure_record(*, account_id: str, platform: str, code: str) -> None:
    """The revoke at the platform failed, on the disconnected account's status history (a row that changes
    no status: the history is where support reads what happened to the account)."""
    with transaction.atomic():
        account = SocialAccount.objects.filter(pk=account_id).only("id", "status").first()
        if account is None:
            return
        social_account_status_record(
            account=account,
            from_status=account.status,
            source=f"revoke at {platform}",
            reason=f"The revoke at {platform} failed ({code}): the app's grant may still be alive there (the "
            "customer can remove the app in the platform's settings); nothing retries it.",
        )


def platform_user_holders(*, platform: str, platform_user_id: str, excluding: str | None = None):
    """The live bindings of a platform user, in every organization and project, leased ones included, but the
    binding `excluding`: with Layers' pool (leasing.services.pool_holds_platform_user), who still holds the
    app's grant of that user, which a revoke therefore keeps (_revoke_grant_unless_shared)."""
    holders = SocialAccount.objects.filter(
        identity__platform=platform, identity__platform_user_id=platform_user_id
    ).exclude(status=SocialAccount.Status.DISCONNECTED)
    return holders if excluding is None else holders.exclude(pk=excluding)


def platform_user_token_kept(*, account: SocialAccount) -> str | None:
    """A token of the platform user that the disconnected `account` bound, from a holder that kept the app's
    grant when it was revoked or released (platform_user_holders, the pool): the token of a connected binding
    of that user (one of `account`'s organization first), else that of Layers' pool account of the user. None
    when the revoke withdrew the grant (no holder left) or no holder has an unexpired token (whether one is
    coming: platform_user_token_renewing). Also for a reauth_required `account`, whose own token the platform
    refused (or that expired past refreshing): another live holder's token is asked instead.

    For reading how a post the platform had before the revoke ended (scheduling's _resolve), or the public id
    TikTok gives such a post after moderation (scheduling's post id follow-up), never for posting: the
    platform goes on with such a post, since the grant it was made under is still alive. The holder may be
    another organization's binding: its token only asks about this account's own post, and the holder itself
    is left as it is (a token of it the platform refuses here is for its own calls to find)."""
    from leasing.services import pool_token_of_platform_user

    user_id, now = account.identity.platform_user_id, timezone.now()
    holder = (
        platform_user_holders(platform=account.platform, platform_user_id=user_id, excluding=account.pk)
        .filter(status=SocialAccount.Status.CONNECTED)
        .filter(Q(token_expires_at__isnull=True) | Q(token_expires_at__gt=now))
        .exclude(access_token_enc="")
        .order_by(
            Case(When(organization_id=account.organization_id, then=Value(0)), default=Value(1)),
            F("token_expires_at").desc(nulls_first=True),
        )
        .first()
    )
    if holder is not None:
        return holder.access_token
    return pool_token_of_platform_user(platform=account.platform, platform_user_id=user_id)


def platform_user_token_renewing(*, account: SocialAccount) -> bool:
    """Whether a holder of the grant of the user the disconnected `account` bound holds a token that Layers
    renews by itself, for when platform_user_token_kept found no unexpired one: a connected binding with a
    refresh token (its health check refreshes it), or Layers' pool account of the user waiting for a lease
    (the pool refresh, or the assignment's check). Its renewal fell behind (workers or the platform down
    longer than its margin) and a usable token comes with it: a post can be asked about then. A holder whose
    token nothing renews (a binding needing a reauth, a retired pool account, an expired Instagram token,
    which cannot be refreshed) is no such promise: only a person can bring a token there."""
    from leasing.services import pool_renews_token_of_platform_user

    user_id = account.identity.platform_user_id
    refreshed_by_health_check = (
        platform_user_holders(platform=account.platform, platform_user_id=user_id, excluding=account.pk)
        .filter(status=SocialAccount.Status.CONNECTED)
        .exclude(refresh_token_enc="")
    )
    return refreshed_by_health_check.exists() or pool_renews_token_of_platform_user(
        platform=account.platform, platform_user_id=user_id
    )


# The most platform calls one revoke of a connected account makes after its commit (_revoke_at_platform: the
# revoke, the refresh of a token it refused, the revoke again). A leased account's makes none (released).
REVOKE_PLATFORM_CALLS = 3


def social_account_revoke_platform_calls(account: SocialAccount) -> int:
    """The most platform calls social_account_revoke may make for `account` (for a caller that must bound them:
    the admin's revoke of many accounts, a web request)."""
    live = account.status != SocialAccount.Status.DISCONNECTED
    return REVOKE_PLATFORM_CALLS if live and account.kind == SocialAccount.Kind.CONNECTED else 0


# The revokes one web request makes itself (the rest by a worker): a leased account's makes no platform call but
# is its lease's release (its own transaction, the wallet's lock: about 15 ms), so without a bound of its own a
# selection of 10,000 leased accounts was revoked whole in the request (minutes: past gunicorn's timeout and any
# proxy's), as the lease list's release was before its RELEASES_IN_REQUEST.
REVOKES_IN_REQUEST = 200

REVOKE_LATER = "later"


@dataclass
class RevokeBudget:
    """Revokes of many accounts from one web request (the admin's revoke of selected accounts, an
    off-boarding), which may make at most `calls` platform calls in all (WEB_REQUEST_PLATFORM_CALLS:
    gunicorn's grace is made for that many) and at most `rows` revokes; None: no bound (a command). Revoking
    50 accounts in a request made 150 calls, which a deploy cut short mid-way, the grants of the accounts not
    reached yet left alive at the platform. So the revokes that fit are made now; at the first that does not,
    the caller hands that account and the rest of its selection to a worker (`hand_off`), a few thousand ids to a
    task: one task per account was 50,000 broker calls from one web request."""

    calls: int | None
    rows: int | None = None
    spent: int = 0
    made: int = 0

    def revoke(self, account: SocialAccount, *, actor=None) -> RevokeResult | str:
        """Revoke `account` now if it fits: its RevokeResult. Otherwise REVOKE_LATER, made nothing: the caller
        hands it and the accounts after it to a worker."""
        calls = social_account_revoke_platform_calls(account)
        if (self.calls is not None and calls > self.calls - self.spent) or (
            self.rows is not None and self.made >= self.rows
        ):
            return REVOKE_LATER
        self.spent += calls
        self.made += 1
        return social_account_revoke(account_id=account.pk, actor=actor)

    @staticmethod
    def hand_off(queryset: QuerySet, *, after, task, args: tuple = ()) -> tuple[list, list]:
        """Queue `task(ids, *args)` for the accounts of `queryset` past `after` (a primary key; None: all of
        them), TASK_ROWS ids to a task, their ids read BATCH_ROWS at a time (never the whole selection at once):
        (the ids queued, the ids left as they are because the task queue refused; it would refuse the rest too)."""
        from accounts import admin_bulk
        from config import batches
        from config.queueing import enqueue

        queued: list = []
        left: list = []
        chunk: list = []

        def send(ids: list) -> None:
            if not left and enqueue(task, ids, *args):
                queued.extend(ids)
            else:
                left.extend(ids)

        for ids in batches.pk_batches(queryset, batches.BATCH_ROWS, after=after):
            chunk.extend(ids)
            while len(chunk) >= admin_bulk.TASK_ROWS:
                send(chunk[: admin_bulk.TASK_ROWS])
                chunk = chunk[admin_bulk.TASK_ROWS :]
        if chunk:
            send(chunk)
        return queued, left


def social_accounts_revoke(*, account_ids: list, actor, may_release: bool) -> BatchOutcome:
    """Staff revoke many accounts (a worker doing what the admin's revoke handed it): each as the admin revokes
    one (social_account_revoke: its own transaction, the platform's grant revoked after its commit). Left alone,
    and not counted as this staff member's: an account disconnected already (before, or by the partner or a
    colleague since), and a leased one when `may_release` is false (its revoke is its lease's release)."""
    outcome = BatchOutcome()
    accounts = SocialAccount.objects.in_bulk(account_ids)
    for pk in account_ids:
        account = accounts.get(pk)
        if account is None:
            outcome.skipped[pk] = Conflict("No such account.", code="SOCIAL_ACCOUNT_NOT_FOUND")
        elif account.status == SocialAccount.Status.DISCONNECTED:
            outcome.skipped[pk] = Conflict("Disconnected already.", code="SOCIAL_ACCOUNT_DISCONNECTED")
        elif account.kind == SocialAccount.Kind.LEASED and not may_release:
            outcome.skipped[pk] = Conflict(
                "Leased: releasing it needs the lease permission.", code="LEASE_PERMISSION_REQUIRED"
            )
        else:
            result = social_account_revoke(account_id=pk, actor=actor)
            if not result.revoked:
                outcome.skipped[pk] = Conflict("Disconnected already.", code="SOCIAL_ACCOUNT_DISCONNECTED")
                continue
            outcome.done.append(pk)
            outcome.notes[pk] = f"{result.canceled_scheduled_posts} queued post(s) canceled" + (
                ", lease released" if result.released else ""
            )
    return outcome


def _revoke_at_platform(*, platform: str, tokens: TokenSet, what: str) -> None:
    """Revoke the grant with `tokens`, renewing an access token that cannot do it.

    TikTok's access token lives a day (or 2 h), its refresh token a year (or 180 days): an expired access
    token revokes nothing (the sandbox's TikTok refuses it with invalid_grant; an RFC 7009 server may as
    well answer 200 and ignore it, which is why expiry is judged here rather than left to a refusal), and
    the grant would live on with its refresh token, though the partner was told the account is
    disconnected. So an access token that has expired by our clock is renewed first, and one the revoke
    refuses (clocks differ) is renewed and the revoke made again: one refresh at most, each call within the
    platform timeouts. A refresh refused too means the grant is gone already (the user removed
    the app, or another revoke won). The renewed tokens are stored nowhere: they are revoked at once.
    Instagram has no refresh token, and an expired Instagram token cannot be refreshed: its revoke is tried
    and, refused, nothing more can be done (no usable token of the grant is left anywhere). Raises the transient
    PlatformError of either call (the caller logs it: best-effort)."""
    client = _client(platform)
    expired = tokens.expires_at <= timezone.now() + TOKEN_EXPIRY_SKEW
    if not (expired and tokens.refresh_token) and client.revoke(access_token=tokens.access_token):
        return
    if not tokens.refresh_token:
        log.info("revoke of %s: %s refused the token and it cannot be renewed; token wiped locally", what, platform)
        return
    try:
        renewed = client.refresh(tokens=tokens)
    except TokenInvalid:
        log.info("revoke of %s: %s refused the refresh token too; the grant is gone already", what, platform)
        return
    if not client.revoke(access_token=renewed.access_token):
        log.info("revoke of %s: %s refused a renewed token too; token wiped locally", what, platform)


def _disconnect_effects(*, account: SocialAccount, actor=None, api_key=None) -> tuple[int, bool]:
    """What other apps do when an account leaves its project, inside the revoke's transaction:
    (queued posts canceled, lease released)."""
    from leasing.services import lease_release_for_account
    from scheduling.models import CancelReason
    from scheduling.services import posts_cancel_for_account

    # Revoking a leased account is its release (below): its posts say so.
    if account.kind == SocialAccount.Kind.LEASED:
        cause, reason = "lease released", CancelReason.LEASE_RELEASED
    else:
        cause, reason = "account revoked", CancelReason.ACCOUNT_REVOKED
    canceled = posts_cancel_for_account(account=account, cause=cause, reason=reason, actor=actor, api_key=api_key)
    released = lease_release_for_account(account=account, actor=actor, api_key=api_key) is not None
    return canceled, released


def social_account_mark_reauth_required(
    *,
    account_id: str,
    reason: str,
    source: str,
    expected_version: int | None = None,
    unless_refreshing: bool = False,
) -> bool:
    """connected → reauth_required, recording `social_account.needs_reauth` once per transition, and the
    transition in the account's status history with `reason` and `source` (what found the token dead: a post
    `post sp_…`, the health check, a platform's webhook).
    With `expected_version`, only if the token was not rotated meanwhile (a refresh that lost a race
    must not condemn a fresh token). With `unless_refreshing`, not while a refresh holds its claim: a call
    refused on the old token says nothing once TikTok has rotated it, and the refresh would then discard the
    new tokens of an account no longer connected. `reason` (what the platform said; no token in it) is kept
    for support. Returns whether this call made the transition."""
    with transaction.atomic():
        qs = SocialAccount.objects.filter(pk=account_id, status=SocialAccount.Status.CONNECTED)
        if expected_version is not None:
            qs = qs.filter(token_version=expected_version)
        if unless_refreshing:
            qs = qs.filter(Q(refresh_claimed_until__isnull=True) | Q(refresh_claimed_until__lte=timezone.now()))
        updated = qs.update(
            status=SocialAccount.Status.REAUTH_REQUIRED,
            reauth_required_at=timezone.now(),
            reauth_reason=shorten(reason, SocialAccount.reauth_reason.field.max_length),
        )
        if not updated:
            return False
        account = SocialAccount.objects.select_related("identity").get(pk=account_id)
        social_account_status_record(
            account=account, from_status=SocialAccount.Status.CONNECTED, source=source, reason=reason
        )
        event_record(
            organization_id=account.organization_id,
            type="social_account.needs_reauth",
            data=social_account_data(account),
        )
    return True


# The user took the app's access away, in the platform's own settings, and the platform told us: the status
# history's source and the reason, per platform. TikTok posts its authorization.removed webhook; Instagram (Meta)
# posts the signed request of the Deauthorize callback URL registered for the app.
AUTHORIZATION_REMOVED = {
    Platform.TIKTOK: (
        "TikTok's authorization.removed webhook",
        "TikTok: the creator removed the app's access to the account (authorization.removed).",
    ),
    Platform.INSTAGRAM: (
        "Instagram's deauthorize callback",
        "Instagram: the user removed the app from their account (deauthorize callback).",
    ),
}
# Instagram's Data deletion request callback: the same removal, and what Layers keeps about the person erased.
DATA_DELETION_REQUESTED = (
    "Instagram's data deletion request callback",
    "Instagram: the user removed the app and asked for their data to be deleted (data deletion request).",
)
_REMOVAL_SOURCES = {source for source, _ in AUTHORIZATION_REMOVED.values()} | {DATA_DELETION_REQUESTED[0]}


def social_account_removed_by_the_creator(*, account_id: str) -> bool:
    """Whether the account's latest status change is the platform's notice that the user removed the app: the
    creator took the app's access away, and every token of the grant, one issued just before included, is dead."""
    latest = SocialAccountStatusChange.objects.filter(social_account_id=account_id).order_by("-at", "-id").first()
    return latest is not None and latest.source in _REMOVAL_SOURCES


# What a platform's notice may name a user by (PlatformIdentity's columns), and the name the logs give each.
USER_ID_KINDS = {"platform_user_id": "user_id", "app_scoped_id": "app_scoped", "token_user_id": "token"}


def platform_user_identities(*, platform: str, platform_user_id: str) -> QuerySet:
    """The identities, in every organization, of the user a platform's notice names by `platform_user_id`.
    Matched against each id Layers recorded for them (USER_ID_KINDS), because Meta does not say which of
    Instagram's ids its signed requests carry for Instagram Login: /me's `user_id` (the one Layers publishes
    with), /me's app-scoped `id` or the code exchange's `user_id`. Meta's ids name one object each, so one
    person's id is never another's; "" (an id not known) never matches, and no notice names ""."""
    if not platform_user_id:
        return PlatformIdentity.objects.none()
    named = Q()
    for column in USER_ID_KINDS:
        named |= Q(**{column: platform_user_id})
    return PlatformIdentity.objects.filter(named, platform=platform)


def platform_user_id_kinds(*, platform: str, platform_user_id: str) -> list[str]:
    """Which of the ids recorded for the user `platform_user_id` is (USER_ID_KINDS' names), for the log line
    of a platform's notice: the kind, not the id, which names a person and would outlive their deletion in
    the logs. Empty when no identity has it."""
    found = set()
    for row in platform_user_identities(platform=platform, platform_user_id=platform_user_id).values(*USER_ID_KINDS):
        found |= {kind for column, kind in USER_ID_KINDS.items() if row[column] == platform_user_id}
    return [kind for kind in USER_ID_KINDS.values() if kind in found]


def _granted_before(*, platform: str, platform_user_id: str, at: datetime) -> QuerySet:
    """The bindings of that platform user (platform_user_identities), in any organization, whose token was
    stored before `at`, the time the platform says the user removed the app. A token stored after it was
    consented to since: the platforms deliver late and more than once, and their times have whole seconds,
    so a token stored within that second counts as older (a wrong reauth_required is undone by a reauth; a
    dead token kept as connected would fail the account's next post)."""
    identities = platform_user_identities(platform=platform, platform_user_id=platform_user_id)
    return SocialAccount.objects.filter(platform=platform, identity__in=identities.values("pk")).filter(
        Q(token_refreshed_at__isnull=True) | Q(token_refreshed_at__lt=at + timedelta(seconds=1))
    )


def platform_authorization_removed(
    *, platform: str, platform_user_id: str, removed_at: datetime, cause: tuple[str, str] | None = None
) -> list[str]:
    """The user took the app's access away (TikTok's `authorization.removed` webhook, Instagram's deauthorize
    callback), and the platform has already revoked the tokens. Every live binding of that user, in any
    organization, goes to reauth_required now, with its one `social_account.needs_reauth`, instead of at its
    next failed call; its queued posts then fail CREDENTIAL_INVALID when due, as for any dead token. Returns
    the ids it flipped; a repeat flips nothing. `cause`: (status history source, reason), the platform's
    removal by default. A binding whose token was stored after `removed_at` keeps it (_granted_before)."""
    source, reason = cause or AUTHORIZATION_REMOVED[platform]
    rows = _granted_before(platform=platform, platform_user_id=platform_user_id, at=removed_at).filter(
        status=SocialAccount.Status.CONNECTED
    )
    # expected_version: a reauth that completes between this read and the update keeps its new token.
    return [
        pk
        for pk, version in rows.values_list("pk", "token_version")
        if social_account_mark_reauth_required(account_id=pk, reason=reason, source=source, expected_version=version)
    ]


CONFIRMATION_CODE_BYTES = 10


def _confirmation_code() -> str:
    # Shown to the person by Meta and typed or clicked back: 80 random bits, unambiguous upper-case hex.
    return secrets.token_hex(CONFIRMATION_CODE_BYTES).upper()


def confirmation_code_typed(typed: str) -> str | None:
    """The confirmation code a person typed or clicked back (the status page's path), as _confirmation_code
    issues it (typed in lower case too), or None when it cannot be one: anything may follow /data-deletion/,
    and a NUL in it made the lookup a DataError (a 500)."""
    code = typed.upper()
    if len(code) != 2 * CONFIRMATION_CODE_BYTES or any(c not in "0123456789ABCDEF" for c in code):
        return None
    return code


def platform_user_data_delete(
    *, platform: str, platform_user_id: str, requested_at: datetime, request_key: str
) -> DataDeletionRequest:
    """Instagram's Data deletion request callback: the person removed the app and asked that what Layers keeps
    about them be deleted. Returns the request's row (its confirmation code); the same request again (same
    `request_key`) returns the first row and changes nothing more, and so does a concurrent copy of it.

    Done in one transaction with the row, so that the row proves the erasure:
    - what platform_authorization_removed does (every live binding to reauth_required, its event);
    - every binding of the user, in any organization and of any status: its tokens wiped (a new
      token_version, so that a refresh underway cannot store its answer), its picture's URL blanked, and its
      copy in media storage deleted after commit (avatars_delete);
    - the user's identities (one per organization): handle and display name blanked, so the API, the admin
      and the events written from now on show "" for them; the admin's history of those rows is renamed too
      (_admin_history_renamed). An avatar copy or a health check underway checks the account's token_version
      and status before it writes, and writes nothing after this.
    Erased first and flipped after, so that the needs_reauth event the partner gets carries none of it.

    Kept, on purpose: the bindings themselves and everything the partner made with them (scheduled posts,
    their captions, media and results, layers, status history). Those are the partner's records of what
    their own product did, which they need for their customers and their billing; the person's own data
    (who they are, their picture, the access they gave) is what goes. Kept too: the ids Instagram names the
    person by (the identity's platform_user_id, app_scoped_id and token_user_id), which are no profile and
    without which a reconnect of the same person could not find its binding nor a later request its user.
    - the events already written about those bindings (GET /v1/events) and the webhook deliveries' stored
      bodies of them, sent or not: the person's fields scrubbed as the API shows them now (_events_scrubbed),
      their ids, types, times and everything else kept. Rewritten rather than deleted: the partner's list and
      its order stay whole, and a receiver that dedupes by event id is not sent an event again. A delivery not
      sent yet sends (and signs) the scrubbed body; one already sent cannot be called back, and the partner
      was told by the needs_reauth event that the account's profile is gone.

    A binding whose token was stored after `requested_at` (the person consented again since) is left alone,
    as platform_authorization_removed leaves it, and so is its organization's identity."""
    with transaction.atomic():
        # The unique key alone would answer a repeat (below); read first so that Meta's resends are not each a
        # failed insert, which PostgreSQL logs as an ERROR.
        done = DataDeletionRequest.objects.filter(request_key=request_key).first()
        if done is not None:
            return done
        try:
            with transaction.atomic():
                request = DataDeletionRequest.objects.create(
                    platform=platform,
                    platform_user_id=platform_user_id,
                    request_key=request_key,
                    confirmation_code=_confirmation_code(),
                    requested_at=requested_at,
                )
        except IntegrityError:
            # The same request delivered twice at once: the other copy committed its row (and its erasure)
            # while this insert waited on the key; its answer is this one's.
            return DataDeletionRequest.objects.get(request_key=request_key)
        erased = list(
            _granted_before(platform=platform, platform_user_id=platform_user_id, at=requested_at)
            .select_for_update(of=("self",))
            .order_by("pk")
        )
        for account in erased:
            account.access_token_enc = account.refresh_token_enc = ""
            account.avatar_url = ""
            account.token_version += 1
            account.save(update_fields=["access_token_enc", "refresh_token_enc", "avatar_url", "token_version"])
            transaction.on_commit(lambda pk=account.pk: _avatars_delete_queued(account_id=pk))
        identities = platform_user_identities(platform=platform, platform_user_id=platform_user_id)
        consented_again = SocialAccount.objects.filter(identity__in=identities.values("pk")).exclude(
            pk__in=[account.pk for account in erased]
        )
        blanked = list(identities.exclude(pk__in=consented_again.values("identity_id")).values_list("pk", flat=True))
        PlatformIdentity.objects.filter(pk__in=blanked).update(handle="", display_name="", updated_at=timezone.now())
        _admin_history_renamed(account_ids=[account.pk for account in erased], identity_ids=blanked)
        _events_scrubbed(accounts=erased, blanked_identity_ids=blanked)
        platform_authorization_removed(
            platform=platform,
            platform_user_id=platform_user_id,
            removed_at=requested_at,
            cause=DATA_DELETION_REQUESTED,
        )
        request.accounts_erased = len(erased)
        request.save(update_fields=["accounts_erased"])
    matched = platform_user_id_kinds(platform=platform, platform_user_id=platform_user_id)
    log.info(
        "%s data deletion %s: %d binding(s) erased (matched %s)",
        platform,
        request.confirmation_code,
        request.accounts_erased,
        "+".join(matched) or "no identity",
    )
    return request


# The events whose `data` is an account's representation (social_account_data): the handle, display name and
# picture they copied are the person's.
SOCIAL_ACCOUNT_EVENTS = sorted(t for t in EVENT_TYPES if t.startswith("social_account."))


def _events_scrubbed(*, accounts: list[SocialAccount], blanked_identity_ids: list[str]) -> list[str]:
    """Scrub the person from the events already written about the erased accounts, in every organization: their
    picture's URL null (its copy is deleted), and their handle and display name "" where the identity was blanked
    (an identity the person consented to again since keeps its names, in the API as here). Those events are copies
    kept until LAYERS_EVENT_RETENTION_DAYS (forever with 0) of what the partner was sent, and GET /v1/events and
    the webhook deliveries (accounts.webhooks.services.deliveries_body_rewritten) kept showing them. Returns the
    ids of the events changed. Found by the subject index (EventSubjectId, the account's id); locked, so that a
    fan-out reading one of them now builds its deliveries from the scrubbed row (event_fan_out)."""
    from accounts.webhooks.services import deliveries_body_rewritten

    if not accounts:
        return []
    nameless = {account.pk for account in accounts if account.identity_id in set(blanked_identity_ids)}
    events = (
        Event.objects.filter(type__in=SOCIAL_ACCOUNT_EVENTS)
        .alias(subject=EventSubjectId("data"))
        .filter(subject__in=[account.pk for account in accounts])
        .select_for_update()
        .order_by("created_at", "pk")
    )
    changed = []
    for event in events:
        if not isinstance(event.data, dict):
            continue
        data = dict(event.data)
        if "avatarUrl" in data:
            data["avatarUrl"] = None
        if data.get("id") in nameless:
            data.update({key: "" for key in ("handle", "displayName") if key in data})
        if data != event.data:
            event.data = data
            event.save(update_fields=["data"])
            changed.append(event.pk)
    deliveries_body_rewritten(event_ids=changed)
    return changed


def _admin_history_renamed(*, account_ids: list[str], identity_ids: list[str]) -> None:
    """Rewrite the admin's history of the erased rows under the names they have now. Django copies an object's
    str() into LogEntry.object_repr at each audited admin action and change-form save, and shows it in every
    staff member's "Recent actions" for as long as the row lives: a SocialAccount's is `… (instagram @handle)`.
    Rewritten here rather than by leaving the handle out of __str__, because ops find an account by its
    handle on the admin's titles, links and selects every day; the history keeps who did what and when to
    which row (object_id), which is not the person's data."""
    from django.contrib.admin.models import LogEntry
    from django.contrib.contenttypes.models import ContentType

    for rows in (
        SocialAccount.objects.filter(pk__in=account_ids).select_related("identity"),
        PlatformIdentity.objects.filter(pk__in=identity_ids),
    ):
        content_type = ContentType.objects.get_for_model(rows.model)
        for row in rows:
            LogEntry.objects.filter(content_type=content_type, object_id=str(row.pk)).update(
                object_repr=str(row)[: LogEntry.object_repr.field.max_length]
            )


def _token_set(account: SocialAccount) -> TokenSet:
    return TokenSet(
        access_token=account.access_token or "",
        refresh_token=account.refresh_token,
        expires_at=account.token_expires_at or timezone.now(),
        refresh_expires_at=account.refresh_expires_at,
        platform_user_id=account.identity.platform_user_id,
        scopes=stored_scopes(account.scopes),
        lifetime=account.token_lifetime,
    )


REFRESH_CLAIM = timedelta(minutes=2)
# The status history's source for a refresh refused when the caller names nothing that needed the token.
TOKEN_REFRESH = "token refresh"


def social_account_refresh_token(*, account_id: str, source: str = TOKEN_REFRESH) -> str:
    """Refresh the account's token now. Returns "refreshed", "skipped" (not live, or another worker holds
    the refresh claim), or "reauth_required" (the platform rejected the token; `source`, what needed the
    token, goes to the status history). Raises PlatformUnavailable or RateLimited on transient failures so
    the caller can retry; those never flip the status.

    Only one worker refreshes an account at a time (a claim column set by a conditional UPDATE): TikTok
    rotates refresh tokens, and two concurrent refreshes would make the loser see `invalid_grant`."""
    now = timezone.now()
    claimed = (
        SocialAccount.objects.filter(pk=account_id, status=SocialAccount.Status.CONNECTED)
        .filter(Q(refresh_claimed_until__isnull=True) | Q(refresh_claimed_until__lt=now))
        .update(refresh_claimed_until=now + REFRESH_CLAIM)
    )
    if not claimed:
        return "skipped"
    account = SocialAccount.objects.select_related("identity").get(pk=account_id)
    version = account.token_version
    if not account.access_token:
        SocialAccount.objects.filter(pk=account_id).update(refresh_claimed_until=None)
        social_account_mark_reauth_required(
            account_id=account_id, reason="No token is stored for the account.", source=source, expected_version=version
        )
        return "reauth_required"
    before = _token_set(account)
    try:
        tokens = _client(account.platform).refresh(tokens=before)
    except TokenInvalid as exc:
        SocialAccount.objects.filter(pk=account_id).update(refresh_claimed_until=None)
        social_account_mark_reauth_required(
            account_id=account_id,
            reason=refusal_reason("refreshing the token", exc),
            source=source,
            expected_version=version,
        )
        return "reauth_required"
    except PlatformError:
        SocialAccount.objects.filter(pk=account_id).update(refresh_claimed_until=None)
        raise

    def store() -> str:
        with transaction.atomic():
            account = SocialAccount.objects.select_for_update().get(pk=account_id)
            if account.token_version != version or account.status != SocialAccount.Status.CONNECTED:
                if account.kind == SocialAccount.Kind.LEASED:
                    # Released meanwhile: the release gave the pool account the tokens this refresh has just
                    # rotated away (TikTok kills the old refresh token). The new ones go to the pool instead.
                    from leasing.services import pool_account_take_refreshed_tokens

                    pool_account_take_refreshed_tokens(
                        social_account_id=account_id, refreshed_from=before.refresh_token, tokens=tokens
                    )
                return "skipped"  # a reauth or revoke happened meanwhile; its token wins
            store_tokens(account, tokens)
            account.save()
        return "refreshed"

    def landed() -> bool:
        account = SocialAccount.objects.filter(pk=account_id).first()
        return account is not None and account.access_token == tokens.access_token

    # TikTok has rotated the refresh token: this answer holds the only live pair.
    return write_again_after_a_dropped_connection(
        store, landed=landed, landed_result="refreshed", what=f"storing the refreshed tokens of {account_id}"
    )


# A token this close to its expiry is refreshed before a platform call rather than sent: it could expire on
# the way (a slow call, clocks that differ).
TOKEN_EXPIRY_SKEW = timedelta(minutes=5)


def social_account_token_expiring(account: SocialAccount, *, now=None) -> bool:
    """Whether the account's access token has expired (or is about to) while a refresh token can still renew
    it. TikTok's access token lives a day and its refresh token a year: the health check renews it hours
    ahead, but when the check has fallen behind (workers or TikTok down longer than its margin), an expired
    access token is no reason for a reauth. Instagram has no refresh token (an expired Instagram token
    cannot be refreshed: it is dead)."""
    now = now or timezone.now()
    expires = account.token_expires_at
    return bool(account.refresh_token_enc) and expires is not None and expires <= now + TOKEN_EXPIRY_SKEW


def social_account_with_fresh_token(*, account: SocialAccount, source: str = TOKEN_REFRESH) -> SocialAccount:
    """`account` ready for a platform call on its token: an expiring token (social_account_token_expiring)
    is refreshed first, through social_account_refresh_token (one refresher at a time), and the account is
    read again. Check the status of what is returned: reauth_required when the refresh token was refused too.
    Raises the refresh's transient PlatformError (the caller tries again later); never flips on those.
    `source`: what needs the token (`post sp_…`), for the status history should the refresh be refused."""
    if account.status != SocialAccount.Status.CONNECTED or not social_account_token_expiring(account):
        return account
    social_account_refresh_token(account_id=account.pk, source=source)
    return SocialAccount.objects.select_related("identity").get(pk=account.pk)


def refusal_reason(doing: str, exc: PlatformError) -> str:
    """What support reads about a token the platform refused (the clients already blank tokens in messages)."""
    code = f" ({exc.code})" if getattr(exc, "code", None) else ""
    return f"The platform refused the token while {doing}{code}: {exc}"


def social_account_token_rejected(*, account_id: str, token_version: int, reason: str, source: str) -> bool:
    """A platform call made with the account's token (as of `token_version`) was answered "token invalid".
    Returns whether the token is dead — the account is then reauth_required, with its one event — or False:
    a newer token exists or may exist, and the call should be made again later. Not dead when:
    - the token changed since (a reauth or a refresh stored a new one);
    - a refresh is underway (its claim is held): TikTok may have rotated the token already, and its outcome
      decides (marking now would make that refresh discard the only live tokens);
    - the token had expired and one refresh attempt renews it (or fails for now: transient errors are raised).
    Only a refusal of a token that is neither expired nor being refreshed, or a refresh refused with
    invalid_grant, is a dead token (API.md: "rejected or cannot be refreshed"). `source`: what made the call
    (`post sp_…`, `health check`), for the status history."""
    account = SocialAccount.objects.filter(pk=account_id).first()
    if account is None or account.token_version != token_version:
        return False
    if account.status != SocialAccount.Status.CONNECTED:
        return account.status == SocialAccount.Status.REAUTH_REQUIRED
    if account.refresh_claimed_until is not None and account.refresh_claimed_until > timezone.now():
        return False
    if social_account_token_expiring(account):
        return social_account_refresh_token(account_id=account_id, source=source) == "reauth_required"
    social_account_mark_reauth_required(
        account_id=account_id, reason=reason, source=source, expected_version=token_version, unless_refreshing=True
    )
    return SocialAccount.objects.filter(
        pk=account_id, token_version=token_version, status=SocialAccount.Status.REAUTH_REQUIRED
    ).exists()


HEALTH_CHECK = "health check"  # the status history's source for what the periodic check finds

# How long an account whose health check failed for now (or whose check is queued) is left out of the
# health tick's batches: about as long as the check task's own retries take (1 + 2 + 4 + 8 + 15 minutes).
HEALTH_RETRY_AFTER = timedelta(minutes=30)


def social_account_check_health(*, account_id: str) -> str:
    """The periodic health check of one account: refresh the token when it is close to expiry, otherwise
    verify it (profile call) once a day. A dead token → reauth_required (+ one event); a transient error
    changes nothing but the account's place in the health queue (health_next_attempt_at: it waits out
    HEALTH_RETRY_AFTER, or the platform's Retry-After when that is longer, so that it does not hold the head
    of every batch nor is the platform asked again before it said) and is re-raised for the retry policy."""
    try:
        return _check_health(account_id=account_id)
    except PlatformError as exc:
        # A wait longer than a retry may spend in the broker is left to the health tick (the task does not
        # retry then: config/queueing.platform_retry_countdown), which reads it from here.
        wait = max(HEALTH_RETRY_AFTER, timedelta(seconds=exc.retry_after or 0))
        SocialAccount.objects.filter(pk=account_id).update(health_next_attempt_at=timezone.now() + wait)
        raise


def _check_health(*, account_id: str) -> str:
    account = SocialAccount.objects.select_related("identity").filter(pk=account_id).first()
    if account is None or account.status != SocialAccount.Status.CONNECTED:
        return "skipped"
    now = timezone.now()
    if refresh_due(
        expires_at=account.token_expires_at,
        lifetime=account.token_lifetime,
        configured=settings.LAYERS_TOKEN_REFRESH_MARGIN[account.platform],
        now=now,
    ):
        return social_account_refresh_token(account_id=account_id, source=HEALTH_CHECK)
    version = account.token_version
    try:
        profile = _client(account.platform).get_profile(
            access_token=account.access_token or "", scopes=stored_scopes(account.scopes)
        )
    except TokenInvalid as exc:
        reason = refusal_reason("checking the account (health check)", exc)
        dead = social_account_token_rejected(
            account_id=account_id, token_version=version, reason=reason, source=HEALTH_CHECK
        )
        return "reauth_required" if dead else "skipped"
    with transaction.atomic():
        # The profile is stored only while the token it was read with is still the account's, under the
        # account's row lock (then the identity's, the order social_account_bind gives): a data deletion
        # request (platform_user_data_delete) committed during the profile call has blanked the identity's
        # handle and display name and given the account a new token_version, and writing this answer would put
        # the erased name back. A revoke, a reauth or a refresh meanwhile: their own profile, or none, stands.
        live = (
            SocialAccount.objects.select_for_update()
            .filter(pk=account_id, status=SocialAccount.Status.CONNECTED, token_version=version)
            .first()
        )
        if live is None:
            return "skipped"
        # Read again now: another binding of the same identity may have renamed it since this check began.
        _identity_profile_store(PlatformIdentity.objects.select_for_update().get(pk=live.identity_id), profile)
        SocialAccount.objects.filter(pk=account_id).update(health_checked_at=now, health_next_attempt_at=None)
    return "healthy"


def social_accounts_due_for_health(*, now=None, limit: int = 1000) -> list[str]:
    """Ids of live connected accounts whose token nears expiry (accounts/token_margin.py: as the check decides)
    or that were not verified for a day, leaving out those waiting for a queued check or a backoff
    (health_next_attempt_at). Soonest expiry first within each platform, and the platforms take turns: one
    order across platforms put TikTok's hours-long expiries ahead of Instagram's days for as long as more
    TikTok tokens were due than a batch holds, and Instagram's tokens ran out unrefreshed meanwhile."""
    now = now or timezone.now()
    stale = Q(health_checked_at__isnull=True) | Q(health_checked_at__lt=now - settings.LAYERS_HEALTH_CHECK_EVERY)
    due = (
        SocialAccount.objects.filter(status=SocialAccount.Status.CONNECTED)
        .filter(Q(health_next_attempt_at__isnull=True) | Q(health_next_attempt_at__lte=now))
        .order_by("token_expires_at")
    )
    per_platform = [
        list(
            due.filter(platform=platform)
            .filter(refresh_due_q(configured=margin, now=now) | stale)
            .values_list("pk", flat=True)[:limit]
        )
        for platform, margin in settings.LAYERS_TOKEN_REFRESH_MARGIN.items()
    ]
    # Round robin: each platform's soonest first, a platform with fewer due leaving its share to the others.
    turns = zip_longest(*per_platform)
    return [pk for turn in turns for pk in turn if pk is not None][:limit]


def social_accounts_refresh_due(*, platform: str, now=None) -> QuerySet:
    """Live connected accounts of `platform` with a refresh token whose token the health check refreshes by
    `now` (accounts/token_margin.py; an unknown expiry at the first check), as the rows say. After a restore
    from a backup taken at T, TikTok's among them were likely refreshed between T and the outage: TikTok
    rotated their refresh token then, and the one restored is dead (manage.py hold_after_restore lists them)."""
    now = now or timezone.now()
    margin = settings.LAYERS_TOKEN_REFRESH_MARGIN[platform]
    return (
        SocialAccount.objects.filter(status=SocialAccount.Status.CONNECTED, platform=platform)
        .exclude(refresh_token_enc="")
        .filter(Q(token_expires_at__isnull=True) | refresh_due_q(configured=margin, now=now))
    )


def social_accounts_health_queued(*, account_ids: list[str], now=None) -> datetime:
    """The tick is queueing these accounts' checks: leave them out of its next batches until the check has
    run (it clears or resets the mark) or HEALTH_RETRY_AFTER has passed (its message was lost). Returns the
    mark, for social_accounts_health_not_queued."""
    now = now or timezone.now()
    mark = now + HEALTH_RETRY_AFTER
    SocialAccount.objects.filter(pk__in=account_ids).update(health_next_attempt_at=mark)
    return mark


def social_accounts_health_not_queued(*, account_ids: list[str], mark: datetime) -> None:
    """The tick could not queue these accounts' checks (the broker refused): take its mark off, so that the
    next tick queues them instead of leaving them unchecked for HEALTH_RETRY_AFTER. Only where the mark is
    still the tick's (a message the broker took in spite of the error may have run its check already)."""
    SocialAccount.objects.filter(pk__in=account_ids, health_next_attempt_at=mark).update(health_next_attempt_at=None)


def social_account_hold_sync(*, account_id: str, until: datetime, post_ids: bool = False) -> None:
    """The platform asked not to be called about the account's posts before `until` (it throttled the calls, or
    failed them for now): the metrics sync (scheduling.services) leaves the account's metrics out until then
    (SocialAccount.metrics_not_before), or, `post_ids`, its TikTok post id follow-up (post_ids_not_before: the
    status endpoint, limited apart from the metrics'). A longer wait already set is kept."""
    field = "post_ids_not_before" if post_ids else "metrics_not_before"
    SocialAccount.objects.filter(pk=account_id).filter(
        Q(**{f"{field}__isnull": True}) | Q(**{f"{field}__lt": until})
    ).update(**{field: until})


# --- Post-connect fan-out (idempotent steps, run by accounts.tasks.social_account_after_connect) ------

# How long a new account is left to its own fan-out task before the provisioning tick queues it again.
FAN_OUT_GRACE = timedelta(minutes=10)
# How long after its creation (a connect, a lease assignment) an account still without its avatar copy is
# queued again by the tick. Bounded, unlike the layers of a connected account (which a worker always ends up
# creating): a profile that has no picture, or one the copy refuses (too large, not an image), would otherwise
# be asked for again every ten minutes for as long as the account lives. A day covers a broker, platform or
# CDN outage longer than the fan-out task's retries (about an hour).
AVATAR_REPAIR_WINDOW = timedelta(days=1)


def social_accounts_unprovisioned(*, now=None, limit: int = 1000) -> list[str]:
    """Ids of live accounts, created more than FAN_OUT_GRACE ago, whose post-connect fan-out was never
    queued (the broker was down when the callback or the assignment committed the account) or gave up:
    connected accounts still missing one of their layers, and accounts of either kind created less than
    AVATAR_REPAIR_WINDOW ago still without their avatar copy (an assignment provisions a leased account's
    layers itself, so those are no sign for it). The fan-out is idempotent, so queueing it again only does
    what is missing (the avatar, the layers, the onboarding step)."""
    from scheduling.services import ACCOUNT_LAYER_KINDS

    now = now or timezone.now()
    return list(
        SocialAccount.objects.filter(status=SocialAccount.Status.CONNECTED, created_at__lt=now - FAN_OUT_GRACE)
        .annotate(layers_in_place=Count("layers", filter=Q(layers__kind__in=ACCOUNT_LAYER_KINDS)))
        .filter(
            Q(kind=SocialAccount.Kind.CONNECTED, layers_in_place__lt=len(ACCOUNT_LAYER_KINDS))
            | Q(avatar_url="", created_at__gte=now - AVATAR_REPAIR_WINDOW)
        )
        .order_by("created_at")
        .values_list("pk", flat=True)[:limit]
    )


AVATAR_TYPES = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}
_MAGIC = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF8": "image/gif", b"RIFF": "image/webp"}


def social_account_rehost_avatar(*, account_id: str) -> str | None:
    """Copy the platform avatar into our storage and point avatarUrl at it (the platform's URL is a
    signed CDN URL that expires). Skips when already rehosted. Raises on failure (the task retries)."""
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from accounts.platforms.http import platform_http_client
    from config.netguard import FetchFailed, fetch_limited

    account = SocialAccount.objects.select_related("identity").filter(pk=account_id).first()
    if account is None:
        return None
    # Connected only: a reauth_required account's token is dead, and asking with it failed every run of the
    # task (7 over an hour); its reconnect queues the copy (social_account_reconnect).
    if account.avatar_url or account.status != SocialAccount.Status.CONNECTED or not account.access_token:
        return account.avatar_url or None
    version = account.token_version
    client = _client(account.platform)
    profile = client.get_profile(access_token=account.access_token, scopes=stored_scopes(account.scopes))
    if not profile.avatar_url:
        return None
    with platform_http_client(public_only=True) as client:
        fetched = fetch_limited(
            profile.avatar_url,
            client=client,
            max_bytes=settings.LAYERS_AVATAR_MAX_BYTES,
            allowed_types=tuple(AVATAR_TYPES),
            timeout=settings.LAYERS_AVATAR_TIMEOUT_SECONDS,
        )
    sniffed = next((t for magic, t in _MAGIC.items() if fetched.content.startswith(magic)), None)
    if sniffed != fetched.content_type:
        raise FetchFailed("avatar bytes are not the image type they claim")
    digest = hashlib.sha256(fetched.content).hexdigest()[:16]
    name = f"{_avatar_folder(account.pk)}/{digest}.{AVATAR_TYPES[sniffed]}"
    if not default_storage.exists(name):
        name = default_storage.save(name, ContentFile(fetched.content))
    url = default_storage.url(name)
    if url.startswith("/"):
        url = f"{settings.LAYERS_PUBLIC_URL}{url}"
    # Shown only while the grant the picture was read with is the account's: one UPDATE, so that it waits for a
    # disconnect or a data deletion request committing now and is then judged on what they left. A data
    # deletion request (platform_user_data_delete) leaves the account reauth_required with avatar_url "" and a
    # new token_version, and already ran its avatar deletion: a test of "not disconnected" alone put the
    # picture back on the account after the person was told it was deleted.
    shown = SocialAccount.objects.filter(
        pk=account_id, status=SocialAccount.Status.CONNECTED, token_version=version, avatar_url=""
    ).update(avatar_url=url)
    if shown:
        return url
    now = SocialAccount.objects.filter(pk=account_id).values("status", "avatar_url").first()
    if now is None or now["status"] != SocialAccount.Status.CONNECTED:
        # Disconnected, erased or sent to reauth while the picture was fetched: the disconnect's or the
        # erasure's deletion may have run before this copy was written. Deleted again (it keeps a copy an
        # account still shows).
        _avatars_delete_queued(account_id=account_id)
        return None
    if now["avatar_url"]:
        return now["avatar_url"]  # another copy of it won
    # Still connected, with a token stored since (a refresh, a reconnect): no deletion, so the picture is
    # copied again with that token when the task retries (FetchFailed: an expected failure, no traceback).
    raise FetchFailed("the account's token changed while its picture was copied; copying again")


def _avatar_folder(account_id: str) -> str:
    return f"avatars/{account_id}"


def avatars_delete(*, account_id: str) -> int:
    """Delete the copies of the account's avatar from media storage (local disk or S3); how many. Idempotent.
    Run after a disconnect, or a data deletion request that blanked the account's avatarUrl: the customer's
    picture was served to anyone at its URL, forever. An account still showing its copy keeps it (a message
    queued by hand, or from another environment): its avatarUrl points there."""
    from django.core.files.storage import default_storage

    showing = SocialAccount.objects.filter(pk=account_id).exclude(status=SocialAccount.Status.DISCONNECTED)
    if showing.exclude(avatar_url="").exists():
        return 0
    folder = _avatar_folder(account_id)
    try:
        _, files = default_storage.listdir(folder)
    except FileNotFoundError:
        return 0
    for name in files:
        default_storage.delete(f"{folder}/{name}")
    return len(files)


def _avatars_delete_queued(*, account_id: str) -> None:
    """Queue the deletion of the avatar copies of an account that no longer shows them: just disconnected, erased
    by a data deletion request, or out of connected while a copy was being made (the task retries a media storage
    that refuses or does not answer); never raises. Not done in the partner's DELETE itself, which waited on the
    bucket and gave up at its first refusal. With the broker refusing the message, deleted at once instead: no
    tick would find it later (nothing on the account says that its copies are left)."""
    from accounts.tasks import social_account_avatars_delete

    try:
        social_account_avatars_delete.delay(account_id)
    except Exception:  # noqa: BLE001 - kombu's OperationalError, a timeout, a refused connection: all the same here
        log.warning("could not queue the deletion of the avatar copies of %s; deleting them now", account_id)
        try:
            avatars_delete(account_id=account_id)
        except Exception as exc:  # noqa: BLE001 - logged with what ops need to finish the deletion by hand
            avatars_not_deleted(account_id=account_id, exc=exc)


def avatars_not_deleted(*, account_id: str, exc: Exception) -> None:
    """The error ops act on when media storage (a bucket refusing the credentials, gone, down or not answering)
    would not delete an account's avatar copies: the customer's picture is still served to anyone at its old
    URL. It names the account and the folder to delete, where Django's own line for a failing on_commit
    callback named neither."""
    log.error(
        "avatar copies of %s not deleted from media storage, still served at their URL: delete %s/ (%s: %s)",
        account_id,
        _avatar_folder(account_id),
        type(exc).__name__,
        exc,
        exc_info=exc,
    )


def onboarding_step_complete(*, organization_id: str, key: str, social_account_id: str | None = None) -> bool:
    """Tick an onboarding checklist step (`tiktok.connected` …) once. Returns whether this call ticked it."""
    try:
        with transaction.atomic():
            _, created = OnboardingStep.objects.get_or_create(
                organization_id=organization_id, key=key, defaults={"social_account_id": social_account_id}
            )
    except IntegrityError:
        return False
    return created


def social_account_fan_out(*, account_id: str, with_traceback: bool = True) -> list[str]:
    """Run every post-connect step; each is idempotent and isolated (one failing does not stop the others).
    Returns the names of the steps that failed, for the task to retry. A leased account (queued by its
    assignment) runs them all but the onboarding step. `with_traceback`: an unexpected error's traceback is
    logged (the task asks for it on its first run and its last, not on each of its retries)."""
    from scheduling import services as scheduling

    account = SocialAccount.objects.select_related("project").filter(pk=account_id).first()
    if account is None:  # a message sent by hand, from another environment, or left after a restore
        return []
    if not account.is_live:
        return []
    steps = {
        "avatar": lambda: social_account_rehost_avatar(account_id=account_id),
        "layers": lambda: scheduling.layers_provision_for_account(account=account),
        "content_layer": lambda: scheduling.project_content_layer_ensure(project=account.project),
        "onboarding": lambda: onboarding_step_complete(
            organization_id=account.organization_id,
            key=f"{account.platform}.connected",
            social_account_id=account.pk,
        ),
    }
    if account.kind == SocialAccount.Kind.LEASED:
        # The checklist step says the organization connected its own TikTok; renting Layers' accounts is not that.
        del steps["onboarding"]
    failed = []
    for name, step in steps.items():
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - best-effort: log, keep going, retry later
            why, expected = _step_failure(exc)
            log.warning(
                "post-connect step %s failed for %s: %s",
                name,
                account_id,
                why,
                exc_info=exc if with_traceback and not expected else None,
            )
            failed.append(name)
    return failed


def _step_failure(exc: Exception) -> tuple[str, bool]:
    """What a failed post-connect step's log line says about `exc`, and whether it was expected (its words
    say it all: no traceback). Never a token: a platform error gives its code (the clients redact their
    messages, but the code is what the platform's documentation goes by), a refused fetch its words (its
    status, type or size, a host name: no URL, whose query a CDN signs). Anything else (storage, a bug): its
    type and words, and its traceback (the caller decides when)."""
    from config.netguard import FetchFailed, UnsafeURL

    if isinstance(exc, PlatformError):
        return f"{type(exc).__name__} {exc.log_code}", True
    if isinstance(exc, FetchFailed | UnsafeURL):
        return f"{type(exc).__name__}: {exc}", True
    return f"{type(exc).__name__}: {exc}", False


# --- Off-boarding ------------------------------------------------------------------------------------

OFFBOARDED_CAUSE = "organization off-boarded"


def wallet_left(balance_cents: int, *, show_balance: bool) -> str:
    """The wallet an off-boarding leaves, as the admin and the command say it: its balance, or for staff who
    may not view wallets where finance reads it."""
    from billing.reports import usd_display

    if not show_balance:
        return "Wallet and ledger kept (the balance is on its wallet page, for staff who may view wallets)."
    return f"Wallet balance left: {usd_display(balance_cents)} (nothing refunded: finance decides)."


@dataclass
class OffboardResult:
    """What organization_offboard did (or, for a dry run, would do) to one organization."""

    organization: Organization
    dry_run: bool
    already_offboarded: bool
    api_keys_revoked: int = 0
    posts_canceled: int = 0
    webhook_endpoints_disabled: int = 0
    oauth_sessions_expired: int = 0
    lease_requests_rejected: int = 0
    # Requests whose assignment a worker is running now (provisioning): its accounts may be bound after this
    # run; running the off-boarding again once it ends releases them.
    lease_requests_underway: list[str] = field(default_factory=list)
    accounts_disconnected: list[str] = field(default_factory=list)
    leases_released: int = 0
    # Connected accounts beyond the caller's platform-call budget: a worker revokes them (accounts.tasks).
    accounts_queued: list[str] = field(default_factory=list)
    # The broker refused their revoke: still connected; run the off-boarding again.
    accounts_left: list[str] = field(default_factory=list)
    platform_calls: int = 0
    # The revokes this call made itself (against its caller's REVOKES_IN_REQUEST).
    revokes: int = 0
    wallet_balance_cents: int = 0

    @property
    def complete(self) -> bool:
        # A lease assignment underway is not left to do: its bind sees the mark and leases nothing
        # (leasing.services._refuse_if_offboarded), its accounts going back to the pool.
        return not self.accounts_left

    def report(self, *, show_balance: bool = True) -> str:
        """What was done, as the admin and the command say it. The balance only to those who may view wallets
        (`show_balance`): off-boarding needs the organization's change permission, not finance's."""
        text = (
            f"{'would be ' if self.dry_run else ''}off-boarded: {self.api_keys_revoked} API key(s) revoked, "
            f"{self.webhook_endpoints_disabled} webhook endpoint(s) disabled, {self.posts_canceled} queued post(s) "
            f"canceled, {len(self.accounts_disconnected)} account(s) disconnected ({self.leases_released} lease(s) "
            f"released), {self.lease_requests_rejected} lease request(s) rejected. "
            f"{wallet_left(self.wallet_balance_cents, show_balance=show_balance)}"
        )
        if self.accounts_queued:
            text += f" A worker disconnects {len(self.accounts_queued)} more account(s) in a moment."
        if self.accounts_left:
            text += f" {len(self.accounts_left)} account(s) still connected (the task queue refused): off-board again."
        if self.lease_requests_underway:
            text += (
                f" Lease assignment underway ({', '.join(self.lease_requests_underway)}): it assigns nothing now "
                "(it fails, its accounts going back to the pool)."
            )
        return text


@dataclass
class _OffboardRows:
    """The rows an off-boarding acts on, of some organizations: its run and its dry run read the same ones."""

    keys: QuerySet
    endpoints: QuerySet
    links: QuerySet
    open_requests: QuerySet
    underway: QuerySet
    posts: QuerySet
    live: QuerySet

    @classmethod
    def of(cls, organization_ids: list[str]) -> "_OffboardRows":
        from accounts.webhooks.models import WebhookEndpoint
        from leasing.models import LeaseRequest
        from scheduling.models import ScheduledPost

        ids = organization_ids
        requests = LeaseRequest.objects.filter(organization_id__in=ids)
        return cls(
            keys=ApiKey.objects.filter(organization_id__in=ids, revoked_at__isnull=True),
            endpoints=WebhookEndpoint.objects.filter(
                organization_id__in=ids, deleted_at__isnull=True, status=WebhookEndpoint.Status.ACTIVE
            ),
            links=OAuthSession.objects.filter(
                organization_id__in=ids, status=OAuthSession.Status.PENDING, expires_at__gt=timezone.now()
            ),
            open_requests=requests.filter(status__in=LeaseRequest.OPEN),
            underway=requests.filter(status=LeaseRequest.Status.PROVISIONING),
            posts=ScheduledPost.objects.filter(organization_id__in=ids, status=ScheduledPost.Status.QUEUED),
            live=SocialAccount.objects.filter(organization_id__in=ids).exclude(
                status=SocialAccount.Status.DISCONNECTED
            ),
        )


def organization_offboard_plans(*, organizations: list[Organization]) -> list[OffboardResult]:
    """What organization_offboard would do to each of `organizations` (its dry run), in their order. One
    query per kind of thing for all of them: the admin's confirmation page shows up to 100 organizations, and
    a dry run each read about ten queries per row."""
    from billing.models import Wallet
    from leasing.models import Lease

    ids = [organization.pk for organization in organizations]
    rows = _OffboardRows.of(ids)

    def counted(rows, by="organization_id") -> dict[str, int]:
        return dict(rows.order_by().values(by).annotate(n=Count("pk")).values_list(by, "n"))

    def listed(rows) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for organization_id, pk in rows.order_by("pk").values_list("organization_id", "pk"):
            out.setdefault(organization_id, []).append(pk)
        return out

    keys, endpoints, links = counted(rows.keys), counted(rows.endpoints), counted(rows.links)
    open_requests, underway = counted(rows.open_requests), listed(rows.underway)
    posts, live = counted(rows.posts), listed(rows.live)
    leases = counted(
        Lease.objects.filter(social_account__organization_id__in=ids, released_at__isnull=True),
        by="social_account__organization_id",
    )
    balances = dict(Wallet.objects.filter(organization_id__in=ids).values_list("organization_id", "balance_cents"))
    return [
        OffboardResult(
            organization=organization,
            dry_run=True,
            already_offboarded=organization.offboarded_at is not None,
            api_keys_revoked=keys.get(organization.pk, 0),
            webhook_endpoints_disabled=endpoints.get(organization.pk, 0),
            oauth_sessions_expired=links.get(organization.pk, 0),
            lease_requests_rejected=open_requests.get(organization.pk, 0),
            lease_requests_underway=underway.get(organization.pk, []),
            posts_canceled=posts.get(organization.pk, 0),
            accounts_disconnected=live.get(organization.pk, []),
            leases_released=leases.get(organization.pk, 0),
            wallet_balance_cents=balances.get(organization.pk, 0),  # a wallet not opened yet is at 0
        )
        for organization in organizations
    ]


def organization_offboard(
    *,
    organization_id: str,
    actor=None,
    by: str = "",
    dry_run: bool = False,
    platform_calls: int | None = None,
    revokes: int | None = None,
) -> OffboardResult:
    """Off-board a partner that churned or was terminated: its API keys revoked, its webhook endpoints
    disabled, its pending OAuth links expired, its open lease requests rejected, every queued post canceled,
    and every account disconnected through social_account_revoke (the grant revoked at the platform
    best-effort, tokens wiped; a leased one released: no further period charged, the current one not
    refunded). The organization is marked off-boarded (when, by whom) and no key can be issued for it again
    (api_key_create). Its wallet and ledger are not touched: the balance is reported for finance to decide
    a refund.

    Order: the partner's access goes first (keys, endpoints, links, in one transaction with the mark), so
    nothing the partner does can add work while the rest runs, and nothing more is sent to it; then its
    posts, which must not publish while an account waits for a worker's revoke; then its accounts.

    Safe to run again, after a crash or to finish what a first run left (a revoke the broker refused, an
    assignment that was underway): each step finds what is still to do; the first off-boarding's time and
    actor are kept. `platform_calls`: the most platform calls this call may make (a web request's budget,
    WEB_REQUEST_PLATFORM_CALLS) and `revokes` the most accounts it may revoke (REVOKES_IN_REQUEST when a budget
    of calls is given); the revokes beyond them are handed to a worker, as the admin's bulk revoke does. None:
    no limit (the command). `dry_run`: change nothing, report what would be done. `actor`: the
    staff member; `by`: who acted when no staff member did (the command's "management command")."""
    from accounts.webhooks.models import WebhookEndpoint
    from accounts.webhooks.services import endpoint_disable
    from billing.selectors import wallet_get
    from leasing.services import LeaseError, lease_request_reject
    from scheduling.models import CancelReason
    from scheduling.services import posts_cancel_for_organization

    if dry_run:
        return organization_offboard_plans(organizations=[Organization.objects.get(pk=organization_id)])[0]
    who = staff_source(actor) if actor is not None else by or "Layers"
    organization = Organization.objects.get(pk=organization_id)
    result = OffboardResult(
        organization=organization, dry_run=dry_run, already_offboarded=organization.offboarded_at is not None
    )
    rows = _OffboardRows.of([organization_id])
    keys, endpoints, links, live = rows.keys, rows.endpoints, rows.links, rows.live

    with transaction.atomic():
        # The organization's row lock: api_key_issue takes it too, so a key being issued now either commits
        # first (and is revoked here) or sees the mark and is refused; so do the partner's writes that passed
        # the key check just before (partner_write_refused_if_offboarded), whose rows the steps below then find.
        organization = Organization.objects.select_for_update().get(pk=organization_id)
        if organization.offboarded_at is None:
            organization.offboarded_at = timezone.now()
            organization.offboarded_by = shorten(who, 200)
            organization.save(update_fields=["offboarded_at", "offboarded_by"])
        result.organization = organization
        # The keys locked in key order first, as staff's bulk revoke (api_keys_revoke) locks them: updated in the
        # plan's order, each could hold a key the other waited for, and PostgreSQL ended one (a deadlock: a 500).
        list(keys.select_for_update().order_by("pk").values_list("pk", flat=True))
        result.api_keys_revoked = keys.update(revoked_at=timezone.now())
        # A link handed to a customer before now answers `expired` (the callback's own check), and binds nothing.
        result.oauth_sessions_expired = links.update(expires_at=timezone.now())
        for endpoint_id in endpoints.values_list("pk", flat=True):
            endpoint_disable(endpoint_id=endpoint_id, reason=WebhookEndpoint.DisabledReason.STAFF, actor=who)
            result.webhook_endpoints_disabled += 1
    # Read after the mark: a reservation (leasing.services._reserve, which takes the organization's row too)
    # committed before it is provisioning now, and one after it was refused. Read before, one committing in
    # between was reported nowhere, and its worker leased an account nothing would release. Its bind, later,
    # sees the mark and leases nothing.
    result.lease_requests_underway = list(rows.underway.values_list("pk", flat=True))
    for request_id in rows.open_requests.values_list("pk", flat=True):
        try:
            lease_request_reject(
                request_id=request_id,
                reason="The organization was off-boarded: Layers assigns it no accounts.",
                actor=actor,
            )
            result.lease_requests_rejected += 1
        except LeaseError:
            pass  # decided meanwhile (assigned: its leases are released below)
    with transaction.atomic():
        # Before the accounts: a post must not publish while its account waits for a worker's revoke.
        result.posts_canceled = posts_cancel_for_organization(
            organization_id=organization_id, cause=OFFBOARDED_CAUSE, reason=CancelReason.OFFBOARDED, by=who
        )
    if revokes is None and platform_calls is not None:
        revokes = REVOKES_IN_REQUEST  # a web request's: its own bound on the revokes it makes
    budget = RevokeBudget(calls=platform_calls, rows=revokes)
    # A batch of accounts at a time: a partner with 50,000 accounts read at once held them all, tokens and all,
    # in the web process of the admin's off-boarding. Past the budget, the rest go to a worker in a few tasks.
    last = None
    later = False
    for accounts in row_batches(live):
        for account in accounts:
            revoked = budget.revoke(account, actor=actor)
            if revoked == REVOKE_LATER:
                later = True
                break
            last = account.pk
            if not revoked.revoked:
                # Disconnected since `live` was read, by a colleague's revoke or the partner's DELETE (its status
                # history names them): not this off-boarding's doing, so not in its "N account(s) disconnected",
                # which the colleague's own page and history already count.
                continue
            result.accounts_disconnected.append(account.pk)
            result.posts_canceled += revoked.canceled_scheduled_posts
            result.leases_released += int(revoked.released)
        if later:
            break
    if later:
        from accounts.tasks import social_accounts_revoke_offboarded

        result.accounts_queued, result.accounts_left = budget.hand_off(
            live, after=last, task=social_accounts_revoke_offboarded, args=(getattr(actor, "pk", None),)
        )
    result.revokes = budget.made
    result.platform_calls = budget.spent
    result.wallet_balance_cents = wallet_get(organization=organization).balance_cents
    log.info(
        "organization %s off-boarded by %s: %d keys revoked, %d accounts disconnected, %d queued, %d left",
        organization_id,
        who,
        result.api_keys_revoked,
        len(result.accounts_disconnected),
        len(result.accounts_queued),
        len(result.accounts_left),
    )
    return result
