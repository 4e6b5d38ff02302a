"""Support answering Meta or the person about a data deletion request: the request's row in the admin, found by
its confirmation code or by the id Meta sent, read-only and never deletable; and what the admin calls the
identity a request blanked."""

import pytest
from django.test import Client

from accounts.models import DataDeletionRequest, PlatformIdentity, SocialAccount
from accounts.platforms.sandbox.identities import instagram_user_id
from tests.accounts.oauth_helpers import connected_account
from tests.accounts.test_instagram_data_deletion_copies import delete_data_of
from tests.staff import admin_object_url, staff_login, staff_member, superuser

pytestmark = pytest.mark.django_db(transaction=True)

LIST = "/admin/accounts/datadeletionrequest/"


def test_support_finds_a_deletion_request_by_its_code_or_the_id_meta_sent_and_sees_what_it_did(owner, outsider):
    connected_account(owner, "instagram", "ig.asking")
    connected_account(outsider, "instagram", "ig.asking", return_url="https://globex.test/back")
    connected_account(owner, "instagram", "ig.other")
    delete_data_of("ig.asking")
    delete_data_of("ig.other")
    asked = DataDeletionRequest.objects.get(platform_user_id=instagram_user_id("ig.asking"))
    other = DataDeletionRequest.objects.get(platform_user_id=instagram_user_id("ig.other"))
    support = staff_login(Client(), staff_member("support", "accounts.view_datadeletionrequest"))

    # The person quotes the code Meta showed them, maybe typed in lower case; Meta quotes the id it sent.
    for term in (asked.confirmation_code, asked.confirmation_code.lower(), asked.platform_user_id):
        found = support.get(LIST, {"q": term})
        assert found.status_code == 200
        text = found.content.decode()
        assert asked.confirmation_code in text and other.confirmation_code not in text, term
    page = support.get(admin_object_url(DataDeletionRequest, asked.pk))
    assert page.status_code == 200
    text = page.content.decode()
    assert asked.confirmation_code in text and asked.platform_user_id in text
    assert asked.accounts_erased == 2 and ">2<" in text.replace(" ", "").replace("\n", "")
    assert asked.request_key not in text  # the signed payload's digest: nothing support needs


def test_a_deletion_request_is_never_changed_nor_deleted_in_the_admin_and_others_do_not_see_it(owner):
    connected_account(owner, "instagram", "ig.kept")
    delete_data_of("ig.kept")
    row = DataDeletionRequest.objects.get()
    url = admin_object_url(DataDeletionRequest, row.pk)
    ops = staff_login(Client(), superuser("ops"))

    page = ops.get(url).content.decode()
    assert 'name="_save"' not in page and 'name="confirmation_code"' not in page and "/delete/" not in page
    assert ops.post(url, {"platform_user_id": "forged", "accounts_erased": "0"}).status_code == 403
    assert ops.post(f"{url}delete/", {"post": "yes"}).status_code == 403
    assert ops.post(LIST, {"action": "delete_selected", "_selected_action": [row.pk], "post": "yes"}).status_code in (
        200,
        302,
    )
    assert ops.get(f"{LIST}add/").status_code == 403
    assert DataDeletionRequest.objects.get() == row
    assert (DataDeletionRequest.objects.get().platform_user_id, DataDeletionRequest.objects.get().accounts_erased) == (
        row.platform_user_id,
        1,
    )
    # Staff without the permission do not reach it.
    other = staff_login(Client(), staff_member("billing", "billing.view_wallet"))
    assert other.get(LIST).status_code == 403 and other.get(url).status_code == 403


def test_an_erased_identity_is_named_by_its_platform_and_id_not_as_a_handle(owner):
    account = connected_account(owner, "instagram", "ig.nameless")
    delete_data_of("ig.nameless")
    identity = SocialAccount.objects.get(pk=account["id"]).identity
    user_id = identity.platform_user_id

    assert str(PlatformIdentity.objects.get(pk=identity.pk)) == f"instagram user {user_id} (no handle)"
    ops = staff_login(Client(), superuser("ops"))
    assert f"@{user_id}" not in ops.get(admin_object_url(PlatformIdentity, identity.pk)).content.decode()
