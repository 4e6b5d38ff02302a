"""GET /v1/wallet and GET /v1/wallet/entries: the key's organization's wallet and ledger only, newest first,
cursor-paginated, with the charged leased account and period on each charge."""

from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from billing import services
from billing.models import LedgerEntry
from tests.billing.factories import lease_assign
from tests.conftest import assert_error

pytestmark = pytest.mark.django_db


def walk(client, *, limit: int, query: str = "") -> tuple[list[dict], int]:
    rows, pages, cursor = [], 0, None
    while True:
        url = f"/v1/wallet/entries?limit={limit}{query}" + (f"&cursor={cursor}" if cursor else "")
        response = client.get(url)
        assert response.status_code == 200, response.content
        body = response.json()
        assert set(body) == {"data", "nextCursor"}
        rows.extend(body["data"])
        pages += 1
        cursor = body["nextCursor"]
        if cursor is None:
            return rows, pages


def test_a_new_organization_has_an_empty_ok_wallet(owner):
    response = owner.client.get("/v1/wallet")

    assert response.status_code == 200
    assert response.json() == {"balanceCents": 0, "currency": "USD", "status": "ok", "pastDueSince": None}
    assert owner.client.get("/v1/wallet/entries").json() == {"data": [], "nextCursor": None}


def test_the_wallet_shows_the_balance_and_past_due_status(owner):
    services.wallet_top_up(organization=owner.org, cents=1000)
    assert owner.client.get("/v1/wallet").json()["status"] == "ok"

    lease_assign(owner, price_cents=4900)

    body = owner.client.get("/v1/wallet").json()
    assert body["balanceCents"] == -3900
    assert body["status"] == "past_due"
    assert body["pastDueSince"].endswith("Z")


def test_entries_describe_each_charge_with_its_leased_account_and_period(owner):
    services.wallet_top_up(organization=owner.org, cents=10_000, reason="Wire transfer 42")
    lease = lease_assign(owner, price_cents=4900, at=datetime(2028, 1, 31, 9, tzinfo=UTC))
    services.lease_charges_run(now=datetime(2028, 2, 29, 9, tzinfo=UTC))

    data = owner.client.get("/v1/wallet/entries").json()["data"]

    assert len(data) == 3
    renewal = next(e for e in data if e["kind"] == "lease_charge" and e["periodIndex"] == 1)
    assert renewal["id"].startswith("le_")
    assert renewal["amountCents"] == -4900
    assert renewal["leaseSocialAccountId"] == lease.social_account_id
    assert (renewal["periodStart"], renewal["periodEnd"]) == ("2028-02-29T09:00:00.000Z", "2028-03-31T09:00:00.000Z")
    assert renewal["description"] == (f"Leased account @{lease.pool_account.handle}, month 2: 2028-02-29 to 2028-03-31")
    top_up = next(e for e in data if e["kind"] == "top_up")
    assert top_up | {"id": None, "createdAt": None} == {
        "id": None,
        "kind": "top_up",
        "amountCents": 10_000,
        "description": "Wire transfer 42",
        "leaseSocialAccountId": None,
        "periodIndex": None,
        "periodStart": None,
        "periodEnd": None,
        "createdAt": None,
    }
    assert sum(e["amountCents"] for e in data) == owner.client.get("/v1/wallet").json()["balanceCents"]


def test_a_refund_names_the_leased_account_it_refunds_in_the_partners_entries(owner):
    """Finance refunded one leased account's month (an adjustment naming its lease): the partner reconciling
    the refund against their own customers must see which account it was for, as they do on its charge."""
    refunded = lease_assign(owner, price_cents=4900)
    lease_assign(owner, price_cents=4900)
    services.wallet_adjust(organization=owner.org, cents=4900, reason="Refund: account was banned", lease=refunded)
    services.wallet_adjust(organization=owner.org, cents=-100, reason="Bank fee")

    adjustments = owner.client.get("/v1/wallet/entries?kind=adjustment").json()["data"]

    by_reason = {e["description"]: e["leaseSocialAccountId"] for e in adjustments}
    assert by_reason == {"Refund: account was banned": refunded.social_account_id, "Bank fee": None}


def test_entries_are_newest_first_and_pages_neither_skip_nor_repeat(owner):
    for i in range(7):
        services.wallet_top_up(organization=owner.org, cents=100 + i)
    for _ in range(3):
        lease_assign(owner, price_cents=10)  # same-instant rows are ordered by id, still stable

    rows, pages = walk(owner.client, limit=3)

    assert pages == 4
    assert len(rows) == len({r["id"] for r in rows}) == 10
    assert set(r["id"] for r in rows) == set(
        LedgerEntry.objects.filter(organization=owner.org).values_list("id", flat=True)
    )
    stamps = [r["createdAt"] for r in rows]
    assert stamps == sorted(stamps, reverse=True)


def test_entries_can_be_filtered_by_kind_and_a_bad_kind_is_422(owner):
    services.wallet_top_up(organization=owner.org, cents=100)
    lease_assign(owner, price_cents=10)

    rows, _ = walk(owner.client, limit=50, query="&kind=lease_charge")
    assert [r["kind"] for r in rows] == ["lease_charge"]
    assert_error(owner.client.get("/v1/wallet/entries?kind=refund"), 422, "VALIDATION")
    assert_error(owner.client.get("/v1/wallet/entries?kind="), 422, "VALIDATION")
    assert_error(owner.client.get("/v1/wallet/entries?knd=top_up"), 422, "VALIDATION")
    assert_error(owner.client.get("/v1/wallet/entries?limit=0"), 422, "VALIDATION")
    assert_error(owner.client.get("/v1/wallet/entries?cursor=garbage"), 422, "VALIDATION")


def test_another_organizations_wallet_and_entries_are_never_visible(owner, sibling, outsider):
    services.wallet_top_up(organization=owner.org, cents=5000, reason="owner money")
    lease_assign(owner, price_cents=4900)
    services.wallet_top_up(organization=outsider.org, cents=7)

    for other in (sibling, outsider):
        rows, _ = walk(other.client, limit=1)
        owner_ids = set(LedgerEntry.objects.filter(organization=owner.org).values_list("id", flat=True))
        assert not owner_ids & {r["id"] for r in rows}
        assert "owner money" not in str(rows)
    assert sibling.client.get("/v1/wallet").json()["balanceCents"] == 0
    assert outsider.client.get("/v1/wallet").json()["balanceCents"] == 7
    assert [r["amountCents"] for r in walk(outsider.client, limit=1)[0]] == [7]

    # a cursor made from the owner's rows does not open the owner's ledger to another key
    cursor = owner.client.get("/v1/wallet/entries?limit=1").json()["nextCursor"]
    assert outsider.client.get(f"/v1/wallet/entries?cursor={cursor}").json()["data"] == []


def test_the_wallet_needs_a_key(anon):
    assert_error(anon.get("/v1/wallet"), 401, "UNAUTHENTICATED")
    assert_error(anon.get("/v1/wallet/entries"), 401, "UNAUTHENTICATED")


def test_the_wallet_is_read_only(owner):
    assert_error(owner.client.post("/v1/wallet", {}, format="json"), 405, "METHOD_NOT_ALLOWED")
    assert_error(owner.client.delete("/v1/wallet/entries"), 405, "METHOD_NOT_ALLOWED")


def test_listing_entries_takes_the_same_number_of_queries_for_3_or_30_charges(owner):
    def queries_for_page() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert owner.client.get("/v1/wallet/entries?limit=200").status_code == 200
        return len(ctx.captured_queries)

    for _ in range(3):
        lease_assign(owner, price_cents=10, at=timezone.now())
    owner.client.get("/v1/wallet")  # the key's first use of the minute records last_used_at: not the list's cost
    few = queries_for_page()
    for _ in range(27):
        refunded = lease_assign(owner, price_cents=10, at=timezone.now())
        services.wallet_adjust(organization=owner.org, cents=10, reason="Refund", lease=refunded)
    assert queries_for_page() == few
