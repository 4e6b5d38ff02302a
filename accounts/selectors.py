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


def social_account_list(*, organization, project, platform=None, kind=None, status=None):
    """Live accounts of a project (disconnected accounts never appear in lists)."""
    from accounts.models import SocialAccount

    qs = (
        SocialAccount.objects.filter(organization=organization, project=project)
        .exclude(status=SocialAccount.Status.DISCONNECTED)
        .select_related("identity")
        .prefetch_related("layers")
    )
    if platform:
        qs = qs.filter(platform=platform)
    if kind:
        qs = qs.filter(kind=kind)
    if status:
        qs = qs.filter(status=status)
    return qs


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
