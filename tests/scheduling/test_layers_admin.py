"""An account's four layers exist while the account does: a layer deleted by hand in the admin was never put
back for a leased account (the provisioning tick restores connected accounts only), its published posts'
metrics stopped syncing (the sync needs every layer) and the partner saw three layers instead of four."""

import pytest
from django.test import Client

from scheduling.models import Layer
from tests.leasing.test_release_races import leased_account
from tests.staff import admin_object_url, staff_login, superuser

pytestmark = pytest.mark.django_db(transaction=True)


def test_no_staff_member_can_delete_an_accounts_layer_in_the_admin(owner):
    _, account_id = leased_account(owner)
    layer = Layer.objects.filter(social_account_id=account_id).first()
    boss = staff_login(Client(), superuser("boss"))

    assert boss.get(admin_object_url(Layer, layer.pk, "delete")).status_code == 403
    assert boss.post(admin_object_url(Layer, layer.pk, "delete"), {"post": "yes"}).status_code == 403
    changelist = boss.get("/admin/scheduling/layer/")
    assert changelist.status_code == 200 and "delete_selected" not in changelist.content.decode()
    boss.post("/admin/scheduling/layer/", {"action": "delete_selected", "_selected_action": [layer.pk], "post": "yes"})

    assert Layer.objects.filter(social_account_id=account_id).count() == 4
    listed = owner.client.get(f"/v1/social-accounts/{account_id}").json()["layers"]
    assert len(listed) == 4


def test_no_staff_member_can_delete_a_partners_content_container(owner):
    created = owner.client.post(
        f"/v1/projects/{owner.project.id}/content",
        {"mediaType": "video", "mediaUrls": ["https://cdn.example.com/clip.mp4"], "caption": "kept"},
        format="json",
    )
    assert created.status_code == 201, created.content
    container_id = created.json()["id"]
    boss = staff_login(Client(), superuser("boss"))

    from scheduling.models import ContentContainer

    assert boss.post(admin_object_url(ContentContainer, container_id, "delete"), {"post": "yes"}).status_code == 403
    assert owner.client.get(f"/v1/content/{container_id}").status_code == 200


def test_no_one_can_add_a_layer_in_the_admin(db):
    # The add page was offered, every field read-only, and its Save crashed (a 500: no organization).
    boss = staff_login(Client(), superuser("boss"))
    changelist = boss.get("/admin/scheduling/layer/")
    assert changelist.status_code == 200 and "/admin/scheduling/layer/add/" not in changelist.content.decode()
    assert boss.get("/admin/scheduling/layer/add/").status_code == 403
    boss.raise_request_exception = False
    assert boss.post("/admin/scheduling/layer/add/", {"_save": "Save"}).status_code == 403
    assert not Layer.objects.exists()
