"""The finance report (staff only, every organization): per month, every charged leased account, the
organization totals and the monthly totals of the last 12 months. A charge belongs to the month (UTC) its
period starts in. The page and the CSV are built from the same `table` rows, so the export is exactly what
the page shows."""

import calendar
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from django.db.models import Sum
from django.db.models.functions import TruncMonth

from billing.models import LedgerEntry
from leasing.periods import add_months

COLUMNS = [
    "Organization",
    "Organization ID",
    "Project",
    "Project ID",
    "Handle",
    "Social account ID",
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


def _stamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def month_start(month: date) -> datetime:
    return datetime(month.year, month.month, 1, tzinfo=UTC)


def parse_month(raw: str | None, *, default: date) -> date:
    """ "2026-03" → date(2026, 3, 1); anything else → `default`."""
    try:
        year, month = (int(part) for part in (raw or "").split("-"))
        return date(year, month, 1) if 2000 <= year <= 9999 and 1 <= month <= 12 else default
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


@dataclass
class MonthlyReport:
    month: date
    organization_id: str | None
    table: list[list[str]] = field(default_factory=list)
    org_totals: list[OrgTotal] = field(default_factory=list)
    total_cents: int = 0
    chart: list[ChartBar] = field(default_factory=list)

    @property
    def previous(self) -> date:
        return add_months(month_start(self.month), -1).date()

    @property
    def next(self) -> date:
        return add_months(month_start(self.month), 1).date()


def _charges(organization_id: str | None):
    qs = LedgerEntry.objects.filter(kind=LedgerEntry.Kind.LEASE_CHARGE)
    return qs.filter(organization_id=organization_id) if organization_id else qs


def monthly_report(*, month: date, organization_id: str | None = None) -> MonthlyReport:
    """Two queries: the month's charges (with organization, project, pool account), the 12 monthly totals."""
    start = month_start(month)
    end = add_months(start, 1)
    report = MonthlyReport(month=start.date(), organization_id=organization_id)
    rows = (
        _charges(organization_id)
        .filter(period_start__gte=start, period_start__lt=end)
        .select_related("organization", "lease__project", "lease__pool_account")
        .order_by(
            "organization__name",
            "organization_id",
            "lease__project__name",
            "lease__pool_account__handle",
            "period_start",
            "id",
        )
    )
    totals: dict[str, OrgTotal] = {}
    for entry in rows:
        charged = -entry.amount_cents
        lease = entry.lease
        report.table.append(
            [
                _cell(entry.organization.name),
                entry.organization_id,
                _cell(lease.project.name),
                lease.project_id,
                _cell(lease.pool_account.handle),
                lease.social_account_id,
                str(entry.period_index + 1),
                _stamp(entry.period_start),
                _stamp(entry.period_end),
                usd(charged),
            ]
        )
        total = totals.setdefault(entry.organization_id, OrgTotal(entry.organization_id, entry.organization.name))
        total.charges += 1
        total.cents += charged
        report.total_cents += charged
    report.org_totals = list(totals.values())

    first = add_months(start, -11)
    by_month = dict(
        _charges(organization_id)
        .filter(period_start__gte=first, period_start__lt=end)
        .annotate(month=TruncMonth("period_start", tzinfo=UTC))
        .values("month")
        .annotate(cents=Sum("amount_cents"))
        .values_list("month", "cents")
    )
    by_month = {m.date(): -cents for m, cents in by_month.items()}
    for i in range(12):
        bar_month = add_months(first, i).date()
        report.chart.append(ChartBar(bar_month, by_month.get(bar_month, 0), selected=bar_month == report.month))
    return report


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
    dollars = cents / 100
    if dollars >= 1_000_000:
        return f"${dollars / 1_000_000:.1f}M"
    if dollars >= 10_000:
        return f"${dollars / 1000:.0f}k"
    if dollars >= 1000:
        return f"${dollars / 1000:.1f}k"
    return f"${dollars:,.0f}"
