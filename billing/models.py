"""Wallets and the append-only ledger. Money is integer cents (USD). The ledger is the truth: a wallet's
balance is the sum of its organization's entries; `Wallet.balance_cents` is a cache written in the same
transaction as every entry (tests check that they agree). PostgreSQL refuses UPDATE and DELETE of ledger
rows (trigger in migration 0002), and a unique constraint on (lease, period_index) makes a double charge
impossible, whoever races."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts.models import Organization
from config.api.ids import PrefixedIdField

CURRENCY = "USD"


class Wallet(models.Model):
    """One per organization, opened with it (services.wallets_open); an organization without one (made by a
    path that does not open it) gets it with its first entry, and reads as a zero balance until then. Every
    writer of an organization's ledger locks this row first (services._wallets_lock), so ledger writes of one
    organization are serialized and the cached balance cannot drift."""

    class Status(models.TextChoices):
        OK = "ok", "OK"
        PAST_DUE = "past_due", "Past due"

    organization = models.OneToOneField(Organization, primary_key=True, on_delete=models.PROTECT, related_name="wallet")
    currency = models.CharField(max_length=3, default=CURRENCY, editable=False)
    balance_cents = models.BigIntegerField(default=0, editable=False)
    past_due_since = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="Set when the balance went below zero; cleared at ≥ 0."
    )
    updated_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        permissions = [("record_money", "Can record top-ups and adjustments")]
        indexes = [
            models.Index(fields=["past_due_since"], name="wallet_past_due", condition=Q(past_due_since__isnull=False))
        ]

    def __str__(self):
        return f"wallet of {self.organization}"

    @property
    def status(self) -> str:
        return self.Status.PAST_DUE if self.balance_cents < 0 else self.Status.OK


class LedgerEntry(models.Model):
    """One balance change. Signed cents: top-ups are positive, lease charges negative (or zero for a
    free lease), adjustments either way. Never updated, never deleted."""

    class Kind(models.TextChoices):
        TOP_UP = "top_up", "Top-up"
        LEASE_CHARGE = "lease_charge", "Lease charge"
        ADJUSTMENT = "adjustment", "Adjustment"

    id = PrefixedIdField(prefix="le")
    # Indexes are chosen for a cheap bulk insert: each FK is covered by a composite index below instead of
    # its own (organization → ledger_org_newest, lease → one_charge_per_lease_period, actor → partial).
    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="ledger_entries", db_index=False
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    amount_cents = models.BigIntegerField(help_text="Signed: + credits the wallet, − debits it.")
    reason = models.CharField(max_length=500, blank=True, help_text="Shown to the partner in GET /v1/wallet/entries.")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,  # SET_NULL would UPDATE ledger rows, which the database refuses
        related_name="+",
        db_index=False,
        help_text="The staff member who recorded it; empty for automation (charges, commands).",
    )
    reference = models.CharField(
        max_length=100,
        blank=True,
        help_text="Optional idempotency reference of a top-up or adjustment (e.g. a bank transfer id): "
        "recording the same reference twice for one organization records it once.",
    )
    lease = models.ForeignKey(
        "leasing.Lease", null=True, blank=True, on_delete=models.PROTECT, related_name="ledger_entries", db_index=False
    )
    # The leased account an adjustment is for (a refund of its month, say), named by the staff member who records
    # it; only on adjustments (ledger_adjusted_lease_on_adjustments), and only a lease of the entry's organization
    # (services.wallet_adjust checks it).
    # Not `lease`: that one marks a lease charge, and everything reading a lease's charges filters on it. Its
    # foreign key is added NOT VALID and validated apart (migration 0004), its index built concurrently.
    adjusted_lease = models.ForeignKey(
        "leasing.Lease",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="adjustments",
        db_index=False,
        verbose_name="for the leased account",
        help_text="The lease an adjustment is for (a refund of a leased account): shown on the lease's page and in "
        "the monthly billing per account.",
    )
    period_index = models.PositiveIntegerField(null=True, blank=True, help_text="0 = the month from assignment")
    period_start = models.DateTimeField(null=True, blank=True)
    period_end = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    # Set on the entry a recording service returns when its reference had been recorded before: that call
    # added nothing, and whoever recorded it (finance in the admin, a script) must be told so.
    already_recorded = False

    class Meta:
        verbose_name = "ledger entry"
        verbose_name_plural = "ledger entries"
        constraints = [
            # The promise "exactly once per lease and period", held by the database itself.
            models.UniqueConstraint(fields=["lease", "period_index"], name="one_charge_per_lease_period"),
            models.UniqueConstraint(
                fields=["organization", "reference"], condition=~Q(reference=""), name="ledger_reference_once"
            ),
            models.CheckConstraint(
                name="ledger_entry_shape",
                condition=(
                    Q(
                        kind="lease_charge",
                        lease__isnull=False,
                        period_index__isnull=False,
                        period_start__isnull=False,
                        period_end__isnull=False,
                        amount_cents__lte=0,
                    )
                    | Q(kind="top_up", lease__isnull=True, period_index__isnull=True, amount_cents__gt=0)
                    | (Q(kind="adjustment", lease__isnull=True, period_index__isnull=True) & ~Q(amount_cents=0))
                ),
            ),
            # Apart from ledger_entry_shape, added by its own migration without a long lock (billing 0005).
            models.CheckConstraint(
                name="ledger_adjusted_lease_on_adjustments",
                condition=Q(adjusted_lease__isnull=True) | Q(kind="adjustment"),
            ),
        ]
        indexes = [
            models.Index(fields=["organization", "-created_at", "-id"], name="ledger_org_newest"),
            models.Index(fields=["kind", "period_start"], name="ledger_kind_period"),
            models.Index(fields=["actor"], name="ledger_actor", condition=Q(actor__isnull=False)),
            models.Index(
                fields=["adjusted_lease", "created_at"],
                name="ledger_adjusted_lease",
                condition=Q(adjusted_lease__isnull=False),
            ),
        ]

    def __str__(self):
        return f"{self.kind} {self.amount_cents:+d}¢ ({self.id})"


class MonthlyBilling(LedgerEntry):
    """No table: the admin's entry for the finance report (per month: every charged leased account,
    organization totals, a chart of the last 12 months, CSV export). See billing/admin.py."""

    class Meta:
        proxy = True
        verbose_name = "monthly billing report"
        verbose_name_plural = "monthly billing"


class RenewalProgress(models.Model):
    """One row: how far the renewal job has charged. `charged_through` is the `now` of the latest run of
    services.lease_charges_run that finished (the greatest, should runs overlap): every lease month that
    started at or before it is charged. The monthly report reads it to say whether a month that is over is
    final: a month that started its last renewals after the job's latest run (at most 15 minutes at every
    month's end, longer while the job is down or paused) is still missing them, and its totals and CSV grow
    once the job charges them."""

    SINGLETON = 1

    id = models.PositiveSmallIntegerField(primary_key=True, default=SINGLETON, editable=False)
    charged_through = models.DateTimeField(editable=False)
    recorded_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        verbose_name = "renewal progress"
        verbose_name_plural = "renewal progress"

    def __str__(self):
        return f"renewals charged through {self.charged_through}"
