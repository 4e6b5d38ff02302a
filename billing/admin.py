"""Finance in the admin: wallets (balance, past-due), the read-only ledger, the form that records top-ups and
adjustments (through the same services as the command), and the monthly billing report with its chart
and CSV export."""

import uuid
from datetime import date
from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import quote
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseBadRequest, HttpResponseRedirect, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.translation import gettext

from accounts.admin_choices import label_choices
from accounts.admin_search import IdSearchMixin, RelatedIdsSearchMixin
from accounts.admin_site import ViewOnlyInTheAdmin
from accounts.models import Organization
from billing import reports, selectors, services
from billing.models import LedgerEntry, MonthlyBilling, Wallet
from config.adminpaging import LargeTablePaginator
from config.api.errors import Validation
from config.api.ids import is_valid
from leasing.models import Lease
from leasing.periods import add_months

# The ledger list filtered to one organization (the wallet page links it): then, and only then, it shows the
# balance after each entry. Unfiltered, a running sum would be a window over the whole ledger on every visit.
ORGANIZATION_PARAMETER = "organization__id__exact"


def _description(entry: LedgerEntry) -> str:
    if entry.kind == LedgerEntry.Kind.LEASE_CHARGE:
        # The leased account's id too (the partner's `leaseSocialAccountId`, the monthly report's Social account
        # ID): a pool account released and leased again to the same organization on the same day owes two first
        # months, which read "@handle, month 1" twice, a double charge to finance without it.
        return f"@{entry.lease.handle}, month {entry.period_index + 1} ({entry.lease.social_account_id})"
    if entry.adjusted_lease_id is not None:
        # The leased account staff named for the adjustment (a refund): read with the reason, as the lease's page
        # and the monthly billing per account show it.
        lease = entry.adjusted_lease
        return f"{entry.reason} (for @{lease.handle}, {lease.social_account_id})"
    return entry.reason


class RecordedMonthFilter(admin.DateFieldListFilter):
    """Django's date filter (Any date, Today, Past 7 days, This month, This year), with each of the previous
    12 months by name between This month and This year. Finance closes a month on the first days of the next
    one, when "This month" is already the new one: November had to be typed into the address bar on 1 December.
    The same parameters (`created_at__gte`, `created_at__lt`, UTC midnights), so links made for the built-in
    choices keep working."""

    PREVIOUS_MONTHS = 12

    def __init__(self, field, request, params, model, model_admin, field_path):
        super().__init__(field, request, params, model, model_admin, field_path)
        this_month = timezone.localtime(timezone.now()).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        months = []
        for back in range(1, self.PREVIOUS_MONTHS + 1):
            start = add_months(this_month, -back)
            label = f"{start:%B %Y}"
            months.append((label, {self.lookup_kwarg_since: start, self.lookup_kwarg_until: add_months(start, 1)}))
        at = [str(title) for title, _params in self.links].index(gettext("This month")) + 1
        self.links = (*self.links[:at], *months, *self.links[at:])


class PastDueFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [("past_due", "Past due"), ("ok", "OK")]

    def queryset(self, request, queryset):
        if self.value() == "past_due":
            return queryset.filter(balance_cents__lt=0)
        if self.value() == "ok":
            return queryset.filter(balance_cents__gte=0)
        return queryset


class OffboardedFilter(admin.SimpleListFilter):
    """Off-boarding leaves the wallet for finance to decide a refund of what is left (accounts.services.
    organization_offboard): the partners gone, and what each still holds, is one click."""

    title = "organization"
    parameter_name = "offboarded"

    def lookups(self, request, model_admin):
        return [("yes", "Off-boarded"), ("no", "Active")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(organization__offboarded_at__isnull=self.value() == "no")
        return queryset


@admin.register(Wallet)
class WalletAdmin(admin.ModelAdmin):
    list_display = (
        "organization",
        "balance",
        "status_label",
        "offboarded_at",
        "past_due_since",
        "updated_at",
    )
    list_filter = (PastDueFilter, OffboardedFilter)
    search_fields = ("organization__name", "organization__id")
    list_select_related = ("organization",)
    ordering = ("organization__name",)
    fields = (*list_display, "recent_entries")
    readonly_fields = fields

    def has_add_permission(self, request):
        return False  # opened with the organization; money is recorded with the form below

    def has_change_permission(self, request, obj=None):
        return False  # the balance moves only with ledger entries

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="balance", ordering="balance_cents")
    def balance(self, wallet):
        return reports.usd_display(wallet.balance_cents)

    @admin.display(description="off-boarded at", ordering="organization__offboarded_at")
    def offboarded_at(self, wallet):
        offboarded_at = wallet.organization.offboarded_at
        return reports.stamp(offboarded_at) if offboarded_at else None  # None: the admin's "-"

    @admin.display(description="status")
    def status_label(self, wallet):
        if wallet.status == Wallet.Status.PAST_DUE:
            return format_html('<strong style="color:#ba2121">{}</strong>', "past due")
        return "ok"

    @admin.display(description="latest entries")
    def recent_entries(self, wallet):
        # With the balance after each entry, "charged twice?" reads down the column; the newest one's is the
        # wallet's balance, as the ledger sums it. Leases and actors prefetched, not joined: the window reads
        # every entry of the organization, and joins would run for each of them before the newest 20 are kept.
        entries = selectors.ledger_with_balances(organization_id=wallet.pk).prefetch_related(
            "lease", "adjusted_lease", "actor"
        )[:20]
        link = reverse("admin:billing_ledgerentry_changelist") + f"?{ORGANIZATION_PARAMETER}={wallet.pk}"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td style='text-align:right'>{}</td><td style='text-align:right'>{}</td>"
            "<td>{}</td><td>{}</td></tr>",
            (
                (
                    reports.stamp(e.created_at),
                    e.get_kind_display(),
                    reports.usd_display(e.amount_cents),
                    reports.usd_display(e.balance_after),
                    _description(e),
                    e.actor or "",
                )
                for e in entries
            ),
        )
        return format_html(
            '<table id="latest-entries"><thead><tr><th>when (UTC)</th><th>kind</th><th>amount</th>'
            "<th>balance after</th><th>what</th><th>by</th></tr></thead><tbody>{}</tbody></table>"
            '<p><a href="{}">The whole ledger of this organization</a></p>',
            rows,
            link,
        )

    def get_urls(self):
        own = [path("record/", self.admin_site.admin_view(self.record_view), name="billing_wallet_record")]
        return own + super().get_urls()

    def record_view(self, request):
        """Record a top-up or an adjustment (finance). The hidden token makes a double submission of the
        same form record one entry."""
        if not request.user.has_perm("billing.record_money"):
            raise PermissionDenied
        form = MoneyForm(request.POST or None, initial={"organization": request.GET.get("organization")})
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            org = data["organization"]
            service = services.wallet_top_up if data["kind"] == LedgerEntry.Kind.TOP_UP else services.wallet_adjust
            lease = data.get("lease")
            try:
                entry = service(
                    organization=org,
                    cents=data["cents"],
                    reason=data["reason"],
                    actor=request.user,
                    reference=data["reference"] or f"form:{data['token']}",
                    **({"lease": lease} if lease is not None else {}),
                )
            except Validation as exc:
                for name, problems in exc.details["fields"].items():
                    if name == "reference" and not data["reference"]:
                        problems = [_resubmitted(org, data, lease)]
                    name = "leased_account" if name == "lease" else name
                    form.add_error(name if name in form.fields else None, problems)
            else:
                balance = Wallet.objects.get(pk=org.pk).balance_cents
                if entry.already_recorded:
                    # The same reference (or this very form, submitted twice) was recorded before: nothing added.
                    by = f" by {entry.actor}" if entry.actor_id else ""
                    self.message_user(
                        request,
                        f"Already recorded on {reports.stamp(entry.created_at)}{by} "
                        f"({entry.get_kind_display()} of {reports.usd_display(entry.amount_cents)}, "
                        f"“{entry.reason}”): nothing added. {org.name}'s balance is {reports.usd_display(balance)}.",
                        messages.WARNING,
                    )
                else:
                    leased = f", for the leased account @{lease.handle} ({lease.social_account_id})" if lease else ""
                    self.message_user(
                        request,
                        f"{entry.get_kind_display()} of {reports.usd_display(entry.amount_cents)} recorded for "
                        f"{org.name}{leased}; balance {reports.usd_display(balance)}.",
                        messages.SUCCESS,
                    )
                if not self.has_view_permission(request):
                    # Staff who may record money but not view wallets: the wallet page would be a bare 403,
                    # the message above unseen, and the money read as not recorded (and recorded again).
                    return HttpResponseRedirect(reverse("admin:billing_wallet_record"))
                return HttpResponseRedirect(reverse("admin:billing_wallet_change", args=[quote(org.pk)]))
        context = {
            **self.admin_site.each_context(request),
            "title": "Record a top-up or adjustment",
            "opts": self.model._meta,
            "form": form,
        }
        return TemplateResponse(request, "admin/billing/money_form.html", context)


def _resubmitted(org, data: dict, lease) -> str:
    """This very form (its token) was recorded before with other values: say which, so that finance knows what
    they changed since (the account named, say) rather than be told of an amount they did not touch."""
    first = LedgerEntry.objects.filter(organization=org, reference=f"form:{data['token']}").first()
    changed = []
    if first is not None:
        if first.kind != data["kind"]:
            changed.append("kind")
        if first.amount_cents != data["cents"]:
            changed.append("amount")
        if first.adjusted_lease_id != (lease.pk if lease is not None else None):
            changed.append("leased account")
    what = f"another {' and '.join(changed)}" if changed else "other values"
    return f"This form was already submitted with {what}; nothing was recorded again. Open it again."


# The money form asks finance to confirm an amount this large (either sign) before recording it.
LARGE_AMOUNT_CENTS = 1_000_000


class MoneyForm(forms.Form):
    # Labelled with its id: money recorded for the wrong one of two partners with the same name is not undone.
    organization = label_choices(forms.ModelChoiceField(queryset=Organization.objects.all()))
    kind = forms.ChoiceField(
        choices=[
            (LedgerEntry.Kind.TOP_UP.value, "Top-up (credit)"),
            (LedgerEntry.Kind.ADJUSTMENT.value, "Adjustment (credit or debit)"),
        ],
        widget=forms.RadioSelect,
        initial=LedgerEntry.Kind.TOP_UP.value,
    )
    amount = forms.DecimalField(
        max_digits=13,
        decimal_places=2,
        help_text="US dollars, e.g. 250.00. For an adjustment, a negative amount debits the wallet.",
    )
    confirm_large_amount = forms.BooleanField(
        required=False,
        label="Confirm a large amount",
        help_text=f"Needed for {reports.usd_display(LARGE_AMOUNT_CENTS)} or more, credit or debit.",
    )
    reason = forms.CharField(max_length=500, help_text="Required. The partner sees it in their wallet entries.")
    reference = forms.CharField(
        max_length=100,
        required=False,
        help_text="Optional, e.g. the bank transfer id: an entry with the same reference is recorded only once.",
    )
    leased_account = forms.CharField(
        max_length=100,
        required=False,
        label="For the leased account",
        help_text="Optional, for an adjustment: the leased account's id (sa_…, the monthly billing's Social account "
        "ID) when it refunds or corrects that account's charges. It must be leased to this organization; the "
        "lease's page and the monthly billing per account then show it.",
    )
    # Becomes the entry's reference (`form:<token>`, 100 characters at most): a forged longer one is a form error.
    token = forms.CharField(widget=forms.HiddenInput, initial=lambda: uuid.uuid4().hex, max_length=64)

    def clean_amount(self):
        # Python's Decimal reads "1e3" as 1000: a number pasted from a spreadsheet, or a typo, recorded as money
        # the partner sees. Finance writes amounts in digits.
        if "e" in str(self.data.get(self.add_prefix("amount"), "")).lower():
            raise forms.ValidationError("Write the amount in digits, e.g. 1000.00 (no exponent).")
        return self.cleaned_data["amount"]

    def clean(self):
        data = super().clean()
        amount = data.get("amount")
        if amount is not None:
            data["cents"] = int(amount * 100)  # exact: at most two decimal places
            if data.get("kind") == LedgerEntry.Kind.TOP_UP and amount <= Decimal(0):
                self.add_error("amount", "A top-up must be positive.")
            if amount == Decimal(0):
                self.add_error("amount", "The amount cannot be zero.")
            elif abs(data["cents"]) >= LARGE_AMOUNT_CENTS and not data.get("confirm_large_amount"):
                # An extra zero typed by mistake is an entry the partner sees, corrected only by another one.
                self.add_error(
                    "amount",
                    f"That is {reports.usd_display(abs(data['cents']))}: tick “Confirm a large amount” below to "
                    "record it, or correct it.",
                )
        data["lease"] = None
        leased_account = (data.get("leased_account") or "").strip()
        if leased_account:
            if data.get("kind") != LedgerEntry.Kind.ADJUSTMENT:
                self.add_error("leased_account", "Only an adjustment names a leased account.")
                return data
            if not is_valid("sa", leased_account):
                self.add_error("leased_account", "Not a leased account id (sa_…, as the monthly billing lists it).")
                return data
            # A social account is leased once (Lease.social_account is one-to-one): its id names one lease.
            data["lease"] = Lease.objects.filter(social_account_id=leased_account).first()
            if data["lease"] is None:
                self.add_error("leased_account", "No leased account has this id.")
        return data


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ViewOnlyInTheAdmin, IdSearchMixin, RelatedIdsSearchMixin, admin.ModelAdmin):
    """Append-only: visible, never added, changed or deleted here (PostgreSQL would refuse anyway).

    The ledger grows by a charge per leased account and month and is never purged. No date hierarchy: its
    links read the earliest and latest entry and the distinct years (then months, days) of every entry the
    list shows, each a pass of the search over the ledger; the date filter below picks the same periods with
    one bounded range (as the posts list's "scheduled for" replaced its hierarchy)."""

    list_display = ("created_at", "organization", "kind", "amount", "what", "period_start", "period_end", "actor")
    list_filter = ("kind", ("created_at", RecordedMonthFilter))
    # The ids partners and finance quote: an entry's, an organization's, and a charge's leased account (its
    # `leaseSocialAccountId` in GET /v1/wallet/entries), matched exactly, by index.
    id_search_fields = {"le": ("id",), "org": ("organization_id",), "sa": ("lease__social_account_id",)}
    search_fields = ("organization__name", "lease__handle", "reason")
    search_help_text = (
        "An entry, organization or leased account id (exact), an organization name, a leased handle (@ or not), "
        "or part of a reason."
    )
    show_full_result_count = False  # no second count of the whole ledger beside a search's
    paginator = LargeTablePaginator  # unfiltered: the planner's estimate, not a COUNT(*) of the ledger
    list_select_related = ("organization", "lease", "adjusted_lease", "actor")
    # A charge's month of the lease counted from 1, as the report, its CSV, "what" and the lease page show it: the
    # raw period_index (0 = the month from assignment) read "0" here for the charge they all call month 1.
    fields = readonly_fields = [
        "month_of_lease" if f.name == "period_index" else f.name for f in LedgerEntry._meta.fields
    ]

    @admin.display(description="amount", ordering="amount_cents")
    def amount(self, entry):
        return reports.usd_display(entry.amount_cents)

    @admin.display(description="what")
    def what(self, entry):
        return _description(entry)

    @admin.display(description="month of lease")
    def month_of_lease(self, entry):
        return "-" if entry.period_index is None else entry.period_index + 1

    @admin.display(description="balance after")
    def balance_after(self, entry):
        cents = getattr(entry, "balance_after", None)  # set by LedgerChangeList for one organization's ledger
        return "-" if cents is None else reports.usd_display(cents)

    def one_organization(self, request) -> str | None:
        organization_id = request.GET.get(ORGANIZATION_PARAMETER)
        return organization_id if is_valid("org", organization_id) else None

    def get_list_display(self, request):
        columns = super().get_list_display(request)
        if not self.one_organization(request):
            return columns
        at = columns.index("amount") + 1
        return (*columns[:at], "balance_after", *columns[at:])

    def get_ordering(self, request):
        # One organization's ledger in ledger order (created_at, id: selectors.LEDGER_ORDER, through its index
        # ledger_org_newest), newest first, so that the balance after each entry reads down the page. The
        # whole ledger keeps the primary key's order: sorting every entry by time on each visit is a sort of
        # the whole table.
        if self.one_organization(request):
            return tuple(f"-{name}" for name in selectors.LEDGER_ORDER)
        return super().get_ordering(request)

    def get_changelist(self, request, **kwargs):
        return LedgerChangeList


class LedgerChangeList(ChangeList):
    def get_results(self, request):
        super().get_results(request)
        organization_id = self.model_admin.one_organization(request)
        if organization_id:
            # The page's entries are read (and kept: the page lists these very objects), then their balances
            # in one more statement, over the organization's ledger whatever else filtered the page.
            entries = list(self.result_list)
            balances = selectors.ledger_balances_after(organization_id=organization_id, entries=entries)
            for entry in entries:
                entry.balance_after = balances.get(entry.pk)


def _organization(asked: str) -> tuple[str | None, str | None]:
    """The organization a report is asked for: (its id, None); (None, None) when none is asked (every
    organization); (None, what is wrong) when no organization has the id given."""
    if not asked:
        return None, None
    # Spaces around an id come with a copy and paste (from a mail, a spreadsheet cell) and no id holds one:
    # stripped, it names the very organization meant. Nothing else is corrected: an id in upper case or with
    # a character wrong may be another organization's, and ids are matched exactly everywhere else.
    org = asked.strip()
    if not is_valid("org", org):
        # Not repeated back, and never sent to the database (a NUL byte, which PostgreSQL refuses outright).
        return None, "not an organization id (org_ and 32 lowercase hexadecimal digits)"
    if not Organization.objects.filter(pk=org).exists():
        return None, f"no organization has the id {org}"
    return org, None


@admin.register(MonthlyBilling)
class MonthlyBillingAdmin(ViewOnlyInTheAdmin, admin.ModelAdmin):
    """The finance report: its changelist is the report page (linked from the admin index as "Monthly
    billing"), its `csv/` the export of the same rows."""

    def get_urls(self):
        csv_view = self.admin_site.admin_view(self.csv_view)
        wallets_csv_view = self.admin_site.admin_view(self.wallets_csv_view)
        refunds_csv_view = self.admin_site.admin_view(self.refunds_csv_view)
        return [
            path("csv/", csv_view, name="billing_monthlybilling_csv"),
            path("wallets-csv/", wallets_csv_view, name="billing_monthlybilling_wallets_csv"),
            path("refunds-csv/", refunds_csv_view, name="billing_monthlybilling_refunds_csv"),
            *super().get_urls()[:1],
        ]

    def _selection(self, request) -> tuple[date, str | None, bool, str | None]:
        """The month and organization asked for, whether the month given was unreadable (no month, or an
        unreadable one, is this month), and what is wrong with the organization given if none has its id (no
        organization given is all of them)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        asked = request.GET.get("month")
        month = reports.parse_month(asked, default=None)
        unreadable = bool(asked) and month is None
        month = month or timezone.now().date().replace(day=1)
        org, org_problem = _organization(request.GET.get("organization") or "")
        return reports.month_start(month).date(), org, unreadable, org_problem

    def changelist_view(self, request, extra_context=None):
        month, org, unreadable, org_problem = self._selection(request)
        if unreadable:
            # Shown silently, this month's report (`?month=2026-13`) read as the month asked for.
            messages.warning(
                request, f"Month not understood: it must be {reports.MONTH_FORMAT}. Showing {month:%B %Y}."
            )
        if org_problem:
            # Shown silently, every organization's charges read as the one organization asked for.
            messages.warning(request, f"Organization not found: {org_problem}. Showing every organization.")
        report = reports.monthly_report(
            month=month,
            organization_id=org,
            page=reports.parse_page(request.GET.get("page")),
            wallets=self.may_view_wallets(request),
        )
        if report.renewals_pending:
            # Shown silently, a month over read as complete: exported, its totals then grew under finance.
            done = (
                f"the renewal job has charged the months that started up to {reports.stamp(report.charged_through)}"
                ", and any leased-account month that started after that is not charged yet"
                if report.charged_through
                else "the renewal job has recorded no run yet, so leased-account months that started in it may "
                "not be charged"
            )
            messages.warning(
                request,
                f"{report.month:%B %Y} is not final: {done}. Its totals and CSV grow when they are. The job runs "
                "every 15 minutes; if this stays, check that it runs (Layers now, Periodic tasks).",
            )
        query = f"month={report.month:%Y-%m}" + (
            f"&organization={report.organization_id}" if report.organization_id else ""
        )
        # The ledger's entries recorded in the month, as its date filter names the month (RecordedMonthFilter).
        ledger = reverse("admin:billing_ledgerentry_changelist")
        month_range = urlencode(
            {
                "created_at__gte": str(reports.month_start(report.month)),
                "created_at__lt": str(reports.month_start(report.next)),
            }
        )
        month_name, b = f"{report.month:%B %Y}", report.bridge
        bridge = [
            (f"Lease charges recorded in {month_name} (the wallets' lease charges)", b.recorded),
            ("− of which for periods starting in another month", b.other_months),
            (f"+ charges of {month_name} periods recorded in another month", b.recorded_outside),
            (f"= Charged in {month_name} (periods starting in it: the totals by organization)", b.charged),
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": f"Monthly billing — {report.month:%B %Y}",
            "is_nav_sidebar_enabled": False,  # the whole width for the table
            "opts": self.model._meta,
            "report": report,
            "columns": reports.COLUMNS,
            "total": reports.usd_display(report.total_cents),
            "org_totals": [(t, reports.usd_display(t.cents)) for t in report.org_totals],
            "chart": reports.chart_svg(report.chart),
            "organizations": Organization.objects.order_by("name").values_list("id", "name"),
            "csv_url": reverse("admin:billing_monthlybilling_csv") + "?" + query,
            "wallet_columns": [c.replace(" (USD)", "") for c in reports.WALLET_COLUMNS],
            "wallet_rows": [
                (
                    f"{ledger}?{ORGANIZATION_PARAMETER}={w.organization_id}&{month_range}",
                    reports.wallet_row(w, for_csv=False),
                )
                for w in report.wallets
            ],
            "wallet_total": report.wallets_total and reports.wallet_row(report.wallets_total, for_csv=False)[2:7],
            "wallets_csv_url": reverse("admin:billing_monthlybilling_wallets_csv") + "?" + query,
            "ledger_month_url": f"{ledger}?{month_range}",
            "bridge": [(label, reports.usd_display(cents)) for label, cents in bridge],
            "refund_columns": reports.REFUND_COLUMNS,
            "refunds_total": [
                reports.usd(cents)
                for cents in (
                    report.refunds_charged,
                    report.refunds_cents,
                    report.refunds_charged - report.refunds_cents,
                )
            ],
            "refunds_csv_url": reverse("admin:billing_monthlybilling_refunds_csv") + "?" + query,
            # The wallets' adjustments of the month: those naming a leased account (the refunds per account) and
            # the others, so that the refunds per account reconcile with the wallets' month.
            "adjustments_split": report.wallets_total
            and [
                ("Refunds naming a leased account (below)", reports.usd_display(report.refunds_cents)),
                ("Other adjustments", reports.usd_display(report.wallets_total.adjustments - report.refunds_cents)),
                ("= Adjustments (the wallets' column)", reports.usd_display(report.wallets_total.adjustments)),
            ],
            "page_query": query,
            "org_query": f"&organization={report.organization_id}" if report.organization_id else "",
        }
        return TemplateResponse(request, "admin/billing/monthly_report.html", context)

    def csv_view(self, request):
        """Every row of the month (all pages), streamed: a month of tens of thousands of charges is written
        as it is read instead of being held in memory first."""
        return self._csv(request, "billing", reports.csv_lines)

    def wallets_csv_view(self, request):
        """Each wallet's month (opening, top-ups, charges, adjustments, closing), as the page's table."""
        if not self.may_view_wallets(request):
            raise PermissionDenied
        return self._csv(request, "wallets", reports.wallets_csv_lines)

    def refunds_csv_view(self, request):
        """Each leased account refunded in the month (charged, refunded, the difference), as the page's table."""
        return self._csv(request, "refunds", reports.refunds_csv_lines)

    @staticmethod
    def may_view_wallets(request) -> bool:
        # Every wallet's balance, month after month, is what the wallet pages show: for staff who may view them,
        # not for whoever may read the charges.
        return request.user.has_perm("billing.view_wallet")

    def _csv(self, request, name: str, lines):
        month, org, unreadable, org_problem = self._selection(request)
        # A file of another month than the one asked for (its name says which) is easily taken for it; one of
        # every organization, asked for one, is every partner's charges sent on as one partner's statement.
        problems = [f"month must be {reports.MONTH_FORMAT}."] if unreadable else []
        problems += [f"organization: {org_problem}."] if org_problem else []
        if problems:
            return HttpResponseBadRequest("".join(f"{p}\n" for p in problems), content_type="text/plain")
        suffix = f"-{org}" if org else ""
        response = StreamingHttpResponse(
            lines(month=month, organization_id=org), content_type="text/csv; charset=utf-8"
        )
        response["Content-Disposition"] = f'attachment; filename="{name}-{month:%Y-%m}{suffix}.csv"'
        return response
