"""Reads for the partner API, always scoped to the caller's organization: a foreign id is a 404."""

from accounts.models import Event, Project
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


# What a listed account's representation reads (and the pagination's created_at): tokens and token
# bookkeeping are left in the table, which also halves the cost of reading a page.
LIST_FIELDS = (
    "id",
    "project_id",
    "platform",
    "kind",
    "status",
    "avatar_url",
    "connected_at",
    "reauth_required_at",
    "disconnected_at",
    "created_at",
    "identity",
    "identity__handle",
    "identity__display_name",
)


def social_account_list(*, organization, project_id: str, platform=None, kind=None, status=None):
    """Live accounts of a project (disconnected accounts never appear in lists). Pass the page through
    with_layer_refs() before serializing it."""
    from accounts.models import SocialAccount

    qs = (
        SocialAccount.objects.filter(organization=organization, project_id=project_id)
        .exclude(status=SocialAccount.Status.DISCONNECTED)
        .select_related("identity")
        .only(*LIST_FIELDS)
    )
    if platform:
        qs = qs.filter(platform=platform)
    if kind:
        qs = qs.filter(kind=kind)
    if status:
        qs = qs.filter(status=status)
    return qs


def with_layer_refs(accounts: list) -> list:
    """Set `layer_refs` ({"id", "kind", "name"} per layer, oldest first) on each account of a page, from one
    query of plain values: a prefetch would build a model instance per layer (four per account)."""
    from accounts.models import SocialAccount

    refs: dict[str, list[dict]] = {account.pk: [] for account in accounts}
    if refs:
        layer_model = SocialAccount._meta.get_field("layers").related_model  # scheduling's Layer
        rows = (
            layer_model.objects.filter(social_account_id__in=refs)
            .order_by("created_at", "pk")
            .values_list("social_account_id", "pk", "kind", "name")
        )
        for account_id, layer_id, kind, name in rows:
            refs[account_id].append({"id": layer_id, "kind": kind, "name": name})
    for account in accounts:
        account.layer_refs = refs[account.pk]
    return accounts


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
    from accounts.models import OAuthSession

    session = OAuthSession.objects.filter(organization=organization, pk=state).first()
    if session is None:
        raise NotFound()
    return session


def social_account_in_project(*, organization, project, account_id: str):
    """The account `account_id` if it is bound to `project` (any status), else None (for body fields)."""
    from accounts.models import SocialAccount

    if not is_valid("sa", account_id):
        return None
    return SocialAccount.objects.filter(organization=organization, project=project, pk=account_id).first()
