"""Every /v1 route of the real URLconf, read from the resolver (not from a list kept by hand), so a route
added tomorrow is covered by the tests that iterate over them."""

import itertools
import re
from dataclasses import dataclass

from django.apps import apps
from django.urls import URLPattern, URLResolver, get_resolver, resolve

from accounts.models import Organization

HTTP_METHODS = ("get", "post", "put", "patch", "delete")
_PARAM = re.compile(r"<(?:(?P<converter>\w+):)?(?P<name>\w+)>")
OUR_APPS = ("accounts", "webhooks", "scheduling", "leasing", "billing")


@dataclass(frozen=True)
class Route:
    route: str  # "projects/<prj:projectId>/content"
    name: str  # the URL name, e.g. "content-create"
    view: type
    params: tuple[tuple[str, str], ...]  # ((converter, name), ...)

    @property
    def methods(self) -> list[str]:
        return [m for m in HTTP_METHODS if hasattr(self.view, m)]

    def path(self, values: dict[str, str]) -> str:
        path = "/" + _PARAM.sub(lambda m: values[m.group("name")], self.route)
        assert getattr(resolve(path).func, "cls", None) is self.view, f"{path} does not resolve to {self.view}"
        return path


def v1_routes(patterns=None, prefix: str = ""):
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from v1_routes(entry.url_patterns, route)
        elif isinstance(entry, URLPattern) and route.startswith("v1/") and route != "v1/openapi.json":
            params = tuple((m.group("converter") or "str", m.group("name")) for m in _PARAM.finditer(route))
            yield Route(route=route, name=entry.name, view=entry.callback.cls, params=params)


def combinations(route: Route) -> list[dict[str, bool]]:
    """Every way to mix the owner's and the caller's own ids in the route's parameters with at least one
    of the owner's: {"projectId": True (owner's), "requestId": False (caller's own)}."""
    names = [name for _, name in route.params]
    out = []
    for flags in itertools.product((True, False), repeat=len(names)):
        if any(flags):
            out.append(dict(zip(names, flags, strict=True)))
    return out


def _organization_path(model, depth: int = 3) -> str | None:
    """The lookup from `model` to its Organization ("organization", "project__organization", …)."""
    if model is Organization:
        return "pk"
    frontier = [(model, "")]
    for _ in range(depth):
        following = []
        for current, path in frontier:
            for field in current._meta.concrete_fields:
                if not field.is_relation or field.related_model is None:
                    continue
                lookup = f"{path}{field.name}"
                if field.related_model is Organization:
                    return lookup
                following.append((field.related_model, f"{lookup}__"))
        frontier = following
    return None


def organization_models():
    """(model, lookup to its organization) for every model of our apps that belongs to an organization."""
    out = []
    for label in OUR_APPS:
        for model in apps.get_app_config(label).get_models():
            path = _organization_path(model)
            if path is not None:
                out.append((model, path))
    return out


def snapshot(organization, *, ignore=("last_used_at",)) -> dict[str, list[dict]]:
    """Every row of `organization` in every model of our apps, as values, in a stable order."""
    rows = {}
    for model, path in organization_models():
        values = model.objects.filter(**{path: organization}).order_by("pk").values()
        rows[model._meta.label] = [{k: v for k, v in row.items() if k not in ignore} for row in values]
    return rows


def owned_ids(organization) -> set[str]:
    """Every public id (string primary key: prj_…, sa_…, le_…, org_…) of the organization's rows."""
    out = set()
    for model, path in organization_models():
        out.update(pk for pk in model.objects.filter(**{path: organization}).values_list("pk", flat=True))
    return {pk for pk in out if isinstance(pk, str)}
