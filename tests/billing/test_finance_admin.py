"""Finance in the admin: the monthly billing page (every charged leased account of the month, organization
totals, 12-month chart, CSV of exactly the rows shown), top-ups and adjustments recorded with who did
them, wallets flagged past due, and a ledger nobody can add to, edit or delete from in the admin."""

import csv
import io
import re
from datetime import UTC, date, datetime
from decimal import Decimal
from html.parser import HTMLParser

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from billing import reports, services
from billing.admin import LedgerEntryAdmin
from billing.models import LedgerEntry, Wallet
from tests.admin_plans import reading_whole_table, statements_on
from tests.billing.factories import balance, lease_assign
from tests.staff import admin_object_url, staff_login, with_mfa

pytestmark = pytest.mark.django_db


class Tables(HTMLParser):
    """Text of every cell of every <table id=…>, by id: {"charges": [[cell, …], …]} (thead/tbody/tfoot)."""

    def __init__(self, html: str):
        super().__init__()
        self.tables: dict[str, dict[str, list[list[str]]]] = {}
        self._table = self._section = None
        self._cell: list[str] | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and attrs.get("id"):
            self._table = self.tables.setdefault(attrs["id"], {"thead": [], "tbody": [], "tfoot": []})
        elif tag in ("thead", "tbody", "tfoot") and self._table is not None:
            self._section = self._table[tag]
        elif tag == "tr" and self._section is not None:
            self._section.append([])
        elif tag in ("td", "th") and self._section is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._section[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table":
            self._table = self._section = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture
def finance(db):
    user = with_mfa(get_user_model().objects.create_superuser("finance", "fin@layers.test", "pw-fin-12345"))
    client = Client()
    staff_login(client, user)
    client.user = user
    return client


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


PERIOD_COLUMNS = (7, 8)


def as_in_csv(row: list[str]) -> list[str]:
    """A row of the page as the CSV has it: the period times without the zone the page adds (the CSV's
    header says UTC; a bare time is what a spreadsheet reads as a date)."""
    return [cell.removesuffix(" UTC") if i in PERIOD_COLUMNS else cell for i, cell in enumerate(row)]


@pytest.fixture
def march(owner, sibling, outsider):
    """Charges whose periods start in March 2026 (and some in other months that must not show)."""
    a = lease_assign(owner, price_cents=4900, at=at(2026, 1, 31, 10))  # renews Feb 28, Mar 31
    b = lease_assign(owner, price_cents=2500, at=at(2026, 3, 5), project=owner.projects[1])
    c = lease_assign(sibling, price_cents=9900, at=at(2026, 2, 14))  # renews Mar 14
    lease_assign(outsider, price_cents=1000, at=at(2026, 4, 1))  # April only
    services.lease_charges_run(now=at(2026, 4, 2))
    return a, b, c


def test_the_monthly_page_lists_every_charged_account_with_org_totals(finance, owner, sibling, march):
    response = finance.get("/admin/billing/monthlybilling/?month=2026-03")

    assert response.status_code == 200
    tables = Tables(response.content.decode()).tables
    rows = tables["charges"]["tbody"]
    a, b, c = march
    assert [(r[0], r[4], r[6], r[7], r[9]) for r in rows] == [
        ("Acme", a.pool_account.handle, "3", "2026-03-31 10:00:00 UTC", "49.00"),
        ("Acme", b.pool_account.handle, "1", "2026-03-05 00:00:00 UTC", "25.00"),
        ("Acme Labs", c.pool_account.handle, "2", "2026-03-14 00:00:00 UTC", "99.00"),
    ]
    assert [r[2] for r in rows] == [owner.projects[0].name, owner.projects[1].name, sibling.project.name]
    assert tables["org-totals"]["tbody"] == [
        ["Acme", owner.org.pk, "2", "$74.00"],
        ["Acme Labs", sibling.org.pk, "1", "$99.00"],
    ]
    assert tables["org-totals"]["tfoot"] == [["Total", "3", "$173.00"]]
    march_charges = LedgerEntry.objects.filter(
        kind="lease_charge", period_start__gte=at(2026, 3, 1), period_start__lt=at(2026, 4, 1)
    )
    assert -sum(march_charges.values_list("amount_cents", flat=True)) == 17300
    html = response.content.decode()
    assert 'id="monthly-chart"' in html and 'data-month="2026-03"' in html and 'data-value="$173.00"' in html
    assert 'data-month="2025-04"' in html and 'data-month="2026-04"' not in html  # the 12 months up to March
    assert 'data-month="2026-02" data-value="$148.00"' in html  # a's first renewal (Feb 28) and c's first month


def test_the_csv_is_exactly_the_rows_of_the_page(finance, march, owner):
    for query in ("month=2026-03", "month=2026-01", f"month=2026-03&organization={owner.org.pk}"):
        page = Tables(finance.get(f"/admin/billing/monthlybilling/?{query}").content.decode()).tables["charges"]
        export = finance.get(f"/admin/billing/monthlybilling/csv/?{query}")

        assert export.status_code == 200
        assert export["Content-Type"].startswith("text/csv")
        assert "attachment" in export["Content-Disposition"]
        lines = list(csv.reader(io.StringIO(b"".join(export.streaming_content).decode("utf-8-sig"))))
        assert lines[0] == page["thead"][0]
        shown = [as_in_csv(r) for r in page["tbody"] if len(r) > 1]  # the "no charge" placeholder is not a row
        assert lines[1:] == shown
        assert len(shown) == {"month=2026-03": 3, "month=2026-01": 1}.get(query, 2)


def test_period_times_are_shown_to_the_second_in_utc_like_the_partner_api_and_the_rest_of_the_admin(finance, owner):
    # The partner's GET /v1/wallet/entries says periodStart "2026-03-01T12:31:05Z"; finance compares.
    lease_assign(owner, price_cents=4900, at=at(2026, 3, 1, 12, 31, 5))

    page = Tables(finance.get("/admin/billing/monthlybilling/?month=2026-03").content.decode()).tables["charges"]
    export = finance.get("/admin/billing/monthlybilling/csv/?month=2026-03")
    rows = list(csv.reader(io.StringIO(b"".join(export.streaming_content).decode("utf-8-sig"))))

    (row,) = page["tbody"]
    assert (row[7], row[8]) == ("2026-03-01 12:31:05 UTC", "2026-04-01 12:31:05 UTC")
    start, end = rows[0].index("Period start (UTC)"), rows[0].index("Period end (UTC)")
    assert (rows[1][start], rows[1][end]) == ("2026-03-01 12:31:05", "2026-04-01 12:31:05")


def test_the_wallet_page_shows_its_latest_entries_to_the_second_in_utc(finance, owner):
    with time_machine.travel(at(2026, 3, 1, 12, 31, 5, 700000), tick=False):
        services.wallet_top_up(organization=owner.org, cents=1000, reason="wire")

    page = finance.get(admin_object_url(Wallet, owner.org.pk)).content.decode()

    assert "<td>2026-03-01 12:31:05 UTC</td>" in page


def test_a_long_month_is_shown_a_page_at_a_time_with_totals_and_csv_over_every_page(
    finance, march, owner, sibling, monkeypatch
):
    monkeypatch.setattr(reports, "PAGE_SIZE", 2)
    pages = {}
    for number in ("1", "2"):
        response = finance.get(f"/admin/billing/monthlybilling/?month=2026-03&page={number}")
        html = response.content.decode()
        pages[number] = (Tables(html).tables, html)

    first, first_html = pages["1"]
    second, second_html = pages["2"]
    a, b, c = march
    assert [r[4] for r in first["charges"]["tbody"]] == [a.pool_account.handle, b.pool_account.handle]
    assert [r[4] for r in second["charges"]["tbody"]] == [c.pool_account.handle]
    for tables, html in pages.values():  # the totals are the month's, whatever the page
        assert tables["org-totals"]["tfoot"] == [["Total", "3", "$173.00"]]
        assert tables["org-totals"]["tbody"][0] == ["Acme", owner.org.pk, "2", "$74.00"]
        assert 'id="charge-count">3<' in html
    assert "Rows 1–2 of 3" in first_html and "Page 1 of 2" in first_html
    assert "month=2026-03&amp;page=2" in first_html and "page=0" not in first_html
    assert "Rows 3–3 of 3" in second_html and "month=2026-03&amp;page=1" in second_html

    # The CSV is every page, in the page's order.
    export = finance.get("/admin/billing/monthlybilling/csv/?month=2026-03&page=2")
    lines = list(csv.reader(io.StringIO(b"".join(export.streaming_content).decode("utf-8-sig"))))
    assert lines[1:] == [as_in_csv(r) for r in first["charges"]["tbody"] + second["charges"]["tbody"]]

    # A page past the last is the last one, a page that is not a number the first; the filter is kept.
    assert "Rows 3–3 of 3" in finance.get("/admin/billing/monthlybilling/?month=2026-03&page=99").content.decode()
    assert "Rows 1–2 of 3" in finance.get("/admin/billing/monthlybilling/?month=2026-03&page=x").content.decode()
    acme = f"/admin/billing/monthlybilling/?month=2026-03&organization={owner.org.pk}"
    assert 'class="billing-pages"' not in finance.get(acme).content.decode()  # its two rows fit on one page
    monkeypatch.setattr(reports, "PAGE_SIZE", 1)
    acme_first = finance.get(acme).content.decode()
    assert "Rows 1–1 of 2" in acme_first and f"organization={owner.org.pk}&amp;page=2" in acme_first


def test_staff_record_a_top_up_with_a_reason_and_who_did_it_once_per_form(finance, owner):
    lease_assign(owner, price_cents=4900)
    assert Wallet.objects.get(pk=owner.org.pk).status == "past_due"
    form = finance.get(f"/admin/billing/wallet/record/?organization={owner.org.pk}")
    token = form.context["form"]["token"].value()
    data = {"organization": owner.org.pk, "kind": "top_up", "amount": "100.50", "reason": "Wire 7781", "token": token}

    first = finance.post("/admin/billing/wallet/record/", data, follow=True)
    again = finance.post("/admin/billing/wallet/record/", data, follow=True)  # double submission of the same form

    assert first.redirect_chain[0][1] == again.redirect_chain[0][1] == 302
    assert [str(m) for m in first.context["messages"]] == ["Top-up of $100.50 recorded for Acme; balance $51.50."]
    (repeat,) = [str(m) for m in again.context["messages"]]
    assert repeat.startswith("Already recorded on ") and "nothing added" in repeat and "recorded for" not in repeat
    entry = LedgerEntry.objects.get(organization=owner.org, kind="top_up")
    assert (entry.amount_cents, entry.reason, entry.actor) == (10050, "Wire 7781", finance.user)
    wallet = Wallet.objects.get(pk=owner.org.pk)
    assert (balance(owner), wallet.status) == (5150, "ok")
    page = finance.get(first.redirect_chain[0][0])
    assert "Wire 7781" in page.content.decode() and "$51.50" in page.content.decode()


def test_a_reference_recorded_before_records_nothing_and_finance_is_told_so(finance, owner):
    base = {"organization": owner.org.pk, "kind": "top_up", "amount": "500.00", "reference": "wire-7781"}
    finance.post("/admin/billing/wallet/record/", {**base, "reason": "Wire 7781", "token": "a" * 32}, follow=True)
    second = finance.post(
        "/admin/billing/wallet/record/", {**base, "reason": "Wire 7781 (Acme)", "token": "b" * 32}, follow=True
    )

    assert balance(owner) == 50000
    (said,) = [str(m) for m in second.context["messages"]]
    assert said.startswith("Already recorded on ") and f"by {finance.user}" in said and "“Wire 7781”" in said
    assert "nothing added" in said and "$500.00" in said


def test_staff_record_a_debit_adjustment_which_needs_a_reason(finance, owner):
    services.wallet_top_up(organization=owner.org, cents=1000)
    base = {"organization": owner.org.pk, "kind": "adjustment", "amount": "-25.00", "token": "t1"}

    refused = finance.post("/admin/billing/wallet/record/", {**base, "reason": ""})
    assert refused.status_code == 200 and refused.context["form"].errors
    zero = finance.post("/admin/billing/wallet/record/", {**base, "amount": "0", "reason": "x", "token": "t2"})
    assert zero.status_code == 200 and "amount" in zero.context["form"].errors
    negative_top_up = finance.post(
        "/admin/billing/wallet/record/", {**base, "kind": "top_up", "reason": "x", "token": "t3"}
    )
    assert negative_top_up.status_code == 200 and "amount" in negative_top_up.context["form"].errors
    assert finance.post("/admin/billing/wallet/record/", {**base, "reason": "Chargeback"}).status_code == 302

    entry = LedgerEntry.objects.get(organization=owner.org, kind="adjustment")
    assert (entry.amount_cents, entry.reason, entry.actor) == (-2500, "Chargeback", finance.user)
    assert balance(owner) == -1500
    assert Wallet.objects.get(pk=owner.org.pk).status == "past_due"


@pytest.mark.parametrize(("kind", "amount"), [("top_up", "25000.00"), ("adjustment", "-10000"), ("top_up", "10000.00")])
def test_a_large_amount_is_recorded_only_once_finance_confirms_it(finance, owner, kind, amount):
    # An extra zero typed by mistake ($25,000 for $2,500.00) would be money shown to the partner and
    # corrected only by a second entry: the form asks first.
    data = {"organization": owner.org.pk, "kind": kind, "amount": amount, "reason": "Wire 7781", "token": "t1"}

    asked = finance.post("/admin/billing/wallet/record/", data)

    assert asked.status_code == 200
    (said,) = asked.context["form"].errors["amount"]
    assert f"${Decimal(amount).copy_abs():,.2f}" in said and "confirm" in said.lower()
    assert not LedgerEntry.objects.filter(organization=owner.org).exists()
    confirmed = finance.post("/admin/billing/wallet/record/", {**data, "confirm_large_amount": "on"})
    assert confirmed.status_code == 302
    assert balance(owner) == int(Decimal(amount) * 100)


def test_an_amount_below_the_confirmation_threshold_needs_no_confirmation(finance, owner):
    data = {"organization": owner.org.pk, "kind": "top_up", "amount": "9999.99", "reason": "Wire", "token": "t1"}

    assert finance.post("/admin/billing/wallet/record/", data).status_code == 302
    assert balance(owner) == 999999


@pytest.mark.parametrize("amount", ["1e3", "1E3", "2.5e2", "1e-2"])
def test_an_amount_in_exponent_notation_is_refused_not_read_as_a_number(finance, owner, amount):
    data = {"organization": owner.org.pk, "kind": "top_up", "amount": amount, "reason": "Wire", "token": "t1"}

    refused = finance.post("/admin/billing/wallet/record/", {**data, "confirm_large_amount": "on"})

    assert refused.status_code == 200
    assert "digits" in " ".join(refused.context["form"].errors["amount"])
    assert not LedgerEntry.objects.filter(organization=owner.org).exists()


def test_staff_without_the_finance_permissions_cannot_record_money_or_see_the_report(owner):
    user = get_user_model().objects.create_user("ops", password="pw-ops-12345", is_staff=True)
    client = Client()
    client.force_login(user)
    data = {"organization": owner.org.pk, "kind": "top_up", "amount": "5", "reason": "x", "token": "t"}

    assert client.post("/admin/billing/wallet/record/", data).status_code == 403
    assert client.get("/admin/billing/monthlybilling/?month=2026-03").status_code == 403
    assert client.get("/admin/billing/monthlybilling/csv/?month=2026-03").status_code == 403
    assert not LedgerEntry.objects.exists()

    user.user_permissions.add(Permission.objects.get(codename="view_monthlybilling"))
    assert client.get("/admin/billing/monthlybilling/csv/?month=2026-03").status_code == 200


def test_the_report_is_linked_from_the_admin_index_and_the_wallet_list(finance, owner):
    lease_assign(owner, price_cents=4900)

    index = finance.get("/admin/").content.decode()
    assert 'href="/admin/billing/monthlybilling/"' in index
    wallets = finance.get("/admin/billing/wallet/?status=past_due").content.decode()
    assert "past due" in wallets and "Acme" in wallets and "-$49.00" in wallets
    assert 'href="/admin/billing/wallet/record/"' in wallets
    assert list(finance.get("/admin/billing/wallet/?status=ok").context["cl"].result_list) == []


def test_ledger_rows_cannot_be_added_changed_or_deleted_in_the_admin(finance, owner):
    entry = services.wallet_top_up(organization=owner.org, cents=1000, reason="wire")
    base = "/admin/billing/ledgerentry/"

    assert finance.get(base).status_code == 200
    assert finance.get(f"{base}add/").status_code == 403
    assert finance.get(admin_object_url(LedgerEntry, entry.pk, "delete")).status_code == 403
    finance.post(admin_object_url(LedgerEntry, entry.pk), {"amount_cents": "999999", "reason": "edited"})
    finance.post(base, {"action": "delete_selected", "_selected_action": [entry.pk], "post": "yes"})

    assert LedgerEntry.objects.filter(pk=entry.pk, amount_cents=1000, reason="wire").exists()
    detail = finance.get(admin_object_url(LedgerEntry, entry.pk)).content.decode()
    assert 'name="_save"' not in detail and "wire" in detail
    assert finance.get(admin_object_url(Wallet, owner.org.pk, "delete")).status_code == 403


def test_after_recording_money_staff_land_on_the_wallet_whatever_the_organization_id(finance):
    # "_22" right after the prefix is what the admin's URL escaping reads as a double quote: the redirect
    # must escape the id as the admin does (about one organization in forty has such an id).
    from accounts.models import Organization

    org = Organization.objects.create(id="org_22805d091a8548f9b6c01bacb9bfc25d", name="Quote Co")
    form = finance.get(f"/admin/billing/wallet/record/?organization={org.pk}")
    token = form.context["form"]["token"].value()
    data = {"organization": org.pk, "kind": "top_up", "amount": "10.00", "reason": "Wire 1", "token": token}

    done = finance.post("/admin/billing/wallet/record/", data)
    page = finance.get(done["Location"])

    assert page.status_code == 200, page.status_code
    assert page.context["original"] == Wallet.objects.get(pk=org.pk)


def test_staff_who_may_record_money_but_not_view_wallets_are_told_it_was_recorded(owner):
    """A treasurer holding only "Can record top-ups and adjustments" was sent, after recording, to the wallet
    page they may not view: a bare 403 Forbidden, the success message unseen. Read as a failure, the natural
    next step was to open the form again and record the money a second time (a new form, a new entry)."""
    from tests.staff import signed_in_staff

    _, treasurer = signed_in_staff("billing.record_money", mfa=True, username="treasurer")
    form = treasurer.get(f"/admin/billing/wallet/record/?organization={owner.org.pk}")
    token = form.context["form"]["token"].value()
    data = {"organization": owner.org.pk, "kind": "top_up", "amount": "250.00", "reason": "Prepaid", "token": token}

    done = treasurer.post("/admin/billing/wallet/record/", data, follow=True)

    assert done.status_code == 200, done.content.decode()[:500]
    assert [str(m) for m in done.context["messages"]] == ["Top-up of $250.00 recorded for Acme; balance $250.00."]
    assert balance(owner) == 25000


def test_renaming_a_pool_account_does_not_rewrite_what_was_billed(finance, owner):
    from leasing.models import PoolAccount

    lease = lease_assign(owner, price_cents=4900, at=at(2026, 3, 10))
    before = owner.client.get("/v1/wallet/entries").json()["data"][0]
    report_before = [reports._row(row) for row in reports._rows(at(2026, 3, 1).date(), None)]
    pool = PoolAccount.objects.get(pk=lease.pool_account_id)
    form = finance.get(admin_object_url(PoolAccount, pool.pk)).context["adminform"].form
    data = {name: form[name].value() for name in form.fields if form[name].value() is not None}
    saved = finance.post(admin_object_url(PoolAccount, pool.pk), {**data, "handle": "renamed.account"})
    assert saved.status_code == 302, saved.context["adminform"].form.errors
    assert PoolAccount.objects.get(pk=pool.pk).handle == "renamed.account"

    after = owner.client.get("/v1/wallet/entries").json()["data"][0]
    assert after == before and f"@{pool.handle}" in after["description"]
    assert [reports._row(row) for row in reports._rows(at(2026, 3, 1).date(), None)] == report_before
    page = finance.get(f"/admin/billing/ledgerentry/?q={pool.handle}").content.decode()
    assert f"@{pool.handle}, month 1" in page


def test_the_finance_csv_defuses_names_a_spreadsheet_would_run_as_formulas(owner, django_user_model):
    """A partner names its organization and projects: opened in a spreadsheet, a name starting with = or +
    would run as a formula on finance's machine (a link to click, a cell reading others). billing/reports._cell
    prefixes an apostrophe."""
    owner.org.name = '=HYPERLINK("https://evil.test","Pay here")'
    owner.org.save(update_fields=["name"])
    owner.project.name = "+SUM(A1:A9)"
    owner.project.save(update_fields=["name"])
    lease_assign(owner, price_cents=4900, at=at(2026, 3, 5))
    finance = Client()
    staff_login(finance, with_mfa(django_user_model.objects.create_superuser("fin", "f@layers.test", "pw-fin-12345")))

    export = finance.get("/admin/billing/monthlybilling/csv/?month=2026-03")
    rows = list(csv.reader(io.StringIO(b"".join(export.streaming_content).decode("utf-8-sig"))))

    assert rows[1][0] == "'" + owner.org.name
    assert rows[1][2] == "'+SUM(A1:A9)"


def test_the_finance_csv_opens_in_a_spreadsheet_with_its_accents_and_emoji_intact(finance, owner):
    """The CSV was UTF-8 without a byte order mark: Excel on Windows read it in the machine's code page and
    showed "SociÃ©tÃ© GÃ©nÃ©rale". It now starts with the UTF-8 BOM, which tells a spreadsheet its encoding."""
    owner.org.name = "Société Générale"
    owner.org.save(update_fields=["name"])
    owner.project.name = "Café \U0001f680"
    owner.project.save(update_fields=["name"])
    lease_assign(owner, price_cents=4900, at=at(2026, 3, 5))

    export = finance.get("/admin/billing/monthlybilling/csv/?month=2026-03")
    raw = b"".join(export.streaming_content)

    assert raw.startswith(b"\xef\xbb\xbf" + b"Organization")
    assert raw.count(b"\xef\xbb\xbf") == 1  # once, before the header: not before every line
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    assert (rows[1][0], rows[1][2]) == ("Société Générale", "Café \U0001f680")


@pytest.mark.parametrize("month", ["2026-13", "abc", "0001-01", "2026-00", "9999-12"])
def test_an_unreadable_month_says_so_and_shows_this_month(finance, month):
    """`?month=2026-13` (or `abc`, `0001-01`) silently showed the current month, which finance could take for
    the month they asked for. The page now says the month was not understood, and which one it shows; the CSV,
    which has no page to say it on, is a 400."""
    with time_machine.travel(datetime(2026, 4, 15, 12, tzinfo=UTC), tick=False):
        page = finance.get("/admin/billing/monthlybilling/", {"month": month})
        export = finance.get("/admin/billing/monthlybilling/csv/", {"month": month})
        fine = finance.get("/admin/billing/monthlybilling/", {"month": "2026-03"})
        default = finance.get("/admin/billing/monthlybilling/")

    shown = [str(m) for m in page.context["messages"]]
    assert page.status_code == 200 and page.context["title"] == "Monthly billing — April 2026"
    assert shown == ["Month not understood: it must be YYYY-MM between 2000-01 and 9998-12. Showing April 2026."]
    assert export.status_code == 400 and "YYYY-MM" in export.content.decode()
    assert not list(fine.context["messages"]) and fine.context["title"] == "Monthly billing — March 2026"
    assert not list(default.context["messages"]) and default.context["title"] == "Monthly billing — April 2026"


def typo(org_id: str) -> str:
    return org_id[:-1] + ("0" if org_id[-1] != "0" else "1")


@pytest.mark.parametrize(
    "asked, says",
    [(str.upper, "not an organization id (org_ and 32 lowercase"), (typo, "no organization has the id org_")],
    ids=["upper-case", "typo"],
)
def test_a_csv_asked_for_one_organization_never_holds_every_partners_charges(
    finance, owner, sibling, outsider, asked, says
):
    """`?organization=` with an id no organization has (upper case, one digit wrong) answered 200 with every
    organization's charges, named like the month's whole file: one partner's statement, sent on, would have
    held every other partner's. The CSV now refuses it, as it refuses an unreadable month."""
    lease_assign(owner, price_cents=4900, at=at(2026, 3, 5))
    lease_assign(sibling, price_cents=9900, at=at(2026, 3, 6))
    lease_assign(outsider, price_cents=1000, at=at(2026, 3, 7))

    response = finance.get(
        "/admin/billing/monthlybilling/csv/", {"month": "2026-03", "organization": asked(owner.org.pk)}
    )

    assert response.status_code == 400
    body = response.content.decode()
    assert body.startswith(f"organization: {says}")
    assert sibling.org.pk not in body and outsider.org.pk not in body


def test_an_organization_id_pasted_with_spaces_around_it_is_that_organization(finance, owner, sibling):
    """An id copied from a page or a mail often comes with a space: no id holds one, so it names that
    organization and nothing else."""
    lease_assign(owner, price_cents=4900, at=at(2026, 3, 5))
    lease_assign(sibling, price_cents=9900, at=at(2026, 3, 6))

    export = finance.get(
        "/admin/billing/monthlybilling/csv/", {"month": "2026-03", "organization": f" {owner.org.pk} "}
    )
    page = finance.get("/admin/billing/monthlybilling/", {"month": "2026-03", "organization": f"{owner.org.pk} "})

    rows = list(csv.reader(io.StringIO(b"".join(export.streaming_content).decode("utf-8-sig"))))
    assert export.status_code == 200 and [r[1] for r in rows[1:]] == [owner.org.pk]
    assert export["Content-Disposition"] == f'attachment; filename="billing-2026-03-{owner.org.pk}.csv"'
    assert [t.organization_id for t in page.context["report"].org_totals] == [owner.org.pk]
    assert not list(page.context["messages"])


@pytest.mark.parametrize("asked", [str.upper, typo, lambda org_id: " "], ids=["upper-case", "typo", "blank"])
def test_the_page_asked_for_an_unknown_organization_says_so_before_showing_every_one(finance, owner, sibling, asked):
    """The page silently showed every organization for an id it did not know. It still shows them (as an
    unreadable month shows this month), under a warning that says the organization was not found, with
    "All organizations" selected and a CSV link for all of them, not for the id asked."""
    lease_assign(owner, price_cents=4900, at=at(2026, 3, 5))
    lease_assign(sibling, price_cents=9900, at=at(2026, 3, 6))

    page = finance.get("/admin/billing/monthlybilling/", {"month": "2026-03", "organization": asked(owner.org.pk)})
    every = finance.get("/admin/billing/monthlybilling/", {"month": "2026-03", "organization": ""})

    (shown,) = [str(m) for m in page.context["messages"]]
    assert shown.startswith("Organization not found: ") and shown.endswith(" Showing every organization.")
    assert page.context["csv_url"] == "/admin/billing/monthlybilling/csv/?month=2026-03"
    assert not re.search(r"<option [^>]*selected", page.content.decode())  # the first: "All organizations"
    assert [t.organization_id for t in page.context["report"].org_totals] == [owner.org.pk, sibling.org.pk]
    # "All organizations" in the form sends an empty id: every organization, nothing to warn about.
    assert not list(every.context["messages"]) and len(every.context["report"].org_totals) == 2


@pytest.mark.parametrize(
    "cents, label",
    [
        (0, "$0"),
        (99_949, "$999"),
        (99_999, "$1.0k"),  # $999.99 read "$1,000"
        (100_000, "$1.0k"),
        (994_999, "$9.9k"),
        (999_999, "$10k"),  # $9,999.99 read "$10.0k"
        (1_000_000, "$10k"),
        (99_949_999, "$999k"),
        (99_999_999, "$1.0M"),  # $999,999.99 read "$1000k"
        (100_000_000, "$1.0M"),
        (123_456_789, "$1.2M"),
        (99_994_999_999, "$999.9M"),
        (99_995_000_000, "$1.0B"),  # $999,950,000 read "$1000.0M"
        (123_456_789_012, "$1.2B"),
    ],
)
def test_a_chart_bar_is_labelled_in_the_unit_of_its_rounded_amount(cents, label):
    """The label above a bar of the 12-month chart is its amount, short. The unit was chosen before rounding:
    a month of $999,999.99 was labelled "$1000k" beside a "$1.0M" bar."""
    (bar,) = reports.chart_svg([reports.ChartBar(month=date(2026, 3, 1), cents=cents, selected=True)])["bars"]
    assert bar["short"] == label


LEDGER = "/admin/billing/ledgerentry/"


def test_the_ledger_list_reads_the_ledger_once_for_its_page_and_once_to_count_it(finance, owner, outsider):
    """The ledger grows by a charge per leased account and month, never purged. Its list had a date
    hierarchy: MIN/MAX and the distinct years of every entry matching the search, two more passes of the
    substring search over the ledger, and a count of the whole table beside the search's. An entry, an
    organization or a leased account id (`le_…`, `org_…`, `sa_…`, as the partner's wallet entries show them)
    is matched exactly, by index."""
    lease = lease_assign(owner, price_cents=4900)
    charge = LedgerEntry.objects.get(lease=lease)
    top_up = services.wallet_top_up(organization=owner.org, cents=1000, reason="wire 42")
    other = services.wallet_top_up(organization=outsider.org, cents=1000, reason="wire 43")
    searches = {
        "Acme": {charge.pk, top_up.pk},
        "wire": {top_up.pk, other.pk},
        f"@{lease.handle}": {charge.pk},
        top_up.pk: {top_up.pk},
        "L" + top_up.pk[1:]: {top_up.pk},  # as copied from the start of a sentence
        owner.org.pk: {charge.pk, top_up.pk},
        lease.social_account_id: {charge.pk},
    }

    for term, expected in searches.items():
        with CaptureQueriesContext(connection) as captured:
            page = finance.get(LEDGER, {"q": term})
        assert {e.pk for e in page.context["cl"].result_list} == expected, term
        on_ledger = statements_on(captured, "billing_ledgerentry")
        assert len(on_ledger) == 2, (term, on_ledger)  # its count and its page
        assert not [sql for sql in on_ledger if re.search(r"DISTINCT|MIN\(|MAX\(", sql)], term
        if term.startswith(("le_", "L", "org_", "sa_")):
            assert not [sql for sql in on_ledger if " LIKE " in sql], term
            assert reading_whole_table(on_ledger, "billing_ledgerentry") == [], term


def test_the_unfiltered_ledger_list_does_not_count_every_entry(finance, owner, settings):
    services.wallet_top_up(organization=owner.org, cents=1000, reason="wire")
    services.wallet_top_up(organization=owner.org, cents=2000, reason="wire again")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE billing_ledgerentry")
    settings.LAYERS_ADMIN_EXACT_COUNT_BELOW = 2

    with CaptureQueriesContext(connection) as captured:
        page = finance.get(LEDGER)

    assert len(page.context["cl"].result_list) == 2
    assert not [sql for sql in statements_on(captured, "billing_ledgerentry") if "COUNT(" in sql.upper()]


def money_then_three_charges(tenant):
    """$100 in, then three months of a $49 lease: the balance reads $100, $51, $2, -$47. Recorded in 2030 (the
    bulk renewal's entry ids take the database's real clock, so ledger order and id order disagree here, as
    they may between two clocks in production: the ledger's order is its time, then its id)."""
    with time_machine.travel(at(2030, 1, 20), tick=False):
        services.wallet_top_up(organization=tenant.org, cents=10000, reason="wire")
    with time_machine.travel(at(2030, 1, 31, 10), tick=False):
        lease_assign(tenant, price_cents=4900, at=at(2030, 1, 31, 10))
    for month in (3, 4):
        with time_machine.travel(at(2030, month, 1), tick=False):
            services.lease_charges_run(now=at(2030, month, 1))
    assert balance(tenant) == -4700


def test_the_wallet_page_shows_the_balance_after_each_entry_down_to_the_wallets_balance(finance, owner, outsider):
    money_then_three_charges(owner)
    services.wallet_top_up(organization=outsider.org, cents=99900, reason="another partner's money")

    with CaptureQueriesContext(connection) as captured:
        page = finance.get(admin_object_url(Wallet, owner.org.pk)).content.decode()

    assert "$51.00" in page and "$2.00" in page
    table = Tables(page).tables["latest-entries"]
    assert "balance after" in table["thead"][0]
    column = table["thead"][0].index("balance after")
    amounts = [row[2] for row in table["tbody"]]
    assert amounts == ["-$49.00", "-$49.00", "-$49.00", "$100.00"]  # newest first
    assert [row[column] for row in table["tbody"]] == ["-$47.00", "$2.00", "$51.00", "$100.00"]
    # The newest entry's balance after is the wallet's balance: the cached balance agrees with the ledger.
    assert table["tbody"][0][column] == reports.usd_display(Wallet.objects.get(pk=owner.org.pk).balance_cents)
    assert len(statements_on(captured, "billing_ledgerentry")) == 1


def test_the_ledger_of_one_organization_shows_the_balance_after_each_entry_in_ledger_order(
    finance, owner, outsider, monkeypatch
):
    money_then_three_charges(owner)
    services.wallet_top_up(organization=outsider.org, cents=99900, reason="another partner's money")
    one_org = {"organization__id__exact": owner.org.pk}

    with CaptureQueriesContext(connection) as captured:
        page = finance.get(LEDGER, one_org)
    rows = list(page.context["cl"].result_list)
    html = page.content.decode()

    assert [e.amount_cents for e in rows] == [-4900, -4900, -4900, 10000]  # newest first, as the wallet page
    assert [reports.usd_display(e.balance_after) for e in rows] == ["-$47.00", "$2.00", "$51.00", "$100.00"]
    assert 'class="column-balance_after"' in html and "$51.00" in html and "$2.00" in html
    assert rows[0].balance_after == Wallet.objects.get(pk=owner.org.pk).balance_cents
    on_ledger = statements_on(captured, "billing_ledgerentry")
    assert reading_whole_table(on_ledger, "billing_ledgerentry") == []  # the window reads one organization's rows

    # Narrowed further (charges only), or on a later page, each entry keeps its balance in the whole ledger.
    charges = finance.get(LEDGER, {**one_org, "kind__exact": "lease_charge"}).context["cl"].result_list
    assert [reports.usd_display(e.balance_after) for e in charges] == ["-$47.00", "$2.00", "$51.00"]
    monkeypatch.setattr(LedgerEntryAdmin, "list_per_page", 2)
    second = finance.get(LEDGER, {**one_org, "p": "2"}).context["cl"].result_list
    assert [reports.usd_display(e.balance_after) for e in second] == ["$51.00", "$100.00"]


def test_the_ledger_of_every_organization_sums_no_window_over_the_whole_ledger(finance, owner, outsider):
    money_then_three_charges(owner)
    services.wallet_top_up(organization=outsider.org, cents=99900, reason="another partner's money")

    for query in ({}, {"q": owner.org.pk}, {"kind__exact": "top_up"}):
        with CaptureQueriesContext(connection) as captured:
            page = finance.get(LEDGER, query)
        assert not [sql for sql in statements_on(captured, "billing_ledgerentry") if " OVER " in sql], query
        assert 'class="column-balance_after"' not in page.content.decode(), query


def test_a_month_over_whose_last_renewals_are_not_charged_yet_says_its_totals_are_not_final(finance, owner):
    """A lease assigned Jan 31 at 23:55 renews Feb 28 at 23:55; the job (every 15 minutes) last ran at 23:45.
    Finance opening February at 00:05 on March 1 read a complete-looking month without that renewal, exported
    it, and found February's total grown later. The page says the month is not final until the job has
    charged every month that started in it."""
    lease_assign(owner, price_cents=4900, at=at(2026, 1, 31, 23, 55))
    services.lease_charges_run(now=at(2026, 2, 28, 23, 45))

    with time_machine.travel(at(2026, 3, 1, 0, 5), tick=False):
        early = finance.get("/admin/billing/monthlybilling/", {"month": "2026-02"})
        january = finance.get("/admin/billing/monthlybilling/", {"month": "2026-01"})

    assert early.context["report"].total_cents == 0  # the renewal is not charged yet
    (shown,) = [str(m) for m in early.context["messages"]]
    assert shown.startswith("February 2026 is not final: ")
    assert "charged the months that started up to 2026-02-28 23:45:00 UTC" in shown
    assert not list(january.context["messages"])  # every month that started in January is charged

    services.lease_charges_run(now=at(2026, 3, 1, 0, 10))
    with time_machine.travel(at(2026, 3, 1, 0, 12), tick=False):
        final = finance.get("/admin/billing/monthlybilling/", {"month": "2026-02"})

    assert final.context["report"].total_cents == 4900
    assert not list(final.context["messages"])


def test_a_month_over_while_the_renewal_job_has_never_run_says_its_totals_are_not_final(finance, owner):
    lease_assign(owner, price_cents=4900, at=at(2026, 1, 10, 9))

    with time_machine.travel(at(2026, 4, 2), tick=False):
        page = finance.get("/admin/billing/monthlybilling/", {"month": "2026-02"})

    (shown,) = [str(m) for m in page.context["messages"]]
    assert shown.startswith("February 2026 is not final: the renewal job has recorded no run yet")
