"""State changes for organizations, projects, API keys and the event outbox."""

import hashlib
import hmac
import secrets
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from accounts.models import ApiKey, Event, Organization, Project
from config.api.returnurl import normalize_allowlist_entry

KEY_PREFIX = "lyr_"
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
    """Create a partner organization."""
    name = name.strip()
    if not name:
        raise ValueError("An organization needs a name.")
    return Organization.objects.create(name=name)


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
        except ValueError:
            raise ValueError(f"'{entry}' is not a valid host (use host or host:port, no scheme, no path).")
        if value not in out:
            out.append(value)
    return out


def api_key_assign_secret(*, key: ApiKey) -> str:
    """Give an unsaved key its prefix and hash; returns the raw key, which is never stored."""
    key.prefix = secrets.token_hex(6)
    raw = f"{KEY_PREFIX}{key.prefix}_{secrets.token_urlsafe(32)}"
    key.key_hash = _hash(raw)
    return raw


def api_key_create(
    *, organization: Organization, return_domains, name: str = "", actor=None
) -> tuple[ApiKey, str]:
    """Issue a key. Returns (row, raw key): the raw key exists only in this return value."""
    key = ApiKey(
        organization=organization,
        name=name,
        allowed_return_domains=normalize_allowlist(return_domains),
        created_by=actor,
    )
    raw = api_key_assign_secret(key=key)
    key.save()
    return key, raw


def api_key_revoke(*, key: ApiKey) -> ApiKey:
    """Revoke a key for good; repeating is a no-op."""
    ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    key.refresh_from_db()
    return key


def api_key_authenticate(*, raw: str) -> ApiKey | None:
    """The active key matching `raw`, or None. Compares hashes in constant time."""
    if not raw.startswith(KEY_PREFIX):
        return None
    prefix = raw[len(KEY_PREFIX) :].split("_", 1)[0]
    key = (
        ApiKey.objects.select_related("organization")
        .filter(prefix=prefix, revoked_at__isnull=True)
        .only(
            "id",
            "key_hash",
            "last_used_at",
            "allowed_return_domains",
            "organization__id",
            "organization__name",
        )
        .first()
    )
    if key is None or not hmac.compare_digest(key.key_hash, _hash(raw)):
        return None
    now = timezone.now()
    if key.last_used_at is None or key.last_used_at < now - LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


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
    transaction.on_commit(lambda: _after_event_commit(event.pk))
    return event


def _after_event_commit(event_id: str) -> None:
    """Hook for delivery: the webhooks relay fans the event out once it is committed."""
