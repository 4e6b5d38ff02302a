"""A list parameter sent more than once is refused, not silently read as one of its copies.

`?limit=1&limit=2` was read as `limit=2` (Django's QueryDict.get takes the last copy), so a partner whose
client appended a parameter twice got pages other than the ones it asked for and never knew."""

import re
import urllib.parse

import pytest
from django.utils import timezone

from config.api.pagination import _encode
from tests.conftest import assert_error
from tests.hardening.routes import v1_routes
from tests.hardening.world import build

LISTS = {
    route.name: route for route in v1_routes() if getattr(getattr(route.view, "get", None), "query_parameters", None)
}


def schema_path(route) -> str:
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route.route)


def two_valid_values(name: str, parameter: dict, world) -> tuple[str, str]:
    """Two values of the list parameter `name` that the list accepts one at a time."""
    if name == "limit":
        return "1", "2"
    if name == "cursor":
        now = timezone.now()
        return _encode(now, "zz_1"), _encode(now, "zz_2")
    if name == "socialAccountId":
        return world.ids["accountId"], world.ids["socialAccountId"]
    enum = parameter["schema"].get("enum")
    assert enum, f"give the test two valid values of the new filter {name!r}"
    return enum[0], enum[-1]


def query(*pairs) -> str:
    return urllib.parse.urlencode(pairs)


def test_every_list_is_covered():
    assert len(LISTS) >= 9


@pytest.mark.parametrize("name", sorted(LISTS))
def test_a_list_parameter_given_twice_is_422_naming_it(owner, name):
    route = LISTS[name]
    world = build(owner, handle="repeat.owner")
    path = route.path(world.ids)
    operation = owner.client.get("/v1/openapi.json").json()["paths"][schema_path(route)]["get"]
    documented = {p["name"]: p for p in operation["parameters"] if p["in"] == "query"}
    assert set(documented) == route.view.get.query_parameters

    for parameter, spec in sorted(documented.items()):
        first, second = two_valid_values(parameter, spec, world)
        for value in (first, second):  # each copy alone is a good request...
            assert owner.client.get(f"{path}?{query((parameter, value))}").status_code == 200, (parameter, value)
        # ...but both together ask for two things at once: refused, whether the copies differ or not.
        for copies in ((first, second), (first, first)):
            response = owner.client.get(f"{path}?{query(*((parameter, v) for v in copies))}")
            error = assert_error(response, 422, "VALIDATION")
            assert list(error["details"]["fields"]) == [parameter], (name, copies)
            assert "more than once" in error["details"]["fields"][parameter][0]


def test_every_repeated_and_unknown_parameter_is_named_at_once(owner):
    response = owner.client.get("/v1/events?limit=1&limit=2&cursor=&cursor=&limt=3&type=a&type=b")
    error = assert_error(response, 422, "VALIDATION")
    assert sorted(error["details"]["fields"]) == ["cursor", "limit", "limt", "type"]
    assert error["details"]["fields"]["limt"] == ["Unknown query parameter."]
