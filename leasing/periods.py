"""Billing periods of a lease: monthly, anchored on the assignment instant, clamped at month end
(assigned Jan 31 → Feb 28/29 → Mar 31 → Apr 30 …). Each period is computed from the anchor, not from the
previous period, so a short month never shifts the following ones."""

import calendar
from datetime import datetime


def add_months(anchor: datetime, months: int) -> datetime:
    month0 = anchor.month - 1 + months
    year, month = anchor.year + month0 // 12, month0 % 12 + 1
    day = min(anchor.day, calendar.monthrange(year, month)[1])
    return anchor.replace(year=year, month=month, day=day)


def period_bounds(anchor: datetime, index: int) -> tuple[datetime, datetime]:
    """[start, end) of period `index` (0 = the month starting at assignment)."""
    return add_months(anchor, index), add_months(anchor, index + 1)


def period_index_at(anchor: datetime, when: datetime) -> int:
    """The index of the period containing `when` (0 before or at the anchor)."""
    if when <= anchor:
        return 0
    index = (when.year - anchor.year) * 12 + (when.month - anchor.month)
    while add_months(anchor, index) > when:
        index -= 1
    while add_months(anchor, index + 1) <= when:
        index += 1
    return max(index, 0)
