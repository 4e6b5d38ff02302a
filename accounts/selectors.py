"""Reads for the partner API, always scoped to the caller's organization: a foreign id is a 404."""

from datetime import UTC

from django.db import connection, transaction
from django.utils import timezone

from accounts.models import Event, OAuthSession, Project
from config.api.errors import NotFound
from config.api.ids import is_valid


def project_list(*, organization):
    return Project.objects.filter(organization=organization)


def project_get(*, organization, project_id: str) -> Project:
    project = Project.objects.filter(organization=organization, pk=project_id).first()
    if project is None:
        raise NotFound()
    return project


def event_list(*, organization, type: str | None = None):
    qs = Event.objects.filter(organization=organization)
    if type:
        qs = qs.filter(type=type)
    return qs


# The page of accounts is the API's most frequent read (partner dashboards poll it), so it is two
# hand-written statements, the accounts with their identities, then their layers, read as plain tuples.
# Built with the ORM it cost two model instances per row and most of its time compiling SQL
# (BENCHMARKS.md, bench_api). The SQL is portable (PostgreSQL, and SQLite for `make run`).
_ACCOUNT_PAGE_SQL = """
SELECT sa.id, sa.project_id, sa.platform, sa.kind, sa.status, pi.handle, pi.display_name, sa.avatar_url,
       sa.connected_at, sa.reauth_required_at, sa.disconnected_at, sa.created_at
  FROM accounts_socialaccount sa
  JOIN accounts_platformidentity pi ON pi.id = sa.identity_id
 WHERE sa.organization_id = %s AND sa.project_id = %s AND sa.status <> 'disconnected'{filters}
 ORDER BY sa.created_at DESC, sa.id DESC
 LIMIT %s
"""
_PAGE_LAYERS_SQL = """
SELECT social_account_id, id, kind, name FROM scheduling_layer
 WHERE social_account_id IN ({ids}) ORDER BY created_at, id
"""
_FILTER_COLUMNS = ("platform", "kind", "status")


def social_account_page(*, organization, project_id: str, limit: int, after=None, **filters) -> list:
    """Up to `limit` live accounts of a project (disconnected accounts never appear in lists), newest first,
    strictly after `after` ((created_at, id) of a cursor), as AccountRow tuples with their layers (oldest
    first). `filters`: platform, kind, status (validated by the view)."""
    from accounts.serializers import AccountRow

    where, params = [], [organization.pk, project_id]
    for column in _FILTER_COLUMNS:
        if filters.get(column):
            where.append(f" AND sa.{column} = %s")  # a column of this fixed list; the value is a parameter
            params.append(filters[column])
    if after is not None:
        where.append(" AND (sa.created_at < %s OR (sa.created_at = %s AND sa.id < %s))")
        created = connection.ops.adapt_datetimefield_value(after[0])  # naive UTC on SQLite, as stored
        params += [created, created, after[1]]
    with connection.cursor() as cursor:
        cursor.execute(_ACCOUNT_PAGE_SQL.format(filters="".join(where)), [*params, limit])
        rows = cursor.fetchall()
        layers = {row[0]: [] for row in rows}
        if layers:
            cursor.execute(_PAGE_LAYERS_SQL.format(ids=", ".join(["%s"] * len(layers))), list(layers))
            for account_id, *layer in cursor.fetchall():
                layers[account_id].append(tuple(layer))
    return [AccountRow(*row[:8], *(aware_utc(value) for value in row[8:]), layers=layers[row[0]]) for row in rows]


def aware_utc(value):
    # SQLite hands timestamps back naive (they are stored in UTC); PostgreSQL's are aware already.
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def social_account_get(*, organization, account_id: str):
    """Any account of the organization, disconnected ones included (audit trail)."""
    from accounts.models import SocialAccount

    account = (
        SocialAccount.objects.filter(organization=organization, pk=account_id)
        .select_related("identity")
        .prefetch_related("layers")
        .first()
    )
    if account is None:
        raise NotFound()
    return account


def oauth_session_get(*, organization, state: str):
    """The organization's session `state` as oauth-status shows it (404 if unknown or another's).

    A pending state past its expiry reads `expired`, a final status, unless a callback claimed it: the
    callback claims under a row lock, before expiresAt, and commits a moment later, so a poll in that moment
    would read the uncommitted row (pending, expired) and then `completed`. Such a row is read again under the
    same lock, which waits for a claim being committed; still pending then, no callback can claim it any more
    (it would find expiresAt passed), and `expired` is final. Only that rare row pays for the lock."""
    sessions = OAuthSession.objects.filter(organization=organization, pk=state)
    session = sessions.first()
    if session is not None and session.status == OAuthSession.Status.PENDING and timezone.now() >= session.expires_at:
        with transaction.atomic():
            session = sessions.select_for_update().first()
    if session is None:
        raise NotFound()
    return session


def social_account_in_project(*, organization, project, account_id: str):
    """The account `account_id` if it is bound to `project` (any status), else None (for body fields)."""
    from accounts.models import SocialAccount

    if not is_valid("sa", account_id):
        return None
    return SocialAccount.objects.filter(organization=organization, project=project, pk=account_id).first()
