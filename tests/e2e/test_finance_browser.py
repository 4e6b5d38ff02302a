"""Finance, in a real browser (Debian's chromium): a staff member signs in, opens the monthly billing page
from the admin index, picks a month, reads the totals (checked against the ledger), downloads the CSV
(checked against the page) and records a top-up that clears a past-due wallet."""

import csv
import io
import re
from datetime import UTC, datetime

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from billing import services
from billing.models import LedgerEntry, Wallet
from billing.reports import usd_display
from tests.billing.factories import lease_assign, lease_release
from tests.conftest import make_tenant
from tests.e2e.browser import screenshot
from tests.e2e.conftest import sign_in
from tests.staff import with_mfa

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery staple"


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def seed_a_year_of_leases():
    """Three partners leasing accounts from April 2025 on; the renewal job has run through March 2026."""
    acme = make_tenant("Acme Social", projects=2)
    globex = make_tenant("Globex Media")
    initech = make_tenant("Initech Creators")
    for tenant, cents in ((acme, 150_000), (globex, 80_000), (initech, 5_000)):
        services.wallet_top_up(organization=tenant.org, cents=cents, reason="Opening balance")
    plan = [
        (acme, 4900, at(2025, 4, 3, 9)),
        (acme, 4900, at(2025, 6, 30, 15)),
        (acme, 7900, at(2025, 10, 31, 11)),
        (globex, 9900, at(2025, 5, 12, 8)),
        (globex, 4900, at(2025, 9, 1, 10)),
        (globex, 12900, at(2026, 1, 20, 16)),
        (initech, 2900, at(2025, 12, 8, 13)),
        (initech, 4900, at(2026, 3, 2, 10)),
    ]
    leases = [
        lease_assign(t, price_cents=p, at=a, project=t.projects[i % len(t.projects)])
        for i, (t, p, a) in enumerate(plan)
    ]
    lease_release(leases[1], at=at(2025, 11, 15))  # released in November: no charge after its Oct 30 renewal
    for month in range(4, 16):  # the job ran monthly (and caught up) through the end of March 2026
        services.lease_charges_run(now=at(2025 + (month - 1) // 12, (month - 1) % 12 + 1, 28, 23))
    services.lease_charges_run(now=at(2026, 3, 31, 23, 59))
    return acme, globex, initech


def test_finance_reads_the_month_checks_the_csv_and_tops_up_in_the_browser(page, live_server, tmp_path):
    with_mfa(
        get_user_model().objects.create_user(username="finance", password=PASSWORD, is_staff=True, is_superuser=True)
    )
    acme, globex, initech = seed_a_year_of_leases()
    march = LedgerEntry.objects.filter(
        kind="lease_charge", period_start__gte=at(2026, 3, 1), period_start__lt=at(2026, 4, 1)
    ).select_related("organization")
    expected_total = -sum(e.amount_cents for e in march)
    expected_orgs = {}
    for e in march:
        expected_orgs[e.organization.name] = expected_orgs.get(e.organization.name, 0) - e.amount_cents
    assert Wallet.objects.get(pk=initech.org.pk).status == "past_due"

    page.set_viewport_size({"width": 1400, "height": 900})
    # sign in through allauth, then reach the report from the admin index
    sign_in(page, live_server, "finance", PASSWORD)
    page.click("a[href='/admin/billing/monthlybilling/']")

    # pick March 2026
    page.fill("input[name=month]", "2026-03")
    page.click("#billing-filter input[type=submit]")
    expect(page).to_have_url(re.compile(r"month=2026-03"))
    expect(page.locator("h1")).to_contain_text("March 2026")

    # the totals on the page are the ledger's
    assert page.inner_text("#month-total").strip() == usd_display(expected_total)
    org_rows = page.locator("#org-totals tbody tr")
    shown_orgs = {
        org_rows.nth(i).locator("td").nth(0).inner_text(): org_rows.nth(i).locator("td").nth(3).inner_text()
        for i in range(org_rows.count())
    }
    assert shown_orgs == {name: usd_display(cents) for name, cents in expected_orgs.items()}
    assert page.inner_text("#org-totals tfoot td.num >> nth=1") == usd_display(expected_total)
    assert page.locator("#monthly-chart rect.bar").count() == 12
    selected = page.locator("#monthly-chart rect.bar.selected")
    assert selected.get_attribute("data-month") == "2026-03"
    assert selected.get_attribute("data-value") == usd_display(expected_total)
    table = [[cell.inner_text() for cell in row.locator("td").all()] for row in page.locator("#charges tbody tr").all()]
    # the DOM text (the admin's CSS shows headers in capitals)
    header = [cell.text_content().strip() for cell in page.locator("#charges thead th").all()]
    assert len(table) == march.count() == 7
    screenshot(page, "finance-monthly-billing")

    # the CSV is exactly the table (its times without the page's " UTC": the CSV's headers say "(UTC)", and a
    # spreadsheet reads a bare time as a date)
    with page.expect_download() as download:
        page.click("#csv-export")
    path = tmp_path / "billing.csv"
    download.value.save_as(path)
    assert download.value.suggested_filename == "billing-2026-03.csv"
    lines = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
    assert lines[0] == header
    assert lines[1:] == [[cell.removesuffix(" UTC") for cell in row] for row in table]
    assert "2026-03-03 09:00:00 UTC" in table[0]  # the page: seconds and zone, as every admin time

    # Initech is past due; finance records a wire transfer from the wallet page
    page.goto(f"{live_server.url}/admin/billing/wallet/?status=past_due")
    page.click("text=Initech Creators")
    page.click("text=Top up or adjust")
    page.fill("input[name=amount]", "250.00")
    page.fill("input[name=reason]", "Wire transfer INV-2026-03")
    page.click("#money-form input[type=submit]")
    expect(page.locator(".messagelist")).to_contain_text("Top-up of $250.00 recorded for Initech Creators")
    screenshot(page, "finance-wallet-topped-up")
    assert page.outside == []  # no CDN, no external script: every request stayed on the server

    wallet = Wallet.objects.get(pk=initech.org.pk)
    entry = LedgerEntry.objects.get(organization=initech.org, reason="Wire transfer INV-2026-03")
    assert (entry.amount_cents, entry.actor.username) == (25_000, "finance")
    assert wallet.status == "ok"
    assert wallet.balance_cents == sum(
        LedgerEntry.objects.filter(organization=initech.org).values_list("amount_cents", flat=True)
    )
