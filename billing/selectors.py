"""Reads of billing. Partner reads are scoped to the caller's organization; the finance report (all
organizations, staff only) is billing/reports.py."""

from django.db.models import Sum

from billing.models import LedgerEntry, Wallet


def wallet_get(*, organization) -> Wallet:
    """The organization's wallet; an unsaved empty one (balance 0, ok) before its first entry."""
    return Wallet.objects.filter(organization=organization).first() or Wallet(organization=organization)


def ledger_entry_list(*, organization, kind: str | None = None):
    qs = LedgerEntry.objects.filter(organization=organization).select_related("lease")
    if kind:
        qs = qs.filter(kind=kind)
    return qs


def ledger_balance(*, organization) -> int:
    """The balance as the ledger says (the truth the wallet's cached balance must agree with)."""
    return LedgerEntry.objects.filter(organization=organization).aggregate(s=Sum("amount_cents"))["s"] or 0
