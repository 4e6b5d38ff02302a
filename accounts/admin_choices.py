"""How the admin names an organization or a project where staff pick one (a select, a search-as-you-type
list).

`Project.__str__` is its bare name, and partners name their projects alike: two organizations' "Production"
were two identical options on the managed-provider add page, where the pick is read-only once saved and a
wrong one sends the other organization's managed posts to this provider; two partners called "Acme" were
two identical options where a key is issued or money recorded. A choice says whose it is and its id
(`Production — Acme (prj_…)`, `Acme (org_…)`), which staff can check against what the partner quoted.
Elsewhere (lists, messages) the bare names stay: the columns beside them say the organization."""

from django import forms
from django.db.models import QuerySet

from accounts.models import Organization, Project


def organization_label(organization: Organization) -> str:
    return f"{organization.name} ({organization.pk})"


def project_label(project: Project) -> str:
    return f"{project.name} — {project.organization.name} ({project.pk})"


LABELS = {Organization: organization_label, Project: project_label}


def labelled_queryset(rows: QuerySet) -> QuerySet:
    """`rows` (organizations or projects) in the order staff look for them, with what their labels read."""
    if rows.model is Project:
        return rows.select_related("organization").order_by("organization__name", "name", "pk")
    if rows.model is Organization:
        return rows.order_by("name", "pk")
    return rows


def label_choices(field: forms.Field | None) -> forms.Field | None:
    """A choice of organizations or projects (`field`) whose options say whose they are; any other field
    as it is."""
    label = LABELS.get(getattr(getattr(field, "queryset", None), "model", None))
    if label is not None:
        field.queryset = labelled_queryset(field.queryset)
        field.label_from_instance = label
    return field


class LabelledChoicesMixin:
    """Every admin's form: an organization or project to pick is labelled as above (BackOfficeAdminSite
    gives it to every registered admin)."""

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        return label_choices(super().formfield_for_foreignkey(db_field, request, **kwargs))
