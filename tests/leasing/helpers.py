import io
import json

from django.core.management import call_command

NICHE = {"vertical": "fitness", "language": "en-US", "geo": ["US", "CA"], "audience": "gym-goers 18-30"}


def command(name: str, *args) -> dict:
    out = io.StringIO()
    call_command(name, *args, "--json", stdout=out)
    return json.loads(out.getvalue())


def add_pool(count: int = 1, *, vertical="fitness", language="en-US", geos=("US",), price=4900) -> list[str]:
    args = ["--count", str(count), "--vertical", vertical, "--language", language, "--price-cents", str(price)]
    for geo in geos:
        args += ["--geo", geo]
    return command("add_pool_accounts", *args)["ids"]


def request_accounts(tenant, count: int = 1, project=None, **niche) -> dict:
    project = project or tenant.project
    body = {"projectId": project.id, "count": count, "niche": {**NICHE, **niche}, "note": "launch in May"}
    response = tenant.client.post(f"/v1/projects/{project.id}/leased-accounts/request", body, format="json")
    assert response.status_code == 202, response.content
    return response.json()


def get_request(tenant, request_id: str, project=None) -> dict:
    project = project or tenant.project
    return tenant.client.get(f"/v1/projects/{project.id}/leased-accounts/requests/{request_id}").json()
