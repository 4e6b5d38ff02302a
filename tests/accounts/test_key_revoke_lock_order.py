"""Staff's bulk revoke of keys (api_keys_revoke, a batch at a time, in key order) and an organization's
off-boarding (which revokes all its keys) lock the same key rows. Unless both take them in the same order, each
can hold a key the other waits for, and PostgreSQL ends one of them: a 500 for the staff member's revoke or
off-boarding page. Three real connections (one holds a row to order the waits), as in the deliveries' test."""

import pytest

from accounts import services
from accounts.models import ApiKey
from tests.concurrency import held_open, on_its_own_connection, wait_until_waiting

pytestmark = pytest.mark.django_db(transaction=True)


def plan_order(organization_id) -> list[str]:
    """The organization's keys in the order an unordered read of them returns them (the plan's order)."""
    return list(ApiKey.objects.filter(organization_id=organization_id).values_list("pk", flat=True))


def test_a_bulk_revoke_of_keys_and_an_off_boarding_never_deadlock(owner):
    ApiKey.objects.filter(organization=owner.org).delete()
    for n in range(3):
        services.api_key_issue(key=ApiKey(organization=owner.org, name=f"key {n}"))
    # Keys chosen against the plan's order: the off-boarding's read meets the highest key first, then the one
    # held, then the lowest; the bulk revoke (key order) takes the lowest first.
    for pk, new in zip(plan_order(owner.org.pk), ("key_zzzz", "key_mmmm", "key_aaaa"), strict=True):
        ApiKey.objects.filter(pk=pk).update(id=new)
    assert plan_order(owner.org.pk) == ["key_zzzz", "key_mmmm", "key_aaaa"]  # the setup this race needs
    errors: list = []

    with held_open(lambda: list(ApiKey.objects.select_for_update().filter(pk="key_mmmm"))):
        offboarding = on_its_own_connection(
            lambda: services.organization_offboard(organization_id=owner.org.pk, by="ops"), errors
        )
        wait_until_waiting("accounts_apikey")
        revoke = on_its_own_connection(lambda: services.api_keys_revoke(key_ids=["key_aaaa", "key_zzzz"]), errors)
        wait_until_waiting("accounts_apikey", count=2)
    offboarding.join(30)
    revoke.join(30)

    assert errors == [], errors
    assert not ApiKey.objects.filter(organization=owner.org, revoked_at__isnull=True).exists()
