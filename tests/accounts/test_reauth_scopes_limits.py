"""The limits of reauth-url's `scopes`: an oversized list is a 422 on `scopes`, never a 500."""

from tests.conftest import assert_error
from tests.factories import make_account


def reauth(tenant, account_id, scopes):
    return tenant.client.post(
        f"/v1/projects/{tenant.project.id}/social/reauth-url",
        {"socialAccountId": account_id, "scopes": scopes, "returnUrl": "https://app.acme.test/cb"},
        format="json",
    )


def test_scopes_longer_than_512_characters_in_all_are_422_not_500(owner):
    # Twenty valid Instagram scopes (the most allowed) joined are 699 characters: more than the 512 stored with
    # the session. The partner gets 422 on `scopes`, not a database error.
    account = make_account(owner, platform="instagram")
    response = reauth(owner, account.pk, ["instagram_business_manage_comments"] * 20)
    error = assert_error(response, 422, "VALIDATION")
    assert list(error["details"]["fields"]) == ["scopes"], error


def test_more_than_20_scopes_are_422(owner):
    # At most 20 scopes: 21 (even of one valid, short scope) is a 422 on `scopes`.
    account = make_account(owner, platform="tiktok")
    error = assert_error(reauth(owner, account.pk, ["video.list"] * 21), 422, "VALIDATION")
    assert list(error["details"]["fields"]) == ["scopes"], error
