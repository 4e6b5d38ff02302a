"""The management commands of API.md: with --json each prints exactly one JSON object on stdout."""

import io
import json

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.models import ApiKey, Organization, Project
from tests.conftest import assert_error


def run_json(*args) -> dict:
    """Run a command with --json; its stdout must be one JSON object and nothing else."""
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, "--json", stdout=out, stderr=err)
    text = out.getvalue()
    assert text.count("\n") <= 1 and text.strip().startswith("{")
    result = json.loads(text)  # raises on anything but exactly one JSON document
    assert isinstance(result, dict)
    return result


def client_with(raw_key: str) -> APIClient:
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return client


def test_create_org_prints_its_id(db):
    result = run_json("create_org", "Initech")
    assert set(result) == {"id"}
    assert Organization.objects.get(pk=result["id"]).name == "Initech"


def test_create_org_without_json_prints_a_sentence(db):
    out = io.StringIO()
    call_command("create_org", "Initech", stdout=out)
    org = Organization.objects.get()
    assert org.id in out.getvalue() and "{" not in out.getvalue()


def test_create_org_with_a_blank_name_fails(db):
    with pytest.raises(CommandError):
        call_command("create_org", "   ", "--json", stdout=io.StringIO())
    assert not Organization.objects.exists()


def test_create_project_prints_its_id(owner):
    result = run_json("create_project", "--org", owner.org.id, "Mobile app")
    assert set(result) == {"id"}
    project = Project.objects.get(pk=result["id"])
    assert project.organization_id == owner.org.id and project.name == "Mobile app"


@pytest.mark.parametrize("org_id", ["org_00000000000000000000000000000000", "nonsense", "org_\x00"])
def test_commands_with_an_unknown_org_fail(db, org_id):
    with pytest.raises(CommandError):
        call_command("create_project", "--org", org_id, "x", "--json", stdout=io.StringIO())
    with pytest.raises(CommandError):
        call_command("create_api_key", "--org", org_id, "--return-domain", "a.test", "--json", stdout=io.StringIO())
    assert not Project.objects.exists() and not ApiKey.objects.exists()


def test_create_api_key_prints_a_key_that_sees_only_its_organization(owner, outsider):
    result = run_json(
        "create_api_key",
        "--org",
        outsider.org.id,
        "--return-domain",
        "App.Globex.test",
        "--return-domain",
        "x.test:8443",
    )

    assert set(result) == {"id", "key"}
    row = ApiKey.objects.get(pk=result["id"])
    assert row.organization_id == outsider.org.id
    assert row.allowed_return_domains == ["app.globex.test", "x.test:8443"]
    # the printed key authenticates and sees the outsider's projects only
    body = client_with(result["key"]).get("/v1/projects").json()
    assert [p["id"] for p in body["data"]] == [outsider.project.id]
    # the stored row holds no plaintext key
    for field in ApiKey._meta.concrete_fields:
        value = field.value_from_object(row)
        assert result["key"] not in json.dumps(value, default=str)
    assert row.key_hash != result["key"] and len(row.key_hash) == 64


def test_create_api_key_with_a_bad_domain_fails_and_issues_nothing(owner):
    with pytest.raises(CommandError):
        call_command(
            "create_api_key",
            "--org",
            owner.org.id,
            "--return-domain",
            "https://x.test/cb",
            "--json",
            stdout=io.StringIO(),
        )
    assert ApiKey.objects.filter(organization=owner.org).count() == 1  # only the fixture's key


def test_seed_demo_prints_the_demo_and_its_key_works(db):
    result = run_json("seed_demo")

    assert set(result) == {"organizationId", "projectIds", "apiKey", "adminUser", "adminPassword"}
    body = client_with(result["apiKey"]).get("/v1/projects").json()
    assert sorted(p["id"] for p in body["data"]) == sorted(result["projectIds"])
    assert len(result["projectIds"]) == 2
    admin = authenticate(username=result["adminUser"], password=result["adminPassword"])
    assert admin is not None and admin.is_staff and admin.is_superuser


def test_seed_demo_twice_keeps_one_org_and_its_projects_and_rotates_the_key(db):
    first = run_json("seed_demo")
    second = run_json("seed_demo")

    assert second["organizationId"] == first["organizationId"]
    assert second["projectIds"] == first["projectIds"]
    assert Organization.objects.filter(name="Demo Partner").count() == 1
    assert Project.objects.filter(organization_id=first["organizationId"]).count() == 2
    assert get_user_model().objects.filter(username=first["adminUser"]).count() == 1
    # the previous demo key is revoked, the new one works
    assert_error(client_with(first["apiKey"]).get("/v1/projects"), 401, "UNAUTHENTICATED")
    assert client_with(second["apiKey"]).get("/v1/projects").status_code == 200
    assert ApiKey.objects.filter(organization_id=first["organizationId"], revoked_at__isnull=True).count() == 1
    # and only the latest admin password works
    assert authenticate(username="admin", password=first["adminPassword"]) is None
    assert authenticate(username="admin", password=second["adminPassword"]) is not None


def test_seed_demo_is_refused_in_live_mode_and_leaves_an_existing_admin_as_it_was(db, settings):
    # In production someone's staff account may be called `admin`: the demo made it a superuser and printed
    # a new password for it. Like add_pool_accounts, it is for the sandbox only.
    settings.LAYERS_PLATFORMS = "live"
    colleague = get_user_model().objects.create_user("admin", password="their own password", is_staff=True)
    out = io.StringIO()

    with pytest.raises(CommandError) as refused:
        call_command("seed_demo", "--json", stdout=out, stderr=io.StringIO())

    assert refused.value.returncode == 1  # the process exits 1
    assert "sandbox" in str(refused.value) and "live" in str(refused.value)
    assert json.loads(out.getvalue()) == {"error": {"message": str(refused.value)}}
    colleague.refresh_from_db()
    assert not colleague.is_superuser and colleague.check_password("their own password")
    assert not Organization.objects.filter(name="Demo Partner").exists()


def test_seed_demo_admin_password_signs_in_through_allauth(db, client):
    result = run_json("seed_demo")

    response = client.post("/staff/login/", {"login": result["adminUser"], "password": result["adminPassword"]})

    assert response.status_code == 302 and response["Location"] == "/admin/"
    # a superuser must set up MFA (TOTP) before the admin opens (accounts/staff_mfa.py)
    assert client.get("/admin/")["Location"] == reverse("mfa_activate_totp")
