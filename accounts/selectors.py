"""Reads for the partner API, always scoped to the caller's organization: a foreign id is a 404."""

from accounts.models import Event, Project
from config.api.errors import NotFound


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
