"""An organization's ledger is in the order its entries were committed, on real PostgreSQL (threads, each with
its own connection): an entry that waited for the wallet lock behind another writer sorts after that writer's
entry. Otherwise a partner paging GET /v1/wallet/entries while it waited passes it for good (API.md: cursor
pagination never skips rows when rows are added), and the balance after each entry, in the admin, shows
balances the wallet never had."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection, transaction
from django.utils import timezone

from billing import selectors, services
from billing.models import LedgerEntry, Wallet
from tests.billing.factories import lease_assign
from tests.concurrency import wait_until_waiting

pytestmark = pytest.mark.django_db(transaction=True)

WRITERS = {
    "finance top-up": lambda org: services.wallet_top_up(organization=org, cents=400, reason="LATE"),
    "renewal job": lambda org: services.lease_charges_run(),
    # The job as it runs on SQLite (`make run`): one lease at a time, through the code a release also runs.
    "renewal job, one lease at a time": lambda org: services.charge_due_per_lease(now=timezone.now()),
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_an_entry_that_waited_for_the_wallet_lock_is_not_skipped_by_a_partner_paging_the_ledger(owner, writer):
    org = owner.org
    lease_assign(owner, price_cents=4900, at=timezone.now() - timedelta(days=40))  # month 2 is due
    services.wallet_top_up(organization=org, cents=200, reason="R2")
    locked, go, late_wrote, late_commit = (threading.Event() for _ in range(4))
    errors: list[BaseException] = []

    def holder():  # a writer holding the wallet lock, which records R3 and commits first
        try:
            with transaction.atomic():
                Wallet.objects.select_for_update().get(pk=org.pk)
                locked.set()
                go.wait(30)
                services.wallet_top_up(organization=org, cents=300, reason="R3")
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)
        finally:
            connection.close()

    def late():  # starts while R3's writer holds the lock, waits for it, commits after the partner's first page
        try:
            with transaction.atomic():
                WRITERS[writer](org)
                late_wrote.set()
                late_commit.wait(30)
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)
        finally:
            connection.close()

    first_writer = threading.Thread(target=holder)
    first_writer.start()
    assert locked.wait(30)
    late_writer = threading.Thread(target=late)
    late_writer.start()
    wait_until_waiting("FOR UPDATE")
    go.set()
    first_writer.join(30)
    assert late_wrote.wait(30)
    first = owner.client.get("/v1/wallet/entries?limit=2").json()  # R3, R2: the late entry is not committed
    late_commit.set()
    late_writer.join(30)
    assert errors == []
    second = owner.client.get(f"/v1/wallet/entries?limit=2&cursor={first['nextCursor']}").json()

    walked = [e["description"] for e in first["data"] + second["data"]]  # one pass, to the oldest entry
    assert walked[:2] == ["R3", "R2"] and second["nextCursor"] is None
    # The partner's next poll reads from the top down to the newest entry it has (R3): what is above it is new.
    top = [e["description"] for e in owner.client.get("/v1/wallet/entries?limit=2").json()["data"]]
    new = top[: top.index("R3")] if "R3" in top else top
    ledger = [e["description"] for e in owner.client.get("/v1/wallet/entries").json()["data"]]
    assert len(ledger) == 4
    assert new + walked == ledger  # the late entry is seen, on top of what was walked: nothing passed by
    # The balance after each entry, oldest first, is the balance the wallet had: month 1, R2, R3, then the late
    # entry (a top-up of $4, or month 2).
    late_cents = 400 if writer == "finance top-up" else -4900
    balances = [e.balance_after for e in selectors.ledger_with_balances(organization_id=org.pk)][::-1]
    assert balances == [-4900, -4700, -4400, -4400 + late_cents]


@pytest.mark.parametrize("writer", list(WRITERS))
def test_an_entry_recorded_by_a_host_whose_clock_is_behind_still_sorts_after_the_entries_before_it(owner, writer):
    """The web and the workers may run on hosts whose clocks disagree: the entry a worker a minute behind records
    after a top-up made through the web is still the newest, for the partner and in the balances after."""
    org = owner.org
    lease_assign(owner, price_cents=4900, at=timezone.now() - timedelta(days=40))  # month 2 is due
    services.wallet_top_up(organization=org, cents=200, reason="R2")

    with time_machine.travel(timezone.now() - timedelta(minutes=1)):
        WRITERS[writer](org)

    ledger = owner.client.get("/v1/wallet/entries").json()["data"]
    late = "LATE" if writer == "finance top-up" else "month 2"
    assert late in ledger[0]["description"] and ledger[1]["description"] == "R2"
    assert datetime.fromisoformat(ledger[0]["createdAt"]) > datetime.fromisoformat(ledger[1]["createdAt"])
    late_cents = 400 if writer == "finance top-up" else -4900
    balances = [e.balance_after for e in selectors.ledger_with_balances(organization_id=org.pk)][::-1]
    assert balances == [-4900, -4700, -4700 + late_cents]


@pytest.mark.parametrize("writer", list(WRITERS))
def test_an_entry_recorded_in_the_same_clock_tick_as_the_newest_still_sorts_after_it(owner, writer):
    """A clock that has not moved since the newest entry (a coarse host clock, or the same microsecond) must
    not give the new entry the newest's time: a tie is broken by id, random after the millisecond, and a later
    entry with a lower id sorts below one the partner has already read."""
    org = owner.org
    lease_assign(owner, price_cents=4900, at=timezone.now() - timedelta(days=40))  # month 2 is due
    with time_machine.travel(timezone.now(), tick=False):
        services.wallet_top_up(organization=org, cents=200, reason="R2")
        WRITERS[writer](org)
    ledger = owner.client.get("/v1/wallet/entries").json()["data"]
    late = "LATE" if writer == "finance top-up" else "month 2"
    assert late in ledger[0]["description"] and ledger[1]["description"] == "R2", ledger
    assert datetime.fromisoformat(ledger[0]["createdAt"]) > datetime.fromisoformat(ledger[1]["createdAt"])


@pytest.mark.parametrize("writer", list(WRITERS))
def test_another_organizations_newest_entry_does_not_move_this_organizations_entry_time(owner, outsider, writer):
    """Only the organization's own ledger orders its entries: an entry another organization got from a host
    whose clock was an hour ahead must not stamp this organization's entries an hour into the future."""
    lease_assign(owner, price_cents=4900, at=timezone.now() - timedelta(days=40))  # month 2 is due
    with time_machine.travel(timezone.now() + timedelta(hours=1)):
        services.wallet_top_up(organization=outsider.org, cents=100, reason="AHEAD")
    before = timezone.now()
    WRITERS[writer](owner.org)
    newest = LedgerEntry.objects.filter(organization_id=owner.org.pk).order_by("-created_at", "-id").first()
    # Entries are timed in whole milliseconds: one written in the millisecond `before` was read in is up to
    # 999 µs earlier than it.
    before = before.replace(microsecond=before.microsecond // 1000 * 1000)
    assert before <= newest.created_at <= timezone.now(), (newest.created_at, before)


def test_two_entries_in_one_real_millisecond_show_two_times_in_their_order(owner):
    """The API writes times to the millisecond: two entries 333 µs apart would both read .123Z, and a partner
    paging down to the newest entry it saw could not tell which came first. The second is stamped 1 ms on."""
    with time_machine.travel(datetime(2026, 11, 30, 9, 0, 0, 123456, tzinfo=UTC), tick=False):
        services.wallet_top_up(organization=owner.org, cents=100, reason="A")
    with time_machine.travel(datetime(2026, 11, 30, 9, 0, 0, 123789, tzinfo=UTC), tick=False):
        services.wallet_top_up(organization=owner.org, cents=100, reason="B")
    data = owner.client.get("/v1/wallet/entries").json()["data"]
    assert [entry["description"] for entry in data[:2]] == ["B", "A"], data
    assert data[0]["createdAt"] > data[1]["createdAt"]
