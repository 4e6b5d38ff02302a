"""Finance closes the month on the 1st of the next one, in the admin only: each organization's charges of
the month, each wallet's month (opening balance, top-ups, charges, adjustments, closing balance), who is past
due and since when, what off-boarded partners still hold, and the ledger entries behind every figure."""

import re
from datetime import UTC, datetime
from html import unescape

import pytest
import time_machine

from billing import services
from tests.staff import signed_in_staff

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
