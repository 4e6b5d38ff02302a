"""Cross-organization matrix, generated from the URL patterns so that a new route cannot be forgotten:
every /v1 route with path parameters, called with another organization's ids (alone or mixed with the
caller's own) and every method it allows, answers 404 NOT_FOUND and changes nothing; every list, called
on the caller's own objects, shows none of another organization's rows."""

import json

import pytest

from tests.conftest import assert_error
from tests.hardening import figures
from tests.hardening.routes import combinations, owned_ids, snapshot, v1_routes
from tests.hardening.world import build
from tests.leasing.helpers import NICHE
from tests.scheduling.publish_helpers import iso, later

# Which fixture object a path parameter names, by the converter of its type; a parameter whose name says
# which kind of object of that type it takes comes first (leased-accounts/<sa:socialAccountId> takes a
# leased account). A route whose parameter type is in neither fails the matrix: add its object to
# tests/hardening/world.py and its type here.
BY_CONVERTER = {
    "prj": "projectId",
    "sa": "accountId",
    "st": "state",
    "cnt": "containerId",
    "sp": "postId",
    "lreq": "requestId",
    "we": "endpointId",
}
BY_PARAMETER = {("sa", "socialAccountId"): "socialAccountId"}


def fixture_key(converter: str, name: str) -> str:
    key = BY_PARAMETER.get((converter, name)) or BY_CONVERTER.get(converter)
    assert key is not None, (
        f"no fixture object for <{converter}:{name}>: add one to tests/hardening/world.py and map it here"
    )
    return key


def bodies(caller, path_ids: dict) -> dict:
    """A body that would be valid from the caller's side for every route that takes one, by URL name:
    the only thing wrong with the request is the foreign id in its path. A POST route missing here fails."""
    return {
        "oauth-url": {"platform": "tiktok", "returnUrl": "https://globex.test/back"},
        "reauth-url": {"socialAccountId": caller.ids["accountId"], "returnUrl": "https://globex.test/back"},
        "content-create": {"mediaType": "image", "mediaUrls": ["https://cdn.globex.test/a.jpg"], "caption": "x"},
        "content-schedule": {
            "targets": [{"socialAccountId": caller.ids["accountId"], "mode": "publish"}],
            "scheduledFor": iso(later(hours=1)),
        },
        "lease-request-create": {"projectId": path_ids.get("projectId"), "count": 1, "niche": NICHE},
        "webhook-endpoint-rotate-secret": None,
        "webhook-endpoint-detail": {"events": ["scheduled_post.failed"], "enabled": False},  # PATCH
    }


@pytest.fixture
def worlds(owner, outsider):
    return build(owner, handle="acme.owner", publish=True), build(outsider, handle="globex.user", publish=True)


def send(client, method: str, path: str, body):
    if method in ("post", "put", "patch"):
        return getattr(client, method)(path, body if body is not None else {}, format="json")
    return getattr(client, method)(path)


def test_every_route_with_another_organizations_ids_is_404_and_changes_nothing(worlds, owner, outsider):
    mine, theirs = worlds  # the owner's objects, the outsider's own
    routes = [route for route in v1_routes() if route.params]
    assert len(routes) >= 12, [r.route for r in routes]
    before = snapshot(owner.org)
    before_outsider = snapshot(outsider.org)
    tried = []
    for route in routes:
        for method in route.methods:
            for foreign in combinations(route):
                path_ids = {
                    name: (mine if foreign[name] else theirs).ids[fixture_key(converter, name)]
                    for converter, name in route.params
                }
                path = route.path(path_ids)
                body = None
                if method in ("post", "put", "patch"):
                    known = bodies(theirs, path_ids)
                    assert route.name in known, f"{method.upper()} {route.route}: add a minimal body to bodies()"
                    body = known[route.name]
                response = send(outsider.client, method, path, body)
                assert_error(response, 404, "NOT_FOUND")
                assert snapshot(owner.org) == before, f"{method.upper()} {path} changed the owner's rows"
                tried.append((method, route.route, tuple(sorted(foreign.items()))))
    assert snapshot(outsider.org) == before_outsider, "a refused request changed the caller's own rows"
    route_methods = len({(m, r) for m, r, _ in tried})
    figures.record(
        "cross_org",
        test=__name__.replace(".", "/") + ".py",
        cases=len(tried),
        failures=0,
        line=f"cross-organization matrix: {len(routes)} routes with ids, {route_methods} route×method, "
        f"{len(tried)} requests, all 404 with no side effect",
        routes=len(routes),
        routeMethods=route_methods,
        requests=len(tried),
    )


def test_lists_show_none_of_another_organizations_rows(worlds, owner, outsider):
    mine, theirs = worlds
    foreign_ids = owned_ids(owner.org)
    assert mine.ids["accountId"] in foreign_ids and owner.org.id in foreign_ids
    lists = 0
    for route in v1_routes():
        if "get" not in route.methods:
            continue
        own = {name: theirs.ids[fixture_key(converter, name)] for converter, name in route.params}
        response = outsider.client.get(route.path(own))
        assert response.status_code == 200, (route.route, response.status_code, response.content[:300])
        body = response.json()
        if not (isinstance(body, dict) and isinstance(body.get("data"), list)):
            continue
        lists += 1
        assert body["data"], f"{route.route}: the outsider's own list is empty, so the check would prove nothing"
        text = json.dumps(body)
        leaked = sorted(i for i in foreign_ids if i in text)
        assert not leaked, f"GET {route.route} shows another organization's ids: {leaked}"
    assert lists >= 9, lists  # projects, events, accounts, posts, scheduled posts, leases, requests, hooks, ledger


def test_another_organizations_ids_in_a_body_or_filter_are_refused_and_change_nothing(worlds, owner, outsider):
    mine, theirs = worlds
    before = snapshot(owner.org)
    own_project = theirs.ids["projectId"]
    c = outsider.client

    reauth = c.post(
        f"/v1/projects/{own_project}/social/reauth-url", {"socialAccountId": mine.ids["accountId"]}, format="json"
    )
    assert list(assert_error(reauth, 422, "VALIDATION")["details"]["fields"]) == ["socialAccountId"]
    schedule = c.post(
        f"/v1/content/{theirs.ids['containerId']}/schedule",
        {
            "targets": [{"socialAccountId": mine.ids["accountId"], "mode": "publish"}],
            "scheduledFor": iso(later(hours=1)),
        },
        format="json",
    )
    assert list(assert_error(schedule, 422, "VALIDATION")["details"]["fields"]) == ["targets.0.socialAccountId"]
    lease = c.post(
        f"/v1/projects/{own_project}/leased-accounts/request",
        {"projectId": mine.ids["projectId"], "count": 1, "niche": NICHE},
        format="json",
    )
    assert list(assert_error(lease, 422, "VALIDATION")["details"]["fields"]) == ["projectId"]
    filtered = c.get(f"/v1/projects/{own_project}/scheduled-posts", {"socialAccountId": mine.ids["accountId"]})
    assert list(assert_error(filtered, 422, "VALIDATION")["details"]["fields"]) == ["socialAccountId"]

    assert snapshot(owner.org) == before
