"""The "Social Account Onboarding" template is what every new account's layers are made from. It was editable
in the admin with a password alone and without validation: `["account_health_monitor"]` saved there failed
every later lease assignment (a TypeError) and the post-connect "layers" step of every new account, and `[]`
or fewer kinds quietly gave new accounts fewer than their four layers (the metrics sync skips such accounts).
Now no one edits it in the admin, its permissions need MFA, provisioning gives an account its four layers
whatever the stored template holds, and deploying puts back the built-in layers of a template saved malformed
before this fix."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from accounts import services as account_services
from accounts.staff_mfa import staff_needs_mfa
from leasing import services as leasing
from leasing.models import LeaseRequest
from scheduling.models import ONBOARDING_TEMPLATE, Layer, LayerTemplate
from scheduling.services import ACCOUNT_LAYER_KINDS
from tests.factories import make_account
from tests.leasing.helpers import add_pool, request_accounts
from tests.staff import admin_object_url, signed_in_staff, staff_login, superuser, with_mfa

pytestmark = pytest.mark.django_db

BUILT_IN = [{"kind": kind.value, "name": kind.label} for kind in ACCOUNT_LAYER_KINDS]
FOUR_KINDS = {kind.value for kind in ACCOUNT_LAYER_KINDS}


def onboarding_template() -> LayerTemplate:
    template, _ = LayerTemplate.objects.get_or_create(name=ONBOARDING_TEMPLATE, defaults={"layers": BUILT_IN})
    return template


def stored(layers) -> LayerTemplate:
    template = onboarding_template()
    template.layers = layers
    template.save()
    return template


def test_no_one_edits_adds_or_deletes_the_onboarding_template_in_the_admin(db):
    template = stored(BUILT_IN)
    broken = {"name": ONBOARDING_TEMPLATE, "layers": '["account_health_monitor"]', "is_system": "on"}

    # Staff given the template's permissions need MFA for them, as for every permission that decides what
    # partners get; signed in with the password alone they reach no admin page.
    content, password_only = signed_in_staff(
        "scheduling.view_layertemplate",
        "scheduling.add_layertemplate",
        "scheduling.change_layertemplate",
        "scheduling.delete_layertemplate",
        username="content",
    )
    assert staff_needs_mfa(content)
    password_only.post(admin_object_url(LayerTemplate, template.pk), broken)

    # Not even a superuser with MFA: the page shows the template, with nothing to save.
    boss = staff_login(Client(), superuser("boss"))
    page = boss.get(admin_object_url(LayerTemplate, template.pk))
    assert page.status_code == 200 and ONBOARDING_TEMPLATE in page.content.decode()
    assert 'name="layers"' not in page.content.decode() and 'name="_save"' not in page.content.decode()
    assert boss.post(admin_object_url(LayerTemplate, template.pk), broken).status_code == 403
    assert boss.post(admin_object_url(LayerTemplate, template.pk, "delete"), {"post": "yes"}).status_code == 403
    bulk = {"action": "delete_selected", "_selected_action": [template.pk], "post": "yes"}
    boss.post("/admin/scheduling/layertemplate/", bulk)
    assert boss.get("/admin/scheduling/layertemplate/add/").status_code == 403

    template.refresh_from_db()
    assert template.layers == BUILT_IN
    assert LayerTemplate.objects.count() == 1


# What an onboarding template saved before this fix may hold.
MALFORMED = {
    "a bare kind": ["account_health_monitor"],
    "nothing": [],
    "fewer kinds": BUILT_IN[:2],
    "a kind twice": [*BUILT_IN[:3], BUILT_IN[0]],
    "the project's kind": [*BUILT_IN[:3], {"kind": "social_content", "name": "Social Content"}],
    "an unknown kind": [*BUILT_IN[:3], {"kind": "warp_drive", "name": "Warp Drive"}],
    "no name": [*BUILT_IN[:3], {"kind": "account_warmup"}],
    "an empty name": [*BUILT_IN[:3], {"kind": "account_warmup", "name": "  "}],
    "a name too long": [*BUILT_IN[:3], {"kind": "account_warmup", "name": "x" * 129}],
    "not a list": {"kind": "account_health_monitor", "name": "Account Health Monitor"},
    "a string": "account_health_monitor",
}


@pytest.mark.parametrize("layers", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_stored_template_still_gives_a_leased_account_its_four_layers(owner, layers):
    stored(layers)
    add_pool(1)
    accepted = request_accounts(owner, 1)
    ops = with_mfa(get_user_model().objects.create_superuser("ops", "ops@layers.test", "pw"))

    leasing.lease_assign(request_id=accepted["requestId"], auto=True, actor=ops)

    request = LeaseRequest.objects.get(pk=accepted["requestId"])
    assert request.status == LeaseRequest.Status.ASSIGNED, request.failure_reason
    (account_id,) = request.leases.values_list("social_account_id", flat=True)
    layers = owner.client.get(f"/v1/social-accounts/{account_id}").json()["layers"]
    assert [(layer["kind"], layer["name"]) for layer in layers] == [(s["kind"], s["name"]) for s in BUILT_IN]


@pytest.mark.parametrize("layers", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_stored_template_does_not_fail_a_connected_accounts_layers_step(owner, layers):
    stored(layers)
    account = make_account(owner, handle="newcomer")

    assert "layers" not in account_services.social_account_fan_out(account_id=account.pk)
    assert set(Layer.objects.filter(social_account=account).values_list("kind", flat=True)) == FOUR_KINDS


def test_a_well_formed_stored_template_keeps_its_names_and_order(owner):
    renamed = [{"kind": s["kind"], "name": f"Acme {s['name']}"} for s in reversed(BUILT_IN)]
    stored(renamed)
    account = make_account(owner, handle="renamed")

    account_services.social_account_fan_out(account_id=account.pk)

    listed = owner.client.get(f"/v1/social-accounts/{account.pk}").json()["layers"]
    assert [(layer["kind"], layer["name"]) for layer in listed] == [(s["kind"], s["name"]) for s in renamed]


def repair_migration():
    from importlib import import_module

    return import_module("scheduling.migrations.0011_repair_onboarding_template")


@pytest.mark.parametrize("layers", MALFORMED.values(), ids=MALFORMED.keys())
def test_deploying_puts_back_the_built_in_layers_of_a_malformed_stored_template(db, layers):
    from django.apps import apps

    template = stored(layers)
    repair_migration().repair(apps, None)
    template.refresh_from_db()
    assert template.layers == BUILT_IN


def test_deploying_leaves_a_well_formed_stored_template_as_it_is(db):
    from django.apps import apps

    renamed = [{"kind": s["kind"], "name": f"Acme {s['name']}"} for s in reversed(BUILT_IN)]
    template = stored(renamed)
    repair_migration().repair(apps, None)
    template.refresh_from_db()
    assert template.layers == renamed
