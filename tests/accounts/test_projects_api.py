"""GET /v1/projects and /v1/projects/{projectId}: a key sees every project of its organization and
nothing of any other (a foreign id is 404, never 403)."""

import re

from tests.conftest import assert_error


def test_list_shows_only_the_callers_projects(owner, sibling, outsider):
    body = owner.client.get("/v1/projects").json()

    ids = [p["id"] for p in body["data"]]
    assert sorted(ids) == sorted(p.id for p in owner.projects)
    assert len(ids) == 2
    assert body["nextCursor"] is None
    assert not {sibling.project.id, outsider.project.id} & set(ids)


def test_list_is_newest_first(owner):
    ids = [p["id"] for p in owner.client.get("/v1/projects").json()["data"]]
    assert ids == [owner.projects[1].id, owner.projects[0].id]


def test_each_organization_sees_its_own(owner, sibling, outsider):
    for tenant in (sibling, outsider):
        ids = [p["id"] for p in tenant.client.get("/v1/projects").json()["data"]]
        assert ids == [tenant.project.id]


def test_detail_shows_the_project(owner):
    project = owner.projects[1]

    body = owner.client.get(f"/v1/projects/{project.id}").json()

    assert body == {
        "id": project.id,
        "organizationId": owner.org.id,
        "name": project.name,
        "createdAt": body["createdAt"],
    }
    assert re.fullmatch(r"prj_[0-9a-f-]{36}", body["id"])
    assert body["createdAt"].endswith("Z")


def test_detail_of_another_organizations_project_is_404(owner, sibling, outsider):
    for foreign in (sibling.project, outsider.project):
        assert_error(owner.client.get(f"/v1/projects/{foreign.id}"), 404, "NOT_FOUND")
    # and the other way around
    assert_error(sibling.client.get(f"/v1/projects/{owner.project.id}"), 404, "NOT_FOUND")


def test_foreign_and_unknown_ids_answer_identically(owner, outsider):
    foreign = owner.client.get(f"/v1/projects/{outsider.project.id}")
    unknown = owner.client.get("/v1/projects/prj_00000000-0000-0000-0000-000000000000")
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json() == unknown.json()


def test_projects_need_a_key(anon, owner):
    assert_error(anon.get("/v1/projects"), 401, "UNAUTHENTICATED")
    assert_error(anon.get(f"/v1/projects/{owner.project.id}"), 401, "UNAUTHENTICATED")
