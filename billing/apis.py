"""Partner API of billing: the organization's wallet and its ledger. Read-only: money moves through
leasing (charges) and Layers finance (top-ups, adjustments)."""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from billing import selectors
from billing.models import LedgerEntry, Wallet
from config.api.fields import Int64Field, TimestampField
from config.api.pagination import paginate, parse_filters
from config.api.schema import errors, list_schema
from config.api.views import ApiView

POLICY = (
    "**Insufficient funds.** A lease charge is never refused, skipped or postponed: it is recorded even when "
    "the balance cannot cover it, and the balance may go below zero. While the balance is negative the wallet's "
    "`status` is `past_due` (since `pastDueSince`); it is `ok` again as soon as top-ups or adjustments bring "
    "the balance back to zero or more."
)


class WalletOutput(serializers.Serializer):
    balanceCents = Int64Field(
        source="balance_cents", help_text="Integer cents; the sum of every ledger entry. May be negative."
    )
    currency = serializers.ChoiceField(choices=["USD"])
    status = serializers.ChoiceField(
        choices=[s.value for s in Wallet.Status],
        help_text="`ok` while balanceCents ≥ 0; `past_due` while it is negative (a charge the balance could "
        "not cover was recorded anyway).",
    )
    pastDueSince = TimestampField(
        source="past_due_since", allow_null=True, help_text="When the balance went below zero; null when ok."
    )


class LedgerEntryOutput(serializers.Serializer):
    id = serializers.CharField(help_text="le_…")
    kind = serializers.ChoiceField(
        choices=[k.value for k in LedgerEntry.Kind],
        help_text="`top_up` (credit), `lease_charge` (one month of one leased account), `adjustment` (a "
        "correction by Layers finance, credit or debit).",
    )
    amountCents = Int64Field(
        source="amount_cents", help_text="Signed integer cents: positive credits the wallet, negative debits it."
    )
    description = serializers.SerializerMethodField(
        help_text="Human-readable: the leased account and period of a charge, the reason of a top-up or adjustment."
    )
    leaseSocialAccountId = serializers.SerializerMethodField(
        help_text="sa_… of the leased account charged; on an adjustment, of the leased account it refunds or "
        "corrects, when Layers finance named one (null otherwise)."
    )
    periodIndex = serializers.IntegerField(
        source="period_index", allow_null=True, help_text="Month of the lease charged: 0 = the month from assignment."
    )
    periodStart = TimestampField(source="period_start", allow_null=True)
    periodEnd = TimestampField(
        source="period_end", allow_null=True, help_text="Exclusive: the next period starts here."
    )
    createdAt = TimestampField(source="created_at")

    def get_description(self, entry) -> str:
        if entry.kind == LedgerEntry.Kind.LEASE_CHARGE:
            return (
                f"Leased account @{entry.lease.handle}, month {entry.period_index + 1}: "
                f"{entry.period_start:%Y-%m-%d} to {entry.period_end:%Y-%m-%d}"
            )
        default = "Top-up" if entry.kind == LedgerEntry.Kind.TOP_UP else "Adjustment"
        return entry.reason or default

    def get_leaseSocialAccountId(self, entry) -> str | None:
        # A refund names its account apart from `lease` (which marks a charge: LedgerEntry.adjusted_lease).
        lease = entry.lease if entry.lease_id else entry.adjusted_lease if entry.adjusted_lease_id else None
        return lease.social_account_id if lease is not None else None


class WalletApi(ApiView):
    @extend_schema(
        responses={200: WalletOutput, **errors()},
        operation_id="wallet_get",
        tags=["billing"],
        description=(
            "Your organization's wallet, in integer cents (USD). Each leased account is charged its "
            "`monthlyPriceCents` when it is assigned (the month from the assignment instant) and again at the "
            "start of each following month (same day of the month and time of day as `assignedAt`, in UTC, "
            "clamped to the month's last day: an account assigned on Jan 31 renews on Feb 28/29, then Mar 31; one "
            "assigned at 2026-03-01T04:00:00.000Z renews at 2026-04-01T04:00:00.000Z whatever your local date), "
            "exactly once per month, until it is released. "
            "A release stops the next renewal and refunds nothing. Top-ups and adjustments are recorded by Layers "
            "finance.\n\n" + POLICY
        ),
    )
    def get(self, request):
        return Response(WalletOutput(selectors.wallet_get(organization=self.organization)).data)


class EntryFilter(serializers.Serializer):
    kind = serializers.ChoiceField(choices=[k.value for k in LedgerEntry.Kind], required=False)


class WalletEntryListApi(ApiView):
    @list_schema(
        LedgerEntryOutput,
        "LedgerEntryPage",
        operation_id="wallet_entries_list",
        tags=["billing"],
        parameters=[
            OpenApiParameter("kind", str, enum=[k.value for k in LedgerEntry.Kind], description="Only this kind.")
        ],
        description=(
            "The ledger of your wallet, newest first: every top-up, lease charge and adjustment. Entries are "
            "never changed or removed (a correction is a new adjustment), and the sum of all entries is "
            "`balanceCents`. A renewal is recorded shortly after its period starts (the job runs every 15 "
            "minutes); if it was delayed, each missed month is still charged once.\n\n" + POLICY
        ),
    )
    def get(self, request):
        params = parse_filters(request, EntryFilter)
        qs = selectors.ledger_entry_list(organization=self.organization, kind=params.get("kind"))
        return paginate(request, qs, lambda rows: LedgerEntryOutput(rows, many=True).data)
