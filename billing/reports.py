"""The finance report (staff only, every organization): per month, every charged leased account, the
organization totals and the monthly totals of the last 12 months. A charge belongs to the month (UTC) its
period starts in. Beside them, each wallet's month (opening balance, top-ups, charges, adjustments, closing
balance), by the time its entries were recorded, and how the charges recorded in the month add up to the
month's charges. The page and the CSV write their rows with the same function, in the same order; the page
shows them PAGE_SIZE at a time, the CSV holds them all.

A month of a large book has tens of thousands of charges (bench_billing charges 50,000): the totals are
summed by the database, the page reads only its own rows, and the CSV streams the rows as they are read.
Building every row in memory for each page view took 9 s and 16 MB of HTML at 50,000 charges."""

import calendar
import csv
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from django.db import connection, transaction
from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncMonth
from django.utils import timezone

from accounts.models import Organization
from billing.models import LedgerEntry, RenewalProgress, Wallet
from leasing.models import Lease
from leasing.periods import add_months

# The CSV is made for spreadsheets: Excel reads a CSV without a byte order mark in the machine's code page
# (Windows-1252 in western Europe), and showed "Société Générale" as "SociÃ©tÃ© GÃ©nÃ©rale". With the
# UTF-8 BOM first it reads UTF-8; LibreOffice and Numbers take either.
BOM = "\ufeff"
# The leased account a per-account row is about (_account_cells), first in every per-account CSV.
ACCOUNT_COLUMNS = ["Organization", "Organization ID", "Project", "Project ID", "Handle", "Social account ID"]
COLUMNS = [
    *ACCOUNT_COLUMNS,
    "Month of lease",
    "Period start (UTC)",
    "Period end (UTC)",
    "Amount (USD)",
]


def usd(cents: int) -> str:
    """12345 → "123.45" (−12345 → "-123.45"): exact, no float."""
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}"


def usd_display(cents: int) -> str:
    """12345678 → "$123,456.78"."""
    sign = "-" if cents < 0 else ""
    return f"{sign}${abs(cents) // 100:,}.{abs(cents) % 100:02d}"


def _cell(text: str) -> str:
    """Free text that a spreadsheet would run as a formula gets a leading apostrophe (page and CSV alike)."""
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def stamp(value: datetime, *, zone: bool = True) -> str:
    """A time as the admin shows it (README): "2026-11-29 12:31:05 UTC", to the second so that finance can
    compare it with the API's RFC 3339 times (a period starts at the second the lease was assigned).
    `zone=False` for the CSV, whose header names the zone: a bare time is what a spreadsheet reads as one."""
    text = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return f"{text} UTC" if zone else text


def month_start(month: date) -> datetime:
    return datetime(month.year, month.month, 1, tzinfo=UTC)


MONTH_FORMAT = "YYYY-MM between 2000-01 and 9998-12"


def parse_month(raw: str | None, *, default: date | None) -> date | None:
    """ "2026-03" → date(2026, 3, 1); anything else → `default` (MONTH_FORMAT, for staff). Up to 9998: a
    month's report reaches into the next month, and December 9999's would be past what a date can hold."""
    try:
        year, month = (int(part) for part in (raw or "").split("-"))
        return date(year, month, 1) if 2000 <= year <= 9998 and 1 <= month <= 12 else default
    except ValueError:
        return default


@dataclass
class OrgTotal:
    organization_id: str
    name: str
    charges: int = 0
    cents: int = 0


@dataclass
class ChartBar:
    month: date
    cents: int
    selected: bool

    @property
    def label(self) -> str:
        return f"{calendar.month_abbr[self.month.month]} {self.month:%y}"


PAGE_SIZE = 500  # rows of "Charged leased accounts" per page


@dataclass
class WalletMonth:
    """One organization's wallet over a month, signed as the ledger signs (credits +, debits −), by the time
    each entry was recorded: opening + top_ups + charges + adjustments = closing."""

    organization_id: str
    name: str
    offboarded_at: datetime | None  # by the month's end (None: not off-boarded then, even if it was since)
    opening: int
    top_ups: int
    charges: int
    adjustments: int
    closing: int
    past_due_since: datetime | None = None  # at the month's end, from the ledger (None when not past due then)


@dataclass
class ChargesBridge:
    """From the lease charges recorded in the month (what moved the wallets, WalletMonth.charges) to the
    charges of the month (periods starting in it: the report's total), all as positive amounts:
    recorded − other_months + recorded_outside = charged."""

    recorded: int = 0  # charges recorded in the month
    other_months: int = 0  # of which for periods starting in another month (a renewal charged just after midnight)
    recorded_outside: int = 0  # charges of the month's periods recorded in another month
    charged: int = 0  # the report's total


@dataclass
class MonthlyReport:
    month: date
    organization_id: str | None
    table: list[list[str]] = field(default_factory=list)  # the rows of this page
    org_totals: list[OrgTotal] = field(default_factory=list)
    total_cents: int = 0
    charge_count: int = 0  # rows of the whole month, every page
    page: int = 1
    pages: int = 1
    chart: list[ChartBar] = field(default_factory=list)
    # A month that is over but may still lack renewals that started in it (_renewals_pending), and how far
    # the renewal job has charged (None: it has recorded no run).
    renewals_pending: bool = False
    charged_through: datetime | None = None
    wallets: list[WalletMonth] = field(default_factory=list)
    wallets_total: WalletMonth | None = None  # None: the wallets' month was not asked for
    bridge: ChargesBridge = field(default_factory=ChargesBridge)
    # Each leased account an adjustment recorded in the month names (a refund), with its charges of the month
    # (_refund_rows); and the sums of both columns.
    refunds: list[list[str]] = field(default_factory=list)
    refunds_charged: int = 0
    refunds_cents: int = 0

    @property
    def previous(self) -> date:
        return add_months(month_start(self.month), -1).date()

    @property
    def next(self) -> date:
        return add_months(month_start(self.month), 1).date()

    @property
    def first_row(self) -> int:
        """Position (from 1) of this page's first row in the month's rows; 0 on an empty month."""
        return (self.page - 1) * PAGE_SIZE + 1 if self.table else 0

    @property
    def last_row(self) -> int:
        return (self.page - 1) * PAGE_SIZE + len(self.table)


def _charges(organization_id: str | None):
    qs = LedgerEntry.objects.filter(kind=LedgerEntry.Kind.LEASE_CHARGE)
    return qs.filter(organization_id=organization_id) if organization_id else qs


def _month_charges(month: date, organization_id: str | None):
    start = month_start(month)
    return _charges(organization_id).filter(period_start__gte=start, period_start__lt=add_months(start, 1))


ROW_FIELDS = (
    "organization__name",
    "organization_id",
    "lease__project__name",
    "lease__project_id",
    "lease__handle",
    "lease__social_account_id",
    "period_index",
    "period_start",
    "period_end",
    "amount_cents",
)


def _rows(month: date, organization_id: str | None):
    """The month's charges as tuples of ROW_FIELDS, in the report's order (a total order: `id` last)."""
    return (
        _month_charges(month, organization_id)
        .order_by(
            "organization__name",
            "organization_id",
            "lease__project__name",
            "lease__handle",
            "period_start",
            "id",
        )
        .values_list(*ROW_FIELDS)
    )


def _account_cells(org_name, org_id, project_name, project_id, handle, account_id) -> list[str]:
    """The leased account a row is about, as every per-account table and CSV writes it: the names defused
    (_cell), the ids as they are."""
    return [_cell(org_name), org_id, _cell(project_name), project_id, _cell(handle), account_id]


def _row(values: tuple, *, zone: bool = True) -> list[str]:
    """A row of the page (`zone`: the times carry " UTC") or of the CSV (they do not; its header says UTC)."""
    index, start, end, amount = values[6:]
    return [
        *_account_cells(*values[:6]),
        str(index + 1),
        stamp(start, zone=zone),
        stamp(end, zone=zone),
        usd(-amount),
    ]


def monthly_rows(*, month: date, organization_id: str | None = None):
    """Every row of the month, page after page, read from the database in chunks (for the CSV)."""
    for values in _rows(month, organization_id).iterator(chunk_size=2000):
        yield _row(values, zone=False)


class _Line:
    """A file whose write() returns what it is given: csv.writer's writerow() then returns the line."""

    def write(self, line: str) -> str:
        return line


def csv_lines(*, month: date, organization_id: str | None = None):
    """The CSV of the month, line by line: the header (COLUMNS) after a byte order mark, then every row
    (monthly_rows)."""
    writer = csv.writer(_Line())
    yield BOM + writer.writerow(COLUMNS)
    for row in monthly_rows(month=month, organization_id=organization_id):
        yield writer.writerow(row)


@contextmanager
def _snapshot():
    """Several reads that see the database as of one instant. PostgreSQL's default (READ COMMITTED) gives
    each statement its own snapshot: a renewal job committing between the totals and the rows would make
    the page's totals and rows disagree. SQLite's transactions already read one snapshot. Inside an outer
    transaction (a test's, say) its isolation level applies: it can no longer be changed."""
    nested = connection.in_atomic_block
    with transaction.atomic():
        if not nested and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield


def monthly_report(
    *, month: date, organization_id: str | None = None, page: int = 1, wallets: bool = True
) -> MonthlyReport:
    """Eight queries (one more with a wallet short at the month's end, and one or a few for all such wallets
    covered since, together: _past_due_since), on one snapshot: the
    organization totals (which also count the rows, hence the pages), the rows of `page` (clamped to the pages
    there are), the leased accounts refunded in the month and their charges (_refund_rows), the 12 monthly
    totals, each wallet's month and its organization, and the charges recorded in the month against the charges
    of the month; and for a month that is over, whether it is final (one or two
    small reads: _renewals_pending). `wallets=False`: not the wallets' month (nor its queries), for staff who
    may read the report but not view wallets."""
    with _snapshot():
        return _monthly_report(month=month, organization_id=organization_id, page=page, wallets=wallets)


def _monthly_report(*, month: date, organization_id: str | None, page: int, wallets: bool) -> MonthlyReport:
    start = month_start(month)
    report = MonthlyReport(month=start.date(), organization_id=organization_id)
    totals = (
        _month_charges(month, organization_id)
        .values("organization_id", "organization__name")
        .annotate(charges=Count("id"), cents=Sum("amount_cents"))
        .order_by("organization__name", "organization_id")
    )
    report.org_totals = [
        OrgTotal(row["organization_id"], row["organization__name"], row["charges"], -row["cents"]) for row in totals
    ]
    report.charge_count = sum(t.charges for t in report.org_totals)
    report.total_cents = sum(t.cents for t in report.org_totals)
    report.pages = max(1, -(-report.charge_count // PAGE_SIZE))
    report.page = min(max(1, page), report.pages)
    offset = (report.page - 1) * PAGE_SIZE
    report.table = [_row(values) for values in _rows(month, organization_id)[offset : offset + PAGE_SIZE]]

    report.renewals_pending, report.charged_through = _renewals_pending(month, organization_id)

    first = add_months(start, -11)
    by_month = dict(
        _charges(organization_id)
        .filter(period_start__gte=first, period_start__lt=add_months(start, 1))
        .annotate(month=TruncMonth("period_start", tzinfo=UTC))
        .values("month")
        .annotate(cents=Sum("amount_cents"))
        .values_list("month", "cents")
    )
    by_month = {m.date(): -cents for m, cents in by_month.items()}
    for i in range(12):
        bar_month = add_months(first, i).date()
        report.chart.append(ChartBar(bar_month, by_month.get(bar_month, 0), selected=bar_month == report.month))

    refunds = list(_refund_rows(month, organization_id))
    report.refunds = [_refund_row(values) for values in refunds]
    report.refunds_charged = sum(values[6] for values in refunds)
    report.refunds_cents = sum(values[7] for values in refunds)

    if not wallets:
        return report
    report.wallets = _wallet_months(month, organization_id)
    report.wallets_total = WalletMonth(
        organization_id="",
        name="Total",
        offboarded_at=None,
        **{
            name: sum(getattr(w, name) for w in report.wallets)
            for name in ("opening", "top_ups", "charges", "adjustments", "closing")
        },
    )
    report.bridge = _charges_bridge(month, organization_id, charged=report.total_cents)
    return report


def _renewals_pending(month: date, organization_id: str | None) -> tuple[bool, datetime | None]:
    """(whether `month`, over, may still lack renewals that started in it; how far the renewal job has
    charged). A renewal is charged by the job after its month starts (every 15 minutes: at every month's
    end, the last quarter hour's renewals are charged in the next month; all of them while the job is down),
    so a month's totals are final only once a finished run's `now` reached the month's end (RenewalProgress).
    Before that, it may lack some only if a lease could owe one: live (or released and not settled), assigned
    before the month (a lease assigned in it owes only its first month there, charged at the assignment) and
    not released before it began. A month not over is shown as it stands: it is still being charged."""
    start, end = month_start(month), add_months(month_start(month), 1)
    if end > timezone.now():
        return False, None
    charged_through = RenewalProgress.objects.values_list("charged_through", flat=True).first()
    if charged_through is not None and charged_through >= end:
        return False, charged_through
    leases = Lease.objects.filter(
        Q(released_at__isnull=True) | Q(released_at__gt=start), charges_settled=False, assigned_at__lt=start
    )
    if organization_id:
        leases = leases.filter(organization_id=organization_id)
    return leases.exists(), charged_through


def _wallet_months(month: date, organization_id: str | None) -> list[WalletMonth]:
    """Every wallet with an entry recorded before the month's end, in the report's order (organization name,
    then id). One pass over the ledger up to the month's end, summed by organization (its names are read
    apart: grouped by name too, the whole ledger was sorted, 0.2 s at 200,000 entries), and since when the
    wallets short at the month's end were short."""
    start = month_start(month)
    end = add_months(start, 1)
    during = Q(created_at__gte=start, created_at__lt=end)
    amount = "amount_cents"
    sums = (
        LedgerEntry.objects.filter(created_at__lt=end)
        .filter(**({"organization_id": organization_id} if organization_id else {}))
        .values("organization_id")
        .annotate(
            opening=Sum(amount, filter=Q(created_at__lt=start), default=0),
            top_ups=Sum(amount, filter=during & Q(kind=LedgerEntry.Kind.TOP_UP), default=0),
            charges=Sum(amount, filter=during & Q(kind=LedgerEntry.Kind.LEASE_CHARGE), default=0),
            adjustments=Sum(amount, filter=during & Q(kind=LedgerEntry.Kind.ADJUSTMENT), default=0),
            closing=Sum(amount, default=0),
        )
        .order_by()
    )
    sums = {row.pop("organization_id"): row for row in sums}
    organizations = Organization.objects.filter(pk__in=sums).values_list("id", "name", "offboarded_at")
    # As at the month's end, like every other figure of the row: an organization off-boarded after it was still
    # a partner then. Shown "off-boarded at" beside an earlier month's closing balance, a later off-boarding
    # read as if it had left with that balance.
    wallets = [
        WalletMonth(
            organization_id=pk,
            name=name,
            offboarded_at=offboarded_at if offboarded_at is not None and offboarded_at < end else None,
            **sums[pk],
        )
        for pk, name, offboarded_at in sorted(organizations, key=lambda o: (o[1], o[0]))
    ]
    short = {w.organization_id: w for w in wallets if w.closing < 0}
    for organization_id, since in _past_due_since({pk: w.closing for pk, w in short.items()}, end).items():
        short[organization_id].past_due_since = since
    return wallets


def _past_due_since(closing: dict[str, int], end: datetime) -> dict[str, datetime]:
    """Since when each of these wallets, short at `end` (`closing`: each one's balance then), was short. A
    wallet past due now since before `end` has been short without a break from then to now (its
    past_due_since is set by the entry that takes it below zero, at that entry's time, and cleared by the one
    that covers it), so it was at `end` too: that says, whatever its history. The others were covered at some
    time after `end` (paid since, or short again since): their ledgers are walked back from `end`, over the
    run of entries since each was last covered before it (_short_since), all of them together on PostgreSQL
    (_short_since_together: a query per chunk, not per wallet)."""
    if not closing:
        return {}
    since = {}
    for organization_id, now_since in Wallet.objects.filter(pk__in=list(closing)).values_list("pk", "past_due_since"):
        if now_since is not None and now_since < end:
            since[organization_id] = now_since
    walked = {pk: closing[pk] for pk in sorted(set(closing) - set(since))}
    if connection.vendor == "postgresql":
        since.update(_short_since_together(walked, end))
    else:
        for organization_id, balance in walked.items():
            since[organization_id] = _short_since(organization_id, balance, end)
    return since


# Entries read at a time walking a wallet's ledger back from a month's end (then four times as many each time,
# up to 1,000): a wallet that was short at a month's end and covered since usually went short shortly before.
SHORTFALL_CHUNK = 16


def _short_since(organization_id: str, balance: int, end: datetime) -> datetime | None:
    """The time of the entry that took the wallet below zero for the last time before `end`, where its balance
    was `balance` (< 0): its entries before `end` newest first, in ledger order (time, then id, along
    ledger_org_newest), each undone from the balance until the one before which the wallet was covered (zero
    or more; before its first entry, 0). Only that run of entries is read, in chunks. (A running sum in SQL
    cannot stop there: PostgreSQL plans a window under a filter for all its rows and sorts the wallet's whole
    history.) Summed over the whole ledger in order, every view of the monthly page sorted each short wallet's
    history: 0.3 s at a year of entries, 3 s at ten."""
    entries = (
        LedgerEntry.objects.filter(organization_id=organization_id)
        .order_by("-created_at", "-id")
        .values_list("created_at", "id", "amount_cents")
    )
    since, before, chunk = None, Q(created_at__lt=end), SHORTFALL_CHUNK
    while True:
        rows = list(entries.filter(before)[:chunk])
        for created_at, _pk, amount in rows:
            since = created_at
            balance -= amount  # the balance before this entry
            if balance >= 0:
                return since
        if len(rows) < chunk:
            return since
        created_at, pk, _amount = rows[-1]
        before = Q(created_at__lte=created_at) & (Q(created_at__lt=created_at) | Q(id__lt=pk))
        chunk = min(chunk * 4, 1000)


# The next chunk of each wallet's entries before its own cursor (its oldest entry read so far, or `end` at
# first), newest first along ledger_org_newest, each undone from the wallet's balance (`before`: the balance
# before the entry); of each chunk only the entry that decides comes back: the first before which the wallet
# was covered, else the chunk's last (where the next chunk starts). One query per chunk for every wallet
# still walked, and a row per wallet rather than its entries: the window runs over the chunk's rows only.
_WALLETS_CHUNK_SQL = """
SELECT c.organization_id, w.created_at, w.id, w.before, w.n
  FROM unnest(%s::varchar[], %s::timestamptz[], %s::varchar[], %s::bigint[])
       AS c(organization_id, before_at, before_id, balance)
 CROSS JOIN LATERAL (
       SELECT s.created_at, s.id, s.before, s.n
         FROM (SELECT e.created_at, e.id,
                      (c.balance - SUM(e.amount_cents) OVER newest)::bigint AS before,
                      ROW_NUMBER() OVER newest AS n,
                      COUNT(*) OVER () AS rows
                 FROM (SELECT l.created_at, l.id, l.amount_cents
                         FROM billing_ledgerentry l
                        WHERE l.organization_id = c.organization_id
                          AND l.created_at <= c.before_at
                          AND (l.created_at < c.before_at OR l.id < c.before_id)
                        ORDER BY l.created_at DESC, l.id DESC
                        LIMIT %s) e
               WINDOW newest AS (ORDER BY e.created_at DESC, e.id DESC ROWS UNBOUNDED PRECEDING)) s
        WHERE s.before >= 0 OR s.n = s.rows
        ORDER BY s.n
        LIMIT 1) w
"""


def _short_since_together(closing: dict[str, int], end: datetime) -> dict[str, datetime | None]:
    """_short_since for every wallet of `closing` at once: the same entries read, in the same chunks, but
    one query per chunk for all the wallets rather than one per wallet, each answering one row per wallet.
    At 200 wallets short at a month's end and covered since, the wallet-by-wallet walk made 600 queries,
    0.5 s of the page's 0.7 s."""
    balance = dict(closing)
    since: dict[str, datetime | None] = dict.fromkeys(closing)
    cursor: dict[str, tuple[datetime, str | None]] = {pk: (end, None) for pk in closing}  # first: before `end`
    chunk = SHORTFALL_CHUNK
    while cursor:
        walked = sorted(cursor)
        with connection.cursor() as db:
            db.execute(
                _WALLETS_CHUNK_SQL,
                [
                    walked,
                    [cursor[pk][0] for pk in walked],
                    [cursor[pk][1] for pk in walked],
                    [balance[pk] for pk in walked],
                    chunk,
                ],
            )
            decided = {row[0]: row[1:] for row in db.fetchall()}
        for organization_id in walked:
            if organization_id not in decided:  # no entry left before the cursor: covered before the first
                del cursor[organization_id]
                continue
            created_at, pk, before, n = decided[organization_id]
            since[organization_id], balance[organization_id] = created_at, before
            if before >= 0 or n < chunk:
                del cursor[organization_id]
            else:
                cursor[organization_id] = (created_at, pk)
        chunk = min(chunk * 4, 1000)
    return since


def _charges_bridge(month: date, organization_id: str | None, charged: int) -> ChargesBridge:
    start = month_start(month)
    end = add_months(start, 1)
    recorded_in = Q(created_at__gte=start, created_at__lt=end)
    period_in = Q(period_start__gte=start, period_start__lt=end)
    sums = (
        _charges(organization_id)
        .filter(recorded_in | period_in)
        .aggregate(
            recorded=Sum("amount_cents", filter=recorded_in, default=0),
            other_months=Sum("amount_cents", filter=recorded_in & ~period_in, default=0),
            recorded_outside=Sum("amount_cents", filter=period_in & ~recorded_in, default=0),
        )
    )
    return ChargesBridge(
        recorded=-sums["recorded"],
        other_months=-sums["other_months"],
        recorded_outside=-sums["recorded_outside"],
        charged=charged,
    )


REFUND_COLUMNS = [
    *ACCOUNT_COLUMNS,
    "Charged (USD)",
    "Refunded (USD)",
    "Charged - refunded (USD)",
]


def _refund_rows(month: date, organization_id: str | None):
    """(organization name, organization id, project name, project id, handle, social account id, charged cents,
    refunded cents) of each leased account that an adjustment recorded in the month names (staff name it when
    they refund or correct its charges: LedgerEntry.adjusted_lease), in the report's order. Refunded: those
    adjustments' sum (a credit is +), by the month they were recorded in, as the wallets' month counts
    adjustments; charged: the account's charges of the month (periods starting in it), as the rows above.
    Adjustments are few and staff-made: two small reads, along ledger_adjusted_lease and the charges' unique
    (lease, period_index) index."""
    start = month_start(month)
    end = add_months(start, 1)
    adjustments = LedgerEntry.objects.filter(
        kind=LedgerEntry.Kind.ADJUSTMENT, adjusted_lease__isnull=False, created_at__gte=start, created_at__lt=end
    )
    if organization_id:
        adjustments = adjustments.filter(organization_id=organization_id)
    refunded = (
        adjustments.values(
            "adjusted_lease_id",
            "organization__name",
            "organization_id",
            "adjusted_lease__project__name",
            "adjusted_lease__project_id",
            "adjusted_lease__handle",
            "adjusted_lease__social_account_id",
        )
        .annotate(cents=Sum("amount_cents"))
        .order_by(
            "organization__name",
            "organization_id",
            "adjusted_lease__project__name",
            "adjusted_lease__handle",
            "adjusted_lease_id",
        )
    )
    refunded = list(refunded)
    charged = dict(
        _month_charges(month, organization_id)
        .filter(lease_id__in=[row["adjusted_lease_id"] for row in refunded])
        .values("lease_id")
        .annotate(cents=Sum("amount_cents"))
        .values_list("lease_id", "cents")
        .order_by()
    )
    for row in refunded:
        yield (
            row["organization__name"],
            row["organization_id"],
            row["adjusted_lease__project__name"],
            row["adjusted_lease__project_id"],
            row["adjusted_lease__handle"],
            row["adjusted_lease__social_account_id"],
            -charged.get(row["adjusted_lease_id"], 0),
            row["cents"],
        )


def _refund_row(values: tuple) -> list[str]:
    """A row of the refunds per leased account, the same on the page and in the CSV (no times in it)."""
    charged, refunded = values[6:]
    return [
        *_account_cells(*values[:6]),
        usd(charged),
        usd(refunded),
        usd(charged - refunded),
    ]


def refunds_csv_lines(*, month: date, organization_id: str | None = None):
    """The CSV of the refunds per leased account: REFUND_COLUMNS after a byte order mark, then a row per account."""
    writer = csv.writer(_Line())
    yield BOM + writer.writerow(REFUND_COLUMNS)
    with _snapshot():
        rows = list(_refund_rows(month, organization_id))
    for values in rows:
        yield writer.writerow(_refund_row(values))


WALLET_COLUMNS = [
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


def wallet_row(wallet: WalletMonth, *, for_csv: bool) -> list[str]:
    """A row of the wallets' month: on the page ("$1,234.50", times with " UTC") or in the CSV ("1234.50",
    times without: the header names the currency and the zone; plain numbers are what a spreadsheet adds up)."""
    money = usd if for_csv else usd_display

    def when(value: datetime | None) -> str:
        return stamp(value, zone=not for_csv) if value else ""

    return [
        _cell(wallet.name),
        wallet.organization_id,
        *(money(c) for c in (wallet.opening, wallet.top_ups, wallet.charges, wallet.adjustments, wallet.closing)),
        when(wallet.past_due_since),
        when(wallet.offboarded_at),
    ]


def wallets_csv_lines(*, month: date, organization_id: str | None = None):
    """The CSV of the wallets' month: WALLET_COLUMNS after a byte order mark, then a row per wallet."""
    writer = csv.writer(_Line())
    yield BOM + writer.writerow(WALLET_COLUMNS)
    with _snapshot():
        wallets = _wallet_months(month, organization_id)
    for wallet in wallets:
        yield writer.writerow(wallet_row(wallet, for_csv=True))


def parse_page(raw: str | None) -> int:
    """`?page=` as a number from 1; anything else is the first page (past the last: the last page)."""
    try:
        return max(1, int(raw or 1))
    except ValueError:
        return 1


def chart_svg(bars: list[ChartBar], *, width: int = 760, height: int = 230) -> dict:
    """Geometry of the bar chart, rendered as inline SVG by the template (no JavaScript, no CDN)."""
    top, bottom, left = 28, 36, 8
    plot = height - top - bottom
    peak = max((b.cents for b in bars), default=0) or 1
    slot = (width - left) / max(len(bars), 1)
    shapes = []
    for i, bar in enumerate(bars):
        h = round(plot * bar.cents / peak) if bar.cents > 0 else 0
        x = left + i * slot
        shapes.append(
            {
                "x": round(x + slot * 0.15, 1),
                "y": top + plot - h,
                "w": round(slot * 0.7, 1),
                "h": h,
                "cx": round(x + slot / 2, 1),
                "label": bar.label,
                "value": usd_display(bar.cents),
                "short": _short(bar.cents),
                "selected": bar.selected,
                "month": f"{bar.month:%Y-%m}",
            }
        )
    return {"width": width, "height": height, "base": top + plot, "label_y": height - 14, "bars": shapes}


def _short(cents: int) -> str:
    """A bar's label: $999, $1.5k, $12k, $1.2M, $1.2B. Each unit is kept while the amount, rounded as it will be
    shown, stays below the next one: chosen before rounding, $999.99 read "$1,000", $999,999.99 "$1000k" and
    $999,950,000 "$1000.0M".
    round() and the format round the same float the same way (half to even), so the test is the label's."""
    dollars = cents / 100
    if round(dollars) < 1000:
        return f"${dollars:,.0f}"
    if round(dollars / 1000, 1) < 10:
        return f"${dollars / 1000:.1f}k"
    if round(dollars / 1000) < 1000:
        return f"${dollars / 1000:.0f}k"
    if round(dollars / 1_000_000, 1) < 1000:
        return f"${dollars / 1_000_000:.1f}M"
    return f"${dollars / 1_000_000_000:.1f}B"
