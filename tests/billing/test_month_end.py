"""Finance closes the month on the 1st of the next one, in the admin only: each organization's charges of
the month, each wallet's month (opening balance, top-ups, charges, adjustments, closing balance), who is past
due and since when, what off-boarded partners still hold, and the ledger entries behind every figure."""

import csv
import io
import re
from datetime import UTC, datetime
from decimal import Decimal
from html import unescape

import pytest
import time_machine

from accounts.services import organization_offboard
from billing import reports, services
from billing.models import Wallet
from leasing import services as leasing
from leasing.models import PoolAccount
from tests.billing.test_finance_admin import Tables
from tests.leasing.helpers import add_pool, get_request, request_accounts
from tests.staff import admin_object_url, signed_in_staff

pytestmark = pytest.mark.django_db

LEDGER = "/admin/billing/ledgerentry/"
FINANCE = ("billing.view_wallet", "billing.view_ledgerentry", "billing.view_monthlybilling", "billing.record_money")


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def finance(db):
    """Layers finance: the billing permissions (viewing wallets, the ledger and the monthly report, recording
    money, hence MFA), not a superuser."""
    _user, client = signed_in_staff(*FINANCE, mfa=True, username="finance")
    return client


def filter_link(html: str, label: str) -> str | None:
    """The href of the list filter choice reading `label`."""
    found = re.search(r'<a href="([^"]*)">' + re.escape(label) + r"</a>", html)
    return unescape(found.group(1)) if found else None


def test_on_the_first_of_the_month_finance_lists_last_months_ledger_entries(finance, owner):
    """Closing November on 1 December, the ledger's date filter offered Today, Past 7 days, This month
    (December) and This year: November could be read only by typing its dates into the address bar. The
    previous months are offered by name."""
    entries = [
        (at(2026, 10, 31, 23, 59), "October"),
        (at(2026, 11, 1), "November first"),
        (at(2026, 11, 30, 23, 59, 59), "November last"),
        (at(2026, 12, 1, 0, 30), "December"),
    ]
    for when, reason in entries:
        with time_machine.travel(when, tick=False):
            services.wallet_top_up(organization=owner.org, cents=1000, reason=reason)

    with time_machine.travel(at(2026, 12, 1, 9), tick=False):
        november = filter_link(finance.get(LEDGER).content.decode(), "November 2026")
        assert november is not None
        listed = finance.get(LEDGER + november)

    assert sorted(e.reason for e in listed.context["cl"].result_list) == ["November first", "November last"]
    assert '<li class="selected">\n    <a href="' + november.replace("&", "&amp;") in listed.content.decode()


def assign(tenant, pool_ids: list[str], project=None) -> list[str]:
    """Ops assign these pool accounts to a request the partner made: the leased accounts' ids."""
    request_id = request_accounts(tenant, len(pool_ids), project=project)["requestId"]
    leasing.lease_assign(request_id=request_id, pool_account_ids=pool_ids)
    return get_request(tenant, request_id, project=project)["socialAccountIds"]


@pytest.fixture
def november(owner, sibling, outsider):
    """Three partners' autumn, seeded through the services at the times they happened (UTC):
    - Acme Labs: $500 in August; two leases anchored just before a month's end (Aug 31 23:55 at $25, Oct 31
      23:58 at $10), whose renewals the job charges a few minutes into the next month;
    - Acme: $100 and a $49 lease in October; a second $49 lease on Nov 10, released on Nov 20 and its pool
      account, repriced to $30, leased again to Acme's other project; the wallet goes past due with the
      Nov 15 renewal, gets $10 back as an adjustment and $50 as a top-up, still short, then $100 on Dec 1;
    - Globex: $200 in October, a $49 lease on Nov 3, off-boarded on Nov 28 (its lease released)."""
    travel = lambda *when: time_machine.travel(at(*when), tick=False)  # noqa: E731
    with travel(2026, 8, 20):
        labs_a, labs_b, acme_a, acme_b, globex_a = add_pool(5, price=2500)
        PoolAccount.objects.filter(pk=labs_b).update(monthly_price_cents=1000)
        PoolAccount.objects.filter(pk__in=[acme_a, acme_b, globex_a]).update(monthly_price_cents=4900)
        services.wallet_top_up(organization=sibling.org, cents=50000, reason="Wire 0820", reference="w-0820")
    with travel(2026, 8, 31, 23, 55):
        assign(sibling, [labs_a])
    with travel(2026, 10, 1, 0, 0, 5):
        services.lease_charges_run()  # Sep 30 23:55
    with travel(2026, 10, 15, 12):
        services.wallet_top_up(organization=owner.org, cents=10000, reason="Wire 1015", reference="w-1015")
        assign(owner, [acme_a])
    with travel(2026, 10, 20, 9):
        services.wallet_top_up(organization=outsider.org, cents=20000, reason="Wire 1020")
    with travel(2026, 10, 31, 23, 58):
        assign(sibling, [labs_b])
    with travel(2026, 11, 1, 0, 0, 5):
        services.lease_charges_run()  # Oct 31 23:55: October's period, recorded in November
    with travel(2026, 11, 3, 10):
        assign(outsider, [globex_a])
    with travel(2026, 11, 10, 10):
        (released,) = assign(owner, [acme_b])
    with travel(2026, 11, 15, 12, 5):
        services.lease_charges_run()  # Acme's first lease, month 2: the wallet goes past due
    with travel(2026, 11, 20, 10):
        assert owner.client.delete(f"/v1/leased-accounts/{released}").status_code == 200
        PoolAccount.objects.filter(pk=acme_b).update(monthly_price_cents=3000)  # as the pool page saves a price
        assign(owner, [acme_b], project=owner.projects[1])
    with travel(2026, 11, 25, 16):
        services.wallet_adjust(organization=owner.org, cents=1000, reason="Goodwill: a day without the account")
    with travel(2026, 11, 26, 11):
        services.wallet_top_up(organization=owner.org, cents=5000, reason="Wire 1126", reference="w-1126")
    with travel(2026, 11, 28, 10):
        organization_offboard(organization_id=outsider.org.pk, by="ops")
    with travel(2026, 12, 1, 0, 0, 5):
        services.lease_charges_run()  # Labs' Nov 30 23:55 and 23:58: November's periods, recorded in December
    with travel(2026, 12, 1, 8):
        services.wallet_top_up(organization=owner.org, cents=10000, reason="Wire 1201", reference="w-1201")


def money(text: str) -> Decimal:
    """ "-$1,234.50" (the page) or "-1234.50" (the CSV) → Decimal("-1234.50")."""
    return Decimal(text.replace("$", "").replace(",", ""))


@pytest.mark.django_db(transaction=True)
def test_finance_closes_november_with_each_wallets_month_adding_up_and_agreeing_with_the_charges(
    finance, november, owner, sibling, outsider
):
    """On 1 December finance had the month's charges by organization, and each wallet's balance now; nothing
    said what a wallet held on Nov 1 and Nov 30, nor what came in and went out between, so the month could not
    be closed from the admin. And the month's charges (by the month their period starts in) disagreed with
    what moved the wallets in November (entries recorded in it), with nothing saying by which charges.

    The monthly page now has each wallet's month: opening balance + top-ups + lease charges + adjustments =
    closing balance (signed as the ledger signs them), past due since when at the month's end, off-boarded when;
    and what tells the charges recorded in the month from the charges of the month."""
    with time_machine.travel(at(2026, 12, 1, 9), tick=False):
        page = finance.get("/admin/billing/monthlybilling/?month=2026-11")
        december = finance.get("/admin/billing/monthlybilling/?month=2026-12")
    tables = Tables(page.content.decode()).tables

    wallets = tables["wallet-months"]
    assert wallets["thead"] == [
        [
            "Organization",
            "Organization ID",
            "Opening balance",
            "Top-ups",
            "Lease charges",
            "Adjustments",
            "Closing balance",
            "Past due since (UTC)",
            "Off-boarded at (UTC)",
        ]
    ]
    assert wallets["tbody"] == [
        ["Acme", owner.org.pk, "$51.00", "$50.00", "-$128.00", "$10.00", "-$17.00", "2026-11-15 12:05:00 UTC", ""],
        ["Acme Labs", sibling.org.pk, "$440.00", "$0.00", "-$25.00", "$0.00", "$415.00", "", ""],
        ["Globex", outsider.org.pk, "$200.00", "$0.00", "-$49.00", "$0.00", "$151.00", "", "2026-11-28 10:00:00 UTC"],
    ]
    assert wallets["tfoot"] == [["Total", "", "$691.00", "$50.00", "-$202.00", "$10.00", "$549.00", "", ""]]
    for row in wallets["tbody"] + wallets["tfoot"]:
        opening, top_ups, charges, adjustments, closing = (money(cell) for cell in row[2:7])
        assert opening + top_ups + charges + adjustments == closing, row

    # Charged in November (the periods starting in it, every organization's rows above) is what was recorded
    # in November, less October's period recorded on Nov 1, plus November's two periods recorded on Dec 1.
    assert tables["org-totals"]["tfoot"] == [["Total", "6", "$212.00"]]
    bridge = {row[0]: money(row[1]) for row in tables["charges-bridge"]["tbody"]}
    assert list(bridge.values()) == [Decimal("202.00"), Decimal("25.00"), Decimal("35.00"), Decimal("212.00")]
    assert bridge[next(iter(bridge))] == -money(wallets["tfoot"][0][4])
    recorded, other_months, recorded_outside, charged = bridge.values()
    assert recorded - other_months + recorded_outside == charged == money(tables["org-totals"]["tfoot"][0][2])

    # A month's closing balance is the next one's opening balance, and the balance after the organization's
    # last November entry on its ledger.
    next_month = Tables(december.content.decode()).tables["wallet-months"]["tbody"]
    assert [row[2] for row in next_month] == [row[6] for row in wallets["tbody"]]
    with time_machine.travel(at(2026, 12, 1, 9), tick=False):
        ledger = finance.get(LEDGER, {"organization__id__exact": owner.org.pk})
        listed = finance.get(LEDGER + filter_link(ledger.content.decode(), "November 2026"))
    entries = list(listed.context["cl"].result_list)  # newest first
    assert reports.usd_display(entries[0].balance_after) == "-$17.00"
    assert reports.usd_display(entries[-1].balance_after - entries[-1].amount_cents) == "$51.00"
    assert Wallet.objects.get(pk=owner.org.pk).balance_cents == 8300  # Dec 1's wire: no longer past due now


@pytest.mark.django_db(transaction=True)
def test_the_wallets_csv_is_the_table_of_the_page_and_adds_up(finance, november, owner):
    owner.org.name = '=HYPERLINK("https://evil.test","Pay here")'  # staff typed what the partner signed as
    owner.org.save(update_fields=["name"])
    with time_machine.travel(at(2026, 12, 1, 9), tick=False):
        page = Tables(finance.get("/admin/billing/monthlybilling/?month=2026-11").content.decode()).tables
        export = finance.get("/admin/billing/monthlybilling/wallets-csv/?month=2026-11")

    assert export.status_code == 200 and export["Content-Type"].startswith("text/csv")
    assert 'filename="wallets-2026-11.csv"' in export["Content-Disposition"]
    lines = list(csv.reader(io.StringIO(b"".join(export.streaming_content).decode("utf-8-sig"))))
    assert lines[0] == [
        "Organization",
        "Organization ID",
        "Opening balance (USD)",
        "Top-ups (USD)",
        "Lease charges (USD)",
        "Adjustments (USD)",
        "Closing balance (USD)",
        "Past due since (UTC)",
        "Off-boarded at (UTC)",
    ]
    shown = page["wallet-months"]["tbody"]
    assert [line[:2] for line in lines[1:]] == [["'" + owner.org.name, owner.org.pk], *(r[:2] for r in shown[1:])]
    for line, row in zip(lines[1:], shown, strict=True):
        assert [money(cell) for cell in line[2:7]] == [money(cell) for cell in row[2:7]]
        assert line[7:] == [cell.removesuffix(" UTC") for cell in row[7:]]
    columns = [sum(money(line[i]) for line in lines[1:]) for i in range(2, 7)]
    assert columns == [money(cell) for cell in page["wallet-months"]["tfoot"][0][2:7]]
    assert columns[0] + columns[1] + columns[2] + columns[3] == columns[4]


@pytest.mark.django_db(transaction=True)
def test_a_partner_off_boarded_after_a_month_reads_as_not_off_boarded_in_that_months_wallets(
    finance, november, outsider
):
    """Globex was off-boarded on Nov 28. October's wallets (page and CSV) said "Off-boarded at 2026-11-28" beside
    October's closing balance, as if it had left by then, where "past due since" beside it is as at the month's
    end: at the end of October Globex was an active partner. A month shows an off-boarding only if it happened by
    the month's end."""
    with time_machine.travel(at(2026, 12, 1, 9), tick=False):
        october = Tables(finance.get("/admin/billing/monthlybilling/?month=2026-10").content.decode()).tables
        october_csv = finance.get("/admin/billing/monthlybilling/wallets-csv/?month=2026-10")
        november_page = Tables(finance.get("/admin/billing/monthlybilling/?month=2026-11").content.decode()).tables
        november_csv = finance.get("/admin/billing/monthlybilling/wallets-csv/?month=2026-11")

    def globex(rows: list[list[str]]) -> list[str]:
        (row,) = [row for row in rows if row[1] == outsider.org.pk]
        return row

    def csv_rows(export) -> list[list[str]]:
        return list(csv.reader(io.StringIO(b"".join(export.streaming_content).decode("utf-8-sig"))))[1:]

    assert globex(october["wallet-months"]["tbody"])[6:] == ["$200.00", "", ""]
    assert globex(csv_rows(october_csv))[6:] == ["200.00", "", ""]
    assert globex(november_page["wallet-months"]["tbody"])[8] == "2026-11-28 10:00:00 UTC"
    assert globex(csv_rows(november_csv))[8] == "2026-11-28 10:00:00"


def test_past_due_since_is_as_the_month_ended_whatever_the_wallet_says_now(finance, owner):
    """The wallet list says whether a wallet is past due now, and since when. The month's table says how each
    month ended: short since the entry that last took it below zero, carried into the next month while it
    stays short, and nothing once a top-up covers it, whatever happened after."""
    moves = [
        (at(2026, 10, 10), 1000),
        (at(2026, 10, 20), -2000),  # short...
        (at(2026, 10, 25), 2000),  # ...covered
        (at(2026, 10, 28, 17, 30), -3000),  # short again: since here
        (at(2026, 11, 5), -500),  # still short
    ]
    for when, cents in moves:
        with time_machine.travel(when, tick=False):
            record = services.wallet_top_up if cents > 0 else services.wallet_adjust
            record(organization=owner.org, cents=cents, reason="moved")

    def shown(month: str) -> list[str]:
        (row,) = Tables(finance.get("/admin/billing/monthlybilling/", {"month": month}).content.decode()).tables[
            "wallet-months"
        ]["tbody"]
        return [row[6], row[7]]

    with time_machine.travel(at(2026, 11, 20), tick=False):  # November is this month: nothing recorded after it
        assert shown("2026-11") == ["-$25.00", "2026-10-28 17:30:00 UTC"]
        assert Wallet.objects.get(pk=owner.org.pk).past_due_since == at(2026, 10, 28, 17, 30)
    with time_machine.travel(at(2026, 12, 1, 8), tick=False):
        services.wallet_top_up(organization=owner.org, cents=10000, reason="covered")
    with time_machine.travel(at(2026, 12, 1, 9), tick=False):
        assert shown("2026-10") == ["-$20.00", "2026-10-28 17:30:00 UTC"]
        assert shown("2026-11") == ["-$25.00", "2026-10-28 17:30:00 UTC"]
        assert shown("2026-12") == ["$75.00", ""]
    assert Wallet.objects.get(pk=owner.org.pk).past_due_since is None


def test_the_wallet_list_shows_which_partners_were_off_boarded_and_what_they_hold(finance, owner, outsider):
    """Off-boarding leaves the wallet for finance to refund what is left (README), but the wallet list showed no
    sign of it: finance had to find off-boarded partners in Organizations (a page they may not view) and look
    each one up. The list says when each was off-boarded and filters on it."""
    services.wallet_top_up(organization=owner.org, cents=5000, reason="Wire")
    services.wallet_top_up(organization=outsider.org, cents=15100, reason="Wire")
    with time_machine.travel(at(2026, 11, 28, 10), tick=False):
        organization_offboard(organization_id=outsider.org.pk, by="ops")

    page = finance.get("/admin/billing/wallet/")
    offboarded = filter_link(page.content.decode(), "Off-boarded")
    assert offboarded is not None
    listed = finance.get("/admin/billing/wallet/" + offboarded)

    assert [w.pk for w in listed.context["cl"].result_list] == [outsider.org.pk]
    row = Tables(listed.content.decode()).tables["result_list"]
    assert row["thead"][0][1:4] == ["Balance", "Status", "Off-boarded at"]
    assert row["tbody"][0][1:4] == ["$151.00", "ok", "2026-11-28 10:00:00 UTC"]
    active = finance.get("/admin/billing/wallet/" + filter_link(page.content.decode(), "Active"))
    assert [w.pk for w in active.context["cl"].result_list] == [owner.org.pk]
    wallet_page = " ".join(
        re.sub(r"<[^>]+>", " ", finance.get(admin_object_url(Wallet, outsider.org.pk)).content.decode()).split()
    )
    assert "Off-boarded at: 2026-11-28 10:00:00 UTC" in wallet_page


def test_the_wallets_month_is_for_staff_who_may_view_wallets(owner):
    """The monthly report's charges are for staff who may view it; each wallet's balances, month after month,
    are what the wallet pages show, to staff who may view wallets: not handed to whoever may read the report."""
    services.wallet_top_up(organization=owner.org, cents=5000, reason="Wire")
    _user, reader = signed_in_staff("billing.view_monthlybilling", username="report-reader")

    page = reader.get("/admin/billing/monthlybilling/")
    export = reader.get("/admin/billing/monthlybilling/wallets-csv/")

    assert page.status_code == 200 and "charges" in Tables(page.content.decode()).tables
    assert "wallet-months" not in Tables(page.content.decode()).tables and "$50.00" not in page.content.decode()
    assert export.status_code == 403


def test_since_when_a_wallet_was_short_is_read_from_its_last_shortfall_not_its_whole_history(owner):
    """The month's table asks, for each wallet short at the month's end and moved since, since when it was
    short. Summed in order over each such wallet's whole ledger (a window sorted on disk), that cost 0.3 s per
    view of the monthly page at a year of entries (200,000) and 3 s at 2,000,000, growing with the history,
    on every view, paging through the charges included. Only the entries since it was last covered decide."""
    from django.db import connection

    from tests.billing.test_renewal_reads import rows_read

    history = 120
    for day in range(history):  # months of top-ups, always covered
        with time_machine.travel(at(2026, 3, 1) + (at(2026, 3, 2) - at(2026, 3, 1)) * day, tick=False):
            services.wallet_top_up(organization=owner.org, cents=100, reason="history")
    # Short from October 28, and paid on December 1: the wallet no longer says since when it was short.
    for when, cents in [(at(2026, 10, 28, 17, 30), -20000), (at(2026, 11, 5), -500), (at(2026, 12, 1, 8), 10000)]:
        with time_machine.travel(when, tick=False):
            record = services.wallet_top_up if cents > 0 else services.wallet_adjust
            record(organization=owner.org, cents=cents, reason="moved")
    (november,) = [w for w in reports._wallet_months(at(2026, 11, 1).date(), None) if w.organization_id == owner.org.pk]
    assert november.closing == history * 100 - 20500 < 0
    assert Wallet.objects.get(pk=owner.org.pk).past_due_since is None
    # A table this small is cheapest to scan whole; what is measured is what is read when it is large.
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
    read = rows_read("billing_ledgerentry")

    since = reports._past_due_since({owner.org.pk: november.closing}, at(2026, 12, 1))

    assert since == {owner.org.pk: at(2026, 10, 28, 17, 30)}
    assert rows_read("billing_ledgerentry") - read < 30


def test_since_when_wallets_were_short_is_read_in_a_few_queries_however_many_wallets_were_short():
    """The bench's month (200 wallets short at its end, all topped up or charged since) walked each wallet's
    ledger on its own: 600 queries, 0.67 s per view of the monthly page against 0.14 s before the wallets'
    month. The wallets are walked together, a chunk of each at a time, so the page costs the same queries for
    one short wallet as for many, and says the same."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tests.conftest import make_tenant

    def short_in_october_paid_in_november(name: str, entries: int) -> str:
        org = make_tenant(name).org
        for i in range(entries):  # more entries than a first chunk: each wallet needs more than one read
            with time_machine.travel(at(2026, 10, 2 + i % 20, 9, i), tick=False):
                services.wallet_adjust(organization=org, cents=-100, reason="moved")
        with time_machine.travel(at(2026, 11, 3), tick=False):
            services.wallet_top_up(organization=org, cents=100 * entries, reason="covered")
        return org.pk

    def queries(organization_ids: list[str]) -> tuple[int, dict]:
        with CaptureQueriesContext(connection) as ctx:
            since = reports._past_due_since({pk: -100 * 30 for pk in organization_ids}, at(2026, 11, 1))
        return len(ctx.captured_queries), since

    first = short_in_october_paid_in_november("Short 0", 30)
    one, since_one = queries([first])
    others = [short_in_october_paid_in_november(f"Short {n}", 30) for n in range(1, 6)]
    many, since_many = queries([first, *others])

    assert since_one == {first: at(2026, 10, 2, 9, 0)}
    assert since_many == {pk: at(2026, 10, 2, 9, 0) for pk in [first, *others]}
    assert many == one
