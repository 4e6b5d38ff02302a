"""The ops back-office for leasing: the request queue, the fulfilment page (ranked matching pool
accounts, take / assign / auto-assign / reject), the pool (one by one or CSV import with row errors) and
live leases (release). Every action calls the same services as the API and the commands."""

from datetime import UTC, timedelta

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from import_export import fields, resources
from import_export.admin import ImportMixin

from accounts.admin_bulk import TASK_ROWS, audit, runs_in_batches, tell
from accounts.admin_search import IdSearchMixin
from accounts.admin_site import NothingToSaveMixin, ViewOnlyInTheAdmin, ask_first, asks_first
from accounts.models import SocialAccount
from accounts.services import social_account_revoke
from billing.models import LedgerEntry
from billing.reports import stamp, usd_display
from config.api.errors import ApiError
from config.batches import pk_batches
from config.queueing import enqueue
from leasing import services, tasks
from leasing.geo import ISO_3166_ALPHA2, is_bcp47
from leasing.models import MAX_MONTHLY_PRICE_CENTS, Lease, LeaseAction, LeaseRequest, PoolAccount
from leasing.periods import period_bounds, period_index_at


class AgeFilter(admin.SimpleListFilter):
    title = "age"
    parameter_name = "age"

    def lookups(self, request, model_admin):
        return [("day", "Under a day"), ("days", "1–3 days"), ("old", "Over 3 days")]

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "day":
            return queryset.filter(submitted_at__gte=now - timedelta(days=1))
        if self.value() == "days":
            return queryset.filter(submitted_at__lt=now - timedelta(days=1), submitted_at__gte=now - timedelta(days=3))
        if self.value() == "old":
            return queryset.filter(submitted_at__lt=now - timedelta(days=3))
        return queryset


@admin.register(LeaseRequest)
class LeaseRequestAdmin(IdSearchMixin, admin.ModelAdmin):
    # `sa_…`: the account a partner's ticket names finds the request it was leased from.
    id_search_fields = {
        "lreq": ("id",),
        "org": ("organization_id",),
        "prj": ("project_id",),
        "sa": ("leases__social_account_id",),
    }
    list_display = (
        "id",
        "status",
        "organization",
        "project",
        "count",
        "vertical",
        "language",
        "reviewer",
        "submitted_at",
    )
    list_filter = ("status", AgeFilter, "vertical")
    search_fields = ("id", "organization__name", "project__name", "vertical")
    search_help_text = "A request, leased account, project or organization id (exact), a niche, or a name."
    ordering = ("submitted_at",)  # the queue: oldest first
    list_select_related = ("organization", "project", "reviewer")
    change_form_template = "admin/leasing/leaserequest/fulfil.html"

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def change_view(self, request, object_id, form_url="", extra_context=None):
        lease_request = self.get_object(request, unquote(object_id))
        if lease_request is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        # This view replaces the admin's change form, so it checks what the admin would: viewing needs the
        # view (or change) permission, and taking, assigning or rejecting, which lease accounts and start
        # billing, needs the change permission (held only by staff with MFA, accounts/staff_mfa.py).
        can_act = self.has_change_permission(request, lease_request)
        if not (can_act or self.has_view_permission(request, lease_request)):
            raise PermissionDenied
        if request.method == "POST":
            if not can_act:
                raise PermissionDenied
            return self._act(request, lease_request)
        return self._page(request, lease_request, can_act)

    def _page(self, request, lease_request, can_act, typed_reason=""):
        # An off-boarded organization is assigned nothing (services._reserve refuses it): its partial requests,
        # and one whose assignment was underway while it was off-boarded, listed the pool's matches to pick
        # from, and only the click said why not. The page says it instead, and offers nothing to assign.
        offboarded = lease_request.organization.offboarded_at is not None
        assignable = lease_request.status in LeaseRequest.ASSIGNABLE and not offboarded
        candidates = services.pool_candidates(request=lease_request) if assignable else []
        from billing.reports import usd_display
        from billing.selectors import wallet_get

        # Assigning charges the first month at once: ops see whether the partner is paying before they add to
        # a debt (a past-due organization may still be assigned accounts — a business call, README Billing).
        wallet = wallet_get(organization=lease_request.organization)

        leases = list(lease_request.leases.select_related("pool_account", "social_account"))
        remaining = max(lease_request.count - len(leases), 0)
        # What assigning the rest charges at once: the first months of the accounts auto-assign would take (the
        # best matches when only other regions match). A wallet that is not past due yet but cannot pay them
        # read "ok", and the warning came with the debt, after the assignment that made it.
        picks = [c for c in candidates if c.exact_language][:remaining] or candidates[:remaining]
        first_months = sum(c.account.monthly_price_cents for c in picks)
        wallet_short = wallet.status != wallet.Status.PAST_DUE and bool(picks) and first_months > wallet.balance_cents
        for lease in leases:
            # What the partner is billed, as it was fixed at assignment: ops may have repriced or renamed the
            # pool account since.
            lease.billed_display = usd_display(lease.monthly_price_cents)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Lease request {lease_request.id}",
            "original": lease_request,
            "lease_request": lease_request,
            "candidates": candidates,
            "leases": leases,
            "wallet": wallet,
            "wallet_past_due": wallet.status == wallet.Status.PAST_DUE,
            "wallet_balance": usd_display(wallet.balance_cents),
            "wallet_short": wallet_short,
            "first_months": usd_display(first_months),
            "first_months_accounts": len(picks),
            "actions_log": lease_request.actions.select_related("actor")[:50],
            "failure_problems": services.failure_problems(lease_request) if lease_request.failure_reason else [],
            # A partial request's top-up that failed: the partner still reads `partial` (no failureReason).
            "top_up_problems": (
                services.failure_problems(lease_request)
                if lease_request.status == LeaseRequest.Status.PARTIAL and services.failed_attempt(lease_request)
                else []
            ),
            # Taken and rejected while open; assigned while open or partial (the rest of its count).
            "is_open": lease_request.status in LeaseRequest.OPEN,
            "is_assignable": assignable,
            "offboarded": offboarded,
            "checking": services.assignment_underway(lease_request),
            "can_act": can_act,
            "remaining": remaining,
            "reason_max_length": services.REJECTION_REASON_MAX_LENGTH,
            "typed_reason": typed_reason,
            "has_view_permission": True,
        }
        return TemplateResponse(request, self.change_form_template, context)

    def _act(self, request, lease_request):
        action = request.POST.get("action")
        # Whom the page showed reviewing it (both forms post it): someone taking it meanwhile is not taken over
        # unknowingly, and a request someone else reviews is neither assigned nor rejected from here.
        seen = request.POST.get("seen_reviewer", services.UNSEEN)
        if seen is not services.UNSEEN:
            seen = _posted_number(seen)
        try:
            if action == "take":
                previous = lease_request.reviewer
                services.lease_request_take(request_id=lease_request.pk, actor=request.user, seen_reviewer=seen)
                taken_over = f", taken over from {previous}" if previous and previous != request.user else ""
                self.message_user(request, f"You are reviewing this request{taken_over}.", messages.SUCCESS)
            elif action == "assign":
                result = services.lease_assign_start(
                    shown_prices=_shown_prices(request),
                    request_id=lease_request.pk,
                    pool_account_ids=request.POST.getlist("pool_account"),
                    actor=request.user,
                    seen_reviewer=seen,
                )
                self._report(request, result)
            elif action == "auto":
                result = services.lease_assign_start(
                    request_id=lease_request.pk,
                    auto=True,
                    actor=request.user,
                    seen_reviewer=seen,
                    shown_prices=_shown_prices(request),
                )
                self._report(request, result)
            elif action == "reject":
                # Browsers post a textarea's line breaks as CRLF, yet count each as one character against its
                # maxlength: read them back as typed, or a reason the page accepted would be too long here.
                reason = request.POST.get("reason", "").replace("\r\n", "\n")
                try:
                    services.lease_request_reject(
                        request_id=lease_request.pk, reason=reason, actor=request.user, seen_reviewer=seen
                    )
                except services.LeaseError as exc:
                    # The page again with what was typed (a redirect lost it, and staff typed it all again).
                    self.message_user(request, exc.message, messages.ERROR)
                    lease_request.refresh_from_db()
                    return self._page(request, lease_request, can_act=True, typed_reason=reason)
                self.message_user(request, "Rejected; the partner sees the reason.", messages.SUCCESS)
            else:
                self.message_user(request, "Unknown action.", messages.ERROR)
        except services.LeaseError as exc:
            self.message_user(request, exc.message, messages.ERROR)
        return HttpResponseRedirect(reverse("admin:leasing_leaserequest_change", args=[quote(lease_request.pk)]))

    def _report(self, request, result):
        if services.failed_attempt(result):
            # Staff get what went wrong (the partner reads only the fixed failureReason; a failed top-up of a
            # partial request leaves it `partial`, with the accounts it had).
            problems = "; ".join(services.failure_problems(result)) or result.failure_reason
            what = "nothing more was leased" if result.status == LeaseRequest.Status.PARTIAL else "nothing was leased"
            self.message_user(request, f"The assignment failed, {what}: {problems}", messages.ERROR)
        elif result.status == LeaseRequest.Status.PROVISIONING:
            # The tokens are checked by a worker (services.lease_assign_start): the page shows the outcome.
            self.message_user(request, PROVISIONING_MESSAGE, messages.INFO)
        else:
            self.message_user(request, f"Request {result.status}.", messages.SUCCESS)


def _posted_number(value: str) -> int | None:
    """A whole number as the page's forms post them (a user id, a price in cents: ASCII digits), else None.
    str.isdigit() alone also takes "²" or "①", which int() refuses, as it does more than 4,300 digits: a 500."""
    if not (value.isascii() and value.isdigit()):
        return None
    try:
        return int(value)
    except ValueError:  # past int()'s digit limit
        return None


def _shown_prices(request) -> dict[str, int]:
    """The monthly price (cents) the request's page showed for each candidate (`pool_…:4900`, one each)."""
    shown = {}
    for value in request.POST.getlist("shown_price"):
        pool_id, _, cents = value.partition(":")
        if (price := _posted_number(cents)) is not None:
            shown[pool_id] = price
    return shown


PROVISIONING_MESSAGE = (
    "The picked accounts are reserved; a worker is checking their TikTok tokens and then leases them. "
    "Reload this page in a minute for the outcome."
)


class PoolAccountForm(forms.ModelForm):
    languages_text = forms.CharField(label="Languages", help_text="BCP 47 tags, comma-separated (en-US, en-GB)")
    geos_text = forms.CharField(label="Geos", help_text="ISO 3166-1 alpha-2 codes, comma-separated (US, CA)")

    class Meta:
        model = PoolAccount
        fields = (
            "handle",
            "display_name",
            "vertical",
            "audience_notes",
            "warmup_state",
            "monthly_price_cents",
            "status",
        )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["languages_text"] = ", ".join(self.instance.languages)
            self.initial["geos_text"] = ", ".join(self.instance.geos)

    def clean(self):
        cleaned = super().clean()
        if self.instance.pk:
            # The admin saves inside one transaction: lock the row now, so that an assignment or a release
            # waits for this save, and refuse a save based on a state that changed since the row was read
            # (it would put a leased account back as available with a copy of its token, or a released one
            # back as leased with none). Only the form's fields are then written (save_model).
            current = PoolAccount.objects.select_for_update().filter(pk=self.instance.pk).values("status").first()
            if current and current["status"] != self.instance.status:
                raise ValidationError(
                    f"This account became {current['status']} while you were editing it: reload the page and "
                    "make your change again."
                )
        return cleaned

    def clean_status(self):
        """By hand an account is only made available or retired; the leasing services move it to reserved and
        leased and back. A reserved or leased account keeps its status until its lease is released (setting it
        available would offer a leased account, whose token is with the partner, to the next request)."""
        status = self.cleaned_data["status"]
        current = self.instance.status if self.instance.pk else None
        if status == current:
            return status
        if current in (PoolAccount.Status.RESERVED, PoolAccount.Status.LEASED):
            raise ValidationError(f"This account is {current}: release its lease first, then change its status.")
        if status not in (PoolAccount.Status.AVAILABLE, PoolAccount.Status.RETIRED):
            raise ValidationError("Set an account available or retired; assigning a request leases it.")
        if status == PoolAccount.Status.AVAILABLE and not self.instance.access_token_enc:
            # Available, it would be auto-assigned and fail the partner's request at the token check. Connecting
            # it gives it a token and makes it available (leasing.services.pool_account_connect).
            raise ValidationError(
                'This account has no TikTok token: use "Connect on TikTok" (top of this page), which makes it '
                "available."
            )
        return status

    def clean_languages_text(self):
        return parse_languages(self.cleaned_data["languages_text"])

    def clean_geos_text(self):
        return parse_geos(self.cleaned_data["geos_text"])


def parse_languages(raw: str) -> list[str]:
    tags = [t.strip() for t in (raw or "").replace(";", ",").split(",") if t.strip()]
    if not tags or not all(is_bcp47(t) for t in tags):
        raise ValidationError("Give one or more BCP 47 tags, e.g. en-US.")
    return tags


def parse_geos(raw: str) -> list[str]:
    codes = [c.strip().upper() for c in (raw or "").replace(";", ",").split(",") if c.strip()]
    if not codes or any(c not in ISO_3166_ALPHA2 for c in codes):
        raise ValidationError("Give one or more ISO 3166-1 alpha-2 codes, e.g. US, CA.")
    return codes


class PoolAccountResource(resources.ModelResource):
    """CSV import of pool accounts: handle, vertical, languages, geos, monthly_price_cents, audience_notes,
    warmup_state. Languages and geos are `;`-separated. A row with a bad value is reported with its line
    number and nothing is imported. New accounts need their TikTok tokens: in sandbox mode they are issued
    at once; in live mode the account is imported retired until it is connected."""

    languages = fields.Field(attribute="languages", column_name="languages")
    geos = fields.Field(attribute="geos", column_name="geos")

    class Meta:
        model = PoolAccount
        import_id_fields = ("handle",)
        fields = ("handle", "vertical", "languages", "geos", "monthly_price_cents", "audience_notes", "warmup_state")
        skip_unchanged = True
        report_skipped = True

    def before_import_row(self, row, **kwargs):
        # As the form's field strips it (and before the handle finds the account to update): " " is no handle.
        row["handle"] = (row.get("handle") or "").strip()
        row["languages"] = parse_languages(row.get("languages", ""))
        row["geos"] = parse_geos(row.get("geos", ""))
        if not (row.get("vertical") or "").strip():
            raise ValidationError({"vertical": "required"})
        try:
            if not 0 <= int(row.get("monthly_price_cents", "")) <= MAX_MONTHLY_PRICE_CENTS:
                raise ValueError
        except (TypeError, ValueError):
            raise ValidationError(
                {"monthly_price_cents": f"a whole number of cents from 0 to {MAX_MONTHLY_PRICE_CENTS}"}
            )

    def validate_instance(self, instance, import_validation_errors=None, validate_unique=True):
        # The model's rules for the imported columns, the ones the one-by-one form applies (a handle is
        # required and fits its column, warmup_state is one of its choices, …). Unchecked, a row with an empty
        # handle or warmup_state "bogus" was imported as an available account, and one with no handle could be
        # auto-assigned: the partner got `handle: ""`. Not full_clean: the columns the import does not set
        # (platform_user_id, the tokens) are set once the row is valid (before_save_instance).
        errors = dict(import_validation_errors or {})
        imported = set(self._meta.fields) - set(errors)
        try:
            instance.clean_fields(exclude=[f.name for f in PoolAccount._meta.fields if f.name not in imported])
        except ValidationError as exc:
            errors = exc.update_error_dict(errors)
        if errors:
            raise ValidationError(errors)

    def import_field(self, field, instance, row, is_m2m=False, **kwargs):
        if field.attribute in ("languages", "geos"):
            setattr(instance, field.attribute, row[field.column_name])
            return
        super().import_field(field, instance, row, is_m2m, **kwargs)

    def before_save_instance(self, instance, row, **kwargs):
        # Also in the preview (dry run): it runs in a transaction that is rolled back, sandbox tokens included.
        # Only a new account: an existing one's tokens and status belong to the leasing services (a leased
        # account has no token here, its binding has it: it got a second one, or was retired, in live mode).
        if instance._state.adding and instance.status != PoolAccount.Status.RETIRED:
            _give_tokens(instance)

    def do_instance_save(self, instance, is_create):
        if is_create:
            super().do_instance_save(instance, is_create)
            return
        # Only the imported columns. The row was read without a lock, and an assignment or a release may have
        # changed its status and moved its tokens since: a whole-row save wrote them back (a leased account
        # back to available with a copy of its token, to be leased a second time).
        instance.save(update_fields=[name for name in self._meta.fields if name != "handle"])


def _give_tokens(account: PoolAccount) -> None:
    from django.conf import settings

    if settings.LAYERS_PLATFORMS == "sandbox":
        tokens = services.sandbox_tokens_for(account.handle)
        account.platform_user_id = tokens.platform_user_id
        services.pool_account_set_tokens(account, tokens)
    else:
        # Staff connect it on TikTok from its page (PoolAccountAdmin.connect_view), which makes it available.
        account.platform_user_id = account.platform_user_id or f"{services.PENDING_USER_PREFIX}{account.handle}"
        account.status = PoolAccount.Status.RETIRED
        account.status_note = services.RETIRED_NO_TOKENS


@admin.register(PoolAccount)
class PoolAccountAdmin(IdSearchMixin, ImportMixin, admin.ModelAdmin):
    id_search_fields = {"pool": ("id",)}
    resource_classes = [PoolAccountResource]
    form = PoolAccountForm
    list_display = (
        "handle",
        "vertical",
        "languages",
        "geos",
        "warmup_state",
        "monthly_price_cents",
        "status",
        "status_note",
    )
    list_filter = ("status", "vertical", "warmup_state")
    search_fields = ("handle", "vertical")
    readonly_fields = ("id", "platform_user_id", "token_expires_at", "token_lifetime", "created_at")
    change_form_template = "admin/leasing/poolaccount/change_form.html"

    # The form edits languages and geos as text (languages_text, geos_text); on a read-only page (staff with
    # the view permission only) the admin looks those names up here, not on the account, which has no such
    # attribute ("Languages text: None").
    @admin.display(description="Languages")
    def languages_text(self, obj):
        return ", ".join(obj.languages)

    @admin.display(description="Geos")
    def geos_text(self, obj):
        return ", ".join(obj.geos)

    def get_urls(self):
        connect = path(
            "<path:object_id>/connect/",
            self.admin_site.admin_view(self.connect_view),
            name="leasing_poolaccount_connect",
        )
        return [connect, *super().get_urls()]  # before the admin's catch-all `<path:object_id>/`

    def connect_view(self, request, object_id):
        """ "Connect on TikTok": send the staff member's browser to TikTok's consent page for this account; the
        OAuth callback gives the account (or its live leased binding) the new token and brings them back
        here with a message (leasing.services.pool_account_connect). A POST (a button): it starts something.
        Needs the change permission on pool accounts, like editing the account."""
        account = self.get_object(request, unquote(object_id))
        if account is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_change_permission(request, account):
            raise PermissionDenied
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        page = reverse("admin:leasing_poolaccount_change", args=[quote(account.pk)])
        try:
            link = services.pool_account_connect_start(pool_account=account, actor=request.user, return_url=page)
        except ApiError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return HttpResponseRedirect(page)
        return HttpResponseRedirect(link.authorize_url)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        # The connect button, and whether the account's live lease needs it (its leased account's token died).
        lease = obj.leases.filter(released_at__isnull=True).select_related("social_account").first() if obj else None
        context.update(
            can_connect=obj is not None
            and obj.status != PoolAccount.Status.RESERVED
            and self.has_change_permission(request, obj),
            live_lease=lease,
            lease_needs_reauth=lease is not None
            and lease.social_account.status == SocialAccount.Status.REAUTH_REQUIRED,
        )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def has_delete_permission(self, request, obj=None):
        # Retire instead (its status: a change, which needs MFA). Deleting needed only the delete permission,
        # with a password alone, yet takes the account out of the pool with its TikTok tokens for good (leasing
        # it again needs a new connect) and its staff connects' history (their OAuth sessions cascade).
        return False

    def has_import_permission(self, request):
        # django-import-export lets anyone who can see the list import unless told otherwise, and an import
        # adds accounts and rewrites existing ones (their prices are what future leases are billed).
        return self.has_add_permission(request) and self.has_change_permission(request)

    def save_model(self, request, obj, form, change):
        obj.languages = form.cleaned_data["languages_text"]
        obj.geos = form.cleaned_data["geos_text"]
        if not change:
            _give_tokens(obj)
            super().save_model(request, obj, form, change)
            return
        # Only what the form edits: tokens and the like belong to the leasing services, which may have moved
        # them since the page was read.
        fields = [*PoolAccountForm.Meta.fields, "languages", "geos"]
        if "status" in form.changed_data and obj.status == PoolAccount.Status.AVAILABLE:
            # The note says why the account was out of the pool ("token refresh refused by TikTok: reconnect
            # it"): back in it, an available account showing that note reads as still broken.
            obj.status_note = ""
            fields.append("status_note")
        obj.save(update_fields=fields)


class AccountStatusFilter(admin.SimpleListFilter):
    """The leased social account's status: a live lease whose account is reauth_required has a dead token
    (its posts fail CREDENTIAL_INVALID) while renewals go on: ops reconnect it from the pool account's page."""

    title = "account status"
    parameter_name = "account_status"

    def lookups(self, request, model_admin):
        return [(s, s) for s in SocialAccount.Status.values]

    def queryset(self, request, queryset):
        if self.value() in SocialAccount.Status.values:
            return queryset.filter(social_account__status=self.value())
        return queryset


@admin.register(Lease)
class LeaseAdmin(NothingToSaveMixin, IdSearchMixin, admin.ModelAdmin):
    id_search_fields = {
        "sa": ("social_account_id",),
        "org": ("organization_id",),
        "pool": ("pool_account_id",),
        "lreq": ("request_id",),
        "prj": ("project_id",),
    }
    list_display = (
        "pool_account",
        "leased_handle",
        "account_status",
        "organization",
        "project",
        "price",
        "assigned_at",
        "released_at",
    )
    list_filter = (AccountStatusFilter, "released_at")
    search_fields = ("pool_account__handle", "handle", "organization__name", "project__name")
    search_help_text = (
        "A leased account, request, pool account, project or organization id (exact), a handle (@ or not), or a name."
    )
    # One statement for the page, the leased account's status included.
    list_select_related = ("pool_account", "organization", "project", "social_account")

    @admin.display(description="leased as", ordering="handle")
    def leased_handle(self, lease):
        # The handle the partner leased and is billed for (the pool account may have been renamed since).
        return f"@{lease.handle}" if lease.handle else "-"

    @admin.display(description="account status", ordering="social_account__status")
    def account_status(self, lease):
        status = lease.social_account.status
        if status == SocialAccount.Status.REAUTH_REQUIRED and lease.released_at is None:
            page = reverse("admin:leasing_poolaccount_change", args=[quote(lease.pool_account_id)])
            return format_html('{} — <a href="{}">reconnect it on TikTok</a>', status, page)
        return status

    @admin.display(description="monthly price", ordering="monthly_price_cents")
    def price(self, lease):
        return usd_display(lease.monthly_price_cents)

    # The page answers "charged twice / the wrong amount for this account": the price as money, how far the
    # lease is paid and every charge of it, beside who leased and released it.
    fields = (
        "organization",
        "project",
        "request",
        "pool_account",
        "social_account",
        "leased_handle",
        "account_status",  # a dead lease is still billed: ops and finance see it here, with the way to fix it
        "price",
        "assigned_at",
        "assigned_by_who",
        "released_at",
        "released_by_who",
        "paid_through",
        "charges",
        "refunds",
    )
    readonly_fields = fields
    actions = ["release_leases"]

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            # Staff who cannot open the ledger see the entries' ids without links (a link would answer 403).
            obj.ledger_linked = request.user.has_perm("billing.view_ledgerentry")
        return super().render_change_form(request, context, add, change, form_url, obj)

    # `assigned_by` and `released_by` hold staff only; the lease's history also names a partner's API key (their
    # release) and automation (a command's assignment), instead of a blank.
    @admin.display(description="assigned by")
    def assigned_by_who(self, lease):
        return _who(lease, "assigned", lease.assigned_by)

    @admin.display(description="released by")
    def released_by_who(self, lease):
        return _who(lease, "released", lease.released_by) if lease.released_at else "-"

    @admin.display(description="paid through")
    def paid_through(self, lease):
        """The end of the latest charged month, the months counted from assignment by the shared period functions
        (as billing charges them and the release confirmation states it); and the months that have started (before
        the release, if released) but that the renewal job has not charged yet, which would otherwise read as
        unpaid or forgotten."""
        charged = _charges(lease)
        if not charged:
            return "-"
        anchor, last = lease.assigned_at.astimezone(UTC), charged[-1].period_index
        _, end = period_bounds(anchor, last)
        if lease.released_at is not None and end >= lease.released_at:
            return stamp(end)  # released within its last charged month: nothing more is owed
        running = period_index_at(anchor, min(timezone.now(), lease.released_at or timezone.now()))
        if running <= last:
            return stamp(end)
        months = "the month that started then is" if running == last + 1 else f"the {running - last} months since are"
        return f"{stamp(end)} — {months} not charged yet (the renewal job charges within 15 minutes)"

    @admin.display(description="charges")
    def charges(self, lease):
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{} – {}</td><td style='text-align:right'>{}</td><td>{}</td></tr>",
            (
                (
                    # Counted from 1, as the Monthly billing report, its CSV and the ledger count a lease's months
                    # ("month 1" is the month from assignment): numbered from 0 here, the same charge read month 0
                    # on this page and month 1 there. The ledger keeps the 0-based period_index.
                    e.period_index + 1,
                    stamp(e.period_start),
                    stamp(e.period_end),
                    usd_display(e.amount_cents),
                    format_html('<a href="{}">{}</a>', _ledger_url(e), e.pk)
                    if getattr(lease, "ledger_linked", False)
                    else e.pk,
                )
                for e in _charges(lease)
            ),
        )
        return format_html(
            '<table id="lease-charges"><thead><tr><th>month of lease</th><th>period (UTC)</th><th>amount</th>'
            "<th>ledger entry</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )

    @admin.display(description="refunds and corrections")
    def refunds(self, lease):
        """The adjustments staff recorded for this leased account (a refund of a month, a correction), beside its
        charges: what the partner was charged for it and what was given back read on one page."""
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td style='text-align:right'>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    stamp(e.created_at),
                    usd_display(e.amount_cents),
                    e.reason,
                    e.actor or "",
                    format_html('<a href="{}">{}</a>', _ledger_url(e), e.pk)
                    if getattr(lease, "ledger_linked", False)
                    else e.pk,
                )
                for e in _adjustments(lease)
            ),
        )
        return format_html(
            '<table id="lease-refunds"><thead><tr><th>recorded (UTC)</th><th>amount</th><th>reason</th><th>by</th>'
            "<th>ledger entry</th></tr></thead><tbody>{}</tbody></table>",
            rows or format_html("<tr><td colspan='5'>{}</td></tr>", "No adjustment names this lease."),
        )

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @runs_in_batches
    @asks_first
    @admin.action(
        description="Release selected leases (cancels queued posts, stops renewals, no refund)", permissions=["change"]
    )
    def release_leases(self, request, queryset):
        queryset = queryset.select_related("pool_account", "organization", "social_account")
        page = ask_first(
            self, request, queryset, describe=lambda leases: [_release_consequence(lease) for lease in leases]
        )
        if page is not None:
            return page
        # Each release is its own transaction (the lease, the wallet, the pool account, the posts, the events: about
        # 15 ms): 10,000 leases took two and a half minutes in one request. The first RELEASES_IN_REQUEST are
        # released here, a worker releases the rest (leasing.services.leases_release); each kind of outcome is said
        # of each lease while they are few, and counted past that (accounts/admin_bulk.py).
        description = self.release_leases.short_description
        told = {"done": [], "already": [], "meanwhile": []}
        canceled = 0
        last = None
        for lease in queryset.order_by("pk")[:RELEASES_IN_REQUEST]:
            last = lease.pk
            if lease.released_at is not None:
                told["already"].append(f"@{lease.pool_account.handle}: already released.")
                continue
            result = social_account_revoke(account_id=lease.social_account_id, actor=request.user)
            if not result.released:
                # Released by someone else (the partner's DELETE, another staff member) after the list read it:
                # "released" would tell this one they did what the history says another did.
                lease.refresh_from_db(fields=["released_at", "released_by"])
                when = stamp(lease.released_at) if lease.released_at else "a moment ago"
                told["meanwhile"].append(
                    f"@{lease.pool_account.handle}: already released at {when} by "
                    f"{_who(lease, 'released', lease.released_by)}; nothing done."
                )
                continue
            audit(Lease, [lease.pk], user_id=request.user.pk, description=description)
            canceled += result.canceled_scheduled_posts
            told["done"].append(
                f"@{lease.pool_account.handle}: released, {result.canceled_scheduled_posts} queued post(s) canceled."
            )
        handed = left = 0
        for ids in pk_batches(queryset, TASK_ROWS, after=last) if last is not None else ():
            if not left and enqueue(tasks.leases_release_by_staff, ids, request.user.pk, None, description):
                handed += len(ids)
            else:
                left += len(ids)
        count = {kind: f"Leases: {len(rows):,}" for kind, rows in told.items()}
        tell(
            self,
            request,
            told["done"],
            messages.SUCCESS,
            f"{count['done']} released, {canceled:,} queued post(s) canceled.",
        )
        tell(
            self, request, told["already"], messages.WARNING, f"{count['already']} already released: left as they are."
        )
        tell(self, request, told["meanwhile"], messages.WARNING,
             f"{count['meanwhile']} released by someone else (the partner, a colleague) after the list was read: "
             "nothing done to them.")  # fmt: skip
        if handed:
            self.message_user(
                request,
                f"Leases: {handed:,} more of those selected are released by a worker in the next minutes (in their "
                "history under your name); reload the list to follow it.",
                messages.INFO,
            )
        if left:
            self.message_user(
                request,
                f"Leases: {left:,} more of those selected are left as they are: the task queue did not take them. "
                "Release them again later: the leases already released are left alone.",
                messages.ERROR,
            )


# Releases made in the admin's own request (the rest by a worker): each is its own transaction, about 15 ms.
RELEASES_IN_REQUEST = 200


def _charges(lease) -> list:
    """The lease's charges in period order, read once per page (its paid-through date and its table share it)."""
    _read_entries(lease)
    return lease._charges


def _adjustments(lease) -> list:
    """The adjustments that name the lease (refunds, corrections), in ledger order."""
    _read_entries(lease)
    return lease._adjustments


def _read_entries(lease) -> None:
    # Its charges and the adjustments naming it in one statement (each side along its own index: the charges'
    # (lease, period_index), ledger_adjusted_lease), rather than one per table on the page.
    if hasattr(lease, "_charges"):
        return
    entries = list(
        LedgerEntry.objects.filter(Q(lease=lease) | Q(adjusted_lease=lease))
        .select_related("actor")
        .order_by("created_at", "id")
    )
    lease._charges = sorted((e for e in entries if e.lease_id == lease.pk), key=lambda e: e.period_index)
    lease._adjustments = [e for e in entries if e.adjusted_lease_id == lease.pk]


def _who(lease, action: str, staff) -> str:
    if staff is not None:
        return str(staff)
    if not hasattr(lease, "_by"):  # one read of the history for both
        rows = lease.actions.filter(action__in=("assigned", "released")).select_related("actor")
        lease._by = {row.action: row.by for row in list(rows)[::-1]}  # newest first: the latest of each wins
    return lease._by.get(action, "-")


def _ledger_url(entry) -> str:
    return reverse("admin:billing_ledgerentry_change", args=[quote(entry.pk)])


def _release_consequence(lease) -> tuple[str, str]:
    """What release_leases will do to `lease`, for its confirmation page. Paid through: the end of the
    period running now, which the release charges if the renewal job has not yet (billing's
    lease_paid_through, which charges it, cannot run on a page that must change nothing)."""
    label = f"@{lease.handle or lease.pool_account.handle} leased to {lease.organization}"
    if lease.released_at is not None:
        return label, "already released: left as it is"
    _, end = period_bounds(lease.assigned_at, period_index_at(lease.assigned_at, timezone.now()))
    if lease.social_account.status == SocialAccount.Status.REAUTH_REQUIRED:
        # lease_release_for_account retires it: its token is dead or lacks a permission.
        back = "the account needs a reauth, so it is retired from the pool (Connect on TikTok puts it back)"
    else:
        back = "the account goes back to the pool"
    return (
        label,
        f"released now, no refund: paid through {stamp(end)}; its queued posts canceled, no more renewals, {back}",
    )


@admin.register(LeaseAction)
class LeaseActionAdmin(ViewOnlyInTheAdmin, admin.ModelAdmin):
    list_display = ("created_at", "action", "by", "request", "lease")
    list_filter = ("action",)
    # One statement for the page: the lease's label names its pool account and project.
    list_select_related = ("actor", "request", "lease__pool_account", "lease__project")
    readonly_fields = ("created_at", "action", "by", "request", "lease", "detail")

    @admin.display(description="by")
    def by(self, action):
        return action.by  # staff, the partner's API key, or automation
