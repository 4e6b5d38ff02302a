"""A lease's admin page answers support's "we were charged twice / the wrong amount for this account": its price
as money, how far it is paid, and every charge of it (period, amount, the ledger entry), read in one statement;
and who released it, a partner through their API key or a staff member, never a blank."""

import csv
import io
import re
from datetime import UTC, datetime

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from billing import services as billing
from billing.models import LedgerEntry
from leasing.models import Lease
from tests.admin_plans import statements_on
from tests.billing.factories import lease_assign, lease_release
from tests.billing.test_finance_admin import Tables
from tests.staff import admin_object_url, signed_in_staff

pytestmark = pytest.mark.django_db


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def lease_page(client, lease) -> str:
    response = client.get(admin_object_url(Lease, lease.pk))
    assert response.status_code == 200
    return response.content.decode()


def test_the_lease_page_shows_its_price_how_far_it_is_paid_and_every_charge_in_one_statement(owner, outsider):
    lease = lease_assign(owner, price_cents=4900, at=at(2026, 1, 31, 10))  # renews Feb 28, Mar 31
    lease_assign(outsider, price_cents=1000, at=at(2026, 1, 31, 10))  # another lease's charges stay off the page
    billing.lease_charges_run(now=at(2026, 4, 2))
    _, client = signed_in_staff("leasing.view_lease", "billing.view_ledgerentry")

    with time_machine.travel(at(2026, 4, 2), tick=False), CaptureQueriesContext(connection) as captured:
        html = lease_page(client, lease)

    # The raw cents as a number of their own: the page's ids are hex, and one held "…bb4900a8f…" (a flaky run).
    assert "Monthly price cents" not in html and not re.search(r"(?<![0-9A-Za-z_-])4900(?![0-9A-Za-z_-])", html)
    assert "$49.00" in html
    assert "2026-04-30 10:00:00 UTC" in html  # paid through: the end of month 3, charged on Mar 31
    entries = list(LedgerEntry.objects.filter(lease=lease).order_by("period_index"))
    rows = Tables(html).tables["lease-charges"]["tbody"]
    assert rows == [
        [str(e.period_index + 1), f"{start} UTC – {end} UTC", "-$49.00", e.pk]
        for e, (start, end) in zip(
            entries,
            [
                ("2026-01-31 10:00:00", "2026-02-28 10:00:00"),
                ("2026-02-28 10:00:00", "2026-03-31 10:00:00"),
                ("2026-03-31 10:00:00", "2026-04-30 10:00:00"),
            ],
            strict=True,
        )
    ]
    for entry in entries:
        assert f'href="{admin_object_url(LedgerEntry, entry.pk)}"' in html
    assert len(statements_on(captured, "billing_ledgerentry")) == 1  # not one per charge


def test_a_month_started_but_not_charged_yet_is_said_so_on_the_lease_page(owner):
    lease = lease_assign(owner, price_cents=4900, at=at(2026, 1, 31, 10))
    _, client = signed_in_staff("leasing.view_lease")

    with time_machine.travel(at(2026, 3, 1), tick=False):  # the renewal job has not charged Feb 28 yet
        html = lease_page(client, lease)

    assert "2026-02-28 10:00:00 UTC — the month that started then is not charged yet" in html
    with time_machine.travel(at(2026, 4, 1), tick=False):  # nor Mar 31 (the job was down)
        assert "2026-02-28 10:00:00 UTC — the 2 months since are not charged yet" in lease_page(client, lease)
    # Staff who cannot open the ledger see the entry ids, not links that would answer 403.
    entry = LedgerEntry.objects.get(lease=lease)
    assert entry.pk in html and admin_object_url(LedgerEntry, entry.pk) not in html


def test_a_released_lease_is_paid_through_the_month_its_release_fell_in(owner):
    lease = lease_assign(owner, price_cents=4900, at=at(2026, 1, 31, 10))
    lease_release(lease, at=at(2026, 3, 10))  # in month 2 (Feb 28 – Mar 31), which the release charges
    _, client = signed_in_staff("leasing.view_lease")

    with time_machine.travel(at(2026, 6, 1), tick=False):
        html = lease_page(client, lease)

    assert "2026-03-31 10:00:00 UTC" in html and "not charged yet" not in html
    assert [row[0] for row in Tables(html).tables["lease-charges"]["tbody"]] == ["1", "2"]


def test_the_lease_page_says_when_the_leased_account_needs_a_reauth_and_where_to_fix_it(owner):
    # A dead lease is still billed every month: the list said so, the lease's own page did not.
    from accounts.models import SocialAccount

    lease = lease_assign(owner, price_cents=4900, at=at(2026, 1, 31, 10))
    _, client = signed_in_staff("leasing.view_lease")

    def status_field(html: str) -> str:
        return html.split('field-account_status"', 1)[1].split("</div>\n</div>", 1)[0]

    assert "connected" in status_field(lease_page(client, lease))

    SocialAccount.objects.filter(pk=lease.social_account_id).update(status="reauth_required")
    field = status_field(lease_page(client, lease))
    assert "reauth_required" in field and "reconnect it on TikTok" in field


def readonly_field(html: str, name: str) -> tuple[str, str]:
    """(label, value) of a read-only field of an admin change page."""
    found = re.search(rf'field-{name}\b.*?<label>(.*?)</label>\s*<div class="readonly">(.*?)</div>', html, re.S)
    assert found, f"no field {name}"
    return found.group(1).strip(), found.group(2).strip()


def test_a_charge_reads_the_same_month_of_the_lease_on_every_staff_page_counted_from_1(owner):
    """The lease page numbered its charges from 0 ("period index 0") where the Monthly billing report, its CSV
    and the ledger's "what" say "month 1": finance matching the two read the first month's charge as month 0 in
    one place and month 1 in the other. Every staff page counts the months of a lease from 1, as a person does."""
    lease = lease_assign(owner, price_cents=4900, at=at(2026, 1, 31, 10))
    billing.lease_charges_run(now=at(2026, 3, 1))
    _, client = signed_in_staff(
        "leasing.view_lease", "billing.view_ledgerentry", "billing.view_monthlybilling", username="finance"
    )
    first, second = LedgerEntry.objects.filter(lease=lease).order_by("period_index")

    with time_machine.travel(at(2026, 3, 1), tick=False):
        lease_html = lease_page(client, lease)
        january = Tables(client.get("/admin/billing/monthlybilling/?month=2026-01").content.decode()).tables
        february = client.get("/admin/billing/monthlybilling/csv/?month=2026-02")
        entry_html = client.get(admin_object_url(LedgerEntry, first.pk)).content.decode()

    charges = Tables(lease_html).tables["lease-charges"]
    assert charges["thead"][0][0] == "month of lease"
    assert [row[0] for row in charges["tbody"]] == ["1", "2"]
    (report_row,) = january["charges"]["tbody"]
    assert january["charges"]["thead"][0][6] == "Month of lease" and report_row[6] == "1"
    csv_rows = list(csv.reader(io.StringIO(b"".join(february.streaming_content).decode("utf-8-sig"))))
    assert csv_rows[1][6] == "2" and csv_rows[1][-1] == "49.00"
    assert readonly_field(entry_html, "month_of_lease") == ("Month of lease:", "1")
    assert "field-period_index" not in entry_html
    assert second.period_index == 1  # the ledger (and the partner API's periodIndex) keep their 0-based index
