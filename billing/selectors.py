"""Reads of billing. Partner reads are scoped to the caller's organization; the finance report (all
organizations, staff only) is billing/reports.py."""

from django.db import connections
from django.db.models import F, Q, Sum, Window
from django.db.models.expressions import RowRange

from billing.models import LedgerEntry, Wallet

# The ledger's order: time, then id. It is total (the id is the primary key), it is the order partners page
# GET /v1/wallet/entries in (newest first), and `ledger_org_newest` indexes it per organization. Not the id
# alone: a top-up's id is minted from the web process's clock and a renewal's from the database's
# (config/api/ids.py, billing/services.py's bulk statement), and two clocks can disagree. The time follows the
# order an organization's entries were committed in (billing.services._entry_time), which keyset pages need.
LEDGER_ORDER = ("created_at", "id")


def wallet_get(*, organization) -> Wallet:
    """The organization's wallet; an unsaved empty one (balance 0, ok) before its first entry."""
    return Wallet.objects.filter(organization=organization).first() or Wallet(organization=organization)


def ledger_entry_list(*, organization, kind: str | None = None):
    qs = LedgerEntry.objects.filter(organization=organization).select_related("lease", "adjusted_lease")
    if kind:
        qs = qs.filter(kind=kind)
    return qs


def ledger_balance(*, organization) -> int:
    """The balance as the ledger says (the truth the wallet's cached balance must agree with)."""
    return LedgerEntry.objects.filter(organization=organization).aggregate(s=Sum("amount_cents"))["s"] or 0


def ledger_with_balances(*, organization_id: str):
    """The organization's entries, newest first, each with `balance_after`: the sum of its ledger up to and
    including that entry in ledger order, i.e. the balance once it was recorded (the newest entry's is the
    balance). One statement; the window reads the organization's rows through ledger_org_newest.

    The window sums the rows the statement selects: slice this queryset, never filter it further (charges
    only would sum charges only). For entries picked by other filters, ledger_balances_after."""
    running = Window(
        Sum("amount_cents"),
        order_by=[F(name).asc() for name in LEDGER_ORDER],
        frame=RowRange(start=None, end=0),  # rows, not peers: each entry's own balance
    )
    return (
        LedgerEntry.objects.filter(organization_id=organization_id)
        .annotate(balance_after=running)
        .order_by(*(f"-{name}" for name in LEDGER_ORDER))
    )


def ledger_balances_after(*, organization_id: str, entries) -> dict[str, int]:
    """{entry id: balance after it} for `entries` of the organization, whatever picked them (a kind, a date, a
    search): one statement, the window over the organization's whole ledger up to the newest of them (a running
    sum needs nothing after), the entries picked outside it."""
    entries = [e for e in entries if e.organization_id == organization_id]
    if not entries:
        return {}
    newest = max(entries, key=lambda e: (e.created_at, e.pk))
    upto = Q(created_at__lt=newest.created_at) | Q(created_at=newest.created_at, id__lte=newest.pk)
    running = ledger_with_balances(organization_id=organization_id).filter(upto)
    sql, params = running.order_by().values("id", "balance_after").query.sql_with_params()
    ids = [e.pk for e in entries]
    # The ids are picked around the window's statement: a WHERE on them inside it would narrow the rows it sums
    # (the ORM puts such a filter there). Only placeholders are added to the SQL Django compiled.
    outer = f"SELECT id, balance_after FROM ({sql}) AS ledger WHERE id IN ({', '.join(['%s'] * len(ids))})"  # noqa: S608
    with connections[running.db].cursor() as cursor:
        cursor.execute(outer, [*params, *ids])
        return {pk: int(cents) for pk, cents in cursor.fetchall()}  # PostgreSQL's sum of bigint is numeric
