import re
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import quote
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import formats, timezone
from django.utils.html import format_html, format_html_join
from django.utils.text import capfirst

from accounts import (
    auth_admin,  # noqa: F401  (replaces Django's user and group admins)
    services,
    tasks,
)
from accounts.admin_bulk import ROW_MESSAGES, Said, audit_rows, runs_in_batches, tell
from accounts.admin_search import IdSearchMixin, RelatedIdsSearchMixin
from accounts.admin_site import NothingToSaveMixin, ViewOnlyInTheAdmin, about, ask_first, asks_first
from accounts.models import (
    ApiKey,
    DataDeletionRequest,
    Event,
    EventSubjectId,
    OAuthSession,
    OnboardingStep,
    Organization,
    PlatformIdentity,
    Project,
    SocialAccount,
    SocialAccountStatusChange,
)
from accounts.platforms.http import WEB_REQUEST_PLATFORM_CALLS
from accounts.platforms.scopes import stored_scopes
from billing import services as billing_services
from config.adminpaging import LargeTablePaginator
from config.batches import row_batches


class ProjectInline(admin.TabularInline):
    model = Project
    extra = 0
    fields = ("id", "name", "created_at")
    readonly_fields = ("id", "created_at")
    can_delete = False  # see NotDeletedInTheAdmin

    def has_add_permission(self, request, obj=None):
        # An off-boarded organization gets no project (ProjectForm): no key can be issued to use one.
        return (obj is None or obj.offboarded_at is None) and super().has_add_permission(request, obj)


class NotDeletedInTheAdmin:
    """Organizations, projects and events are never deleted from the back-office: an organization or a project
    takes every account, post, event and lease of the partner with it (an organization also runs into the
    append-only ledger, a 500), and events are the partner's replay history (GET /v1/events) with their
    deliveries; the retention job purges old events. Nor are an account's layers (one deleted by hand was
    never put back for a leased account, whose posts' metrics then stopped syncing: the sync needs all four)
    or a partner's content containers (its content, read by GET /v1/content/{containerId})."""

    def has_delete_permission(self, request, obj=None):
        return False


class OnboardingStepInline(admin.TabularInline):
    model = OnboardingStep
    extra = 0
    fields = ("key", "social_account", "completed_at")
    readonly_fields = fields
    can_delete = False


@admin.register(Organization)
class OrganizationAdmin(NotDeletedInTheAdmin, admin.ModelAdmin):
    list_display = ("name", "id", "created_at", "offboarded_at")
    list_filter = (("offboarded_at", admin.EmptyFieldListFilter),)
    search_fields = ("name", "id")
    readonly_fields = ("id", "created_at", "offboarded_at", "offboarded_by")
    inlines = [ProjectInline, OnboardingStepInline]
    actions = ["offboard_organizations"]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if not change:
            # As organization_create does (the admin's form saves the row itself): finance finds the new
            # organization in the wallet list, at $0.00, to record its first top-up. In the page's transaction.
            billing_services.wallets_open([obj.pk])

    @runs_in_batches
    @asks_first
    @admin.action(description="Off-board selected organizations", permissions=["change"])
    def offboard_organizations(self, request, queryset):
        # Off-boarding revokes keys and releases leases: the organization change permission is required, and
        # with it MFA (accounts/staff_mfa.py). The confirmation page shows what each organization loses, counted
        # by the service's dry run, and the wallet balance left for finance's refund decision, to staff who may
        # view wallets (the change permission on organizations is not finance's).
        show_balance = request.user.has_perm("billing.view_wallet")
        page = ask_first(self, request, queryset, describe=lambda orgs: self._offboard_consequences(orgs, show_balance))
        if page is not None:
            return page
        # One web request makes at most WEB_REQUEST_PLATFORM_CALLS platform calls (gunicorn's grace) and
        # REVOKES_IN_REQUEST revokes (a leased account's makes no call but is its lease's release): the service
        # revokes the accounts that fit and hands the rest to a worker, as revoke_accounts does.
        # The organizations a batch at a time, each batch's audit rows written once it is done (runs_in_batches).
        budget, revokes = WEB_REQUEST_PLATFORM_CALLS, services.REVOKES_IN_REQUEST
        for organizations in row_batches(queryset):
            for organization in organizations:
                result = services.organization_offboard(
                    organization_id=organization.pk, actor=request.user, platform_calls=budget, revokes=revokes
                )
                budget -= result.platform_calls
                revokes -= result.revokes
                report = result.report(show_balance=show_balance)
                self.message_user(request, about(organization, report, label=str(organization)),
                                  messages.SUCCESS if result.complete else messages.WARNING)  # fmt: skip
            description = self.offboard_organizations.short_description
            audit_rows(organizations, user_id=request.user.pk, description=description)

    @staticmethod
    def _offboard_consequences(organizations, show_balance: bool) -> list[tuple[str, str]]:
        rows = []
        for plan in services.organization_offboard_plans(organizations=list(organizations)):
            organization = plan.organization
            label = f"{organization} ({organization.pk})"
            if plan.already_offboarded:
                label += f", off-boarded already on {formats.date_format(organization.offboarded_at, 'Y-m-d H:i')}"
            rows.append(
                (
                    label,
                    f"{plan.api_keys_revoked} API key(s) revoked (401 from now on), "
                    f"{plan.webhook_endpoints_disabled} webhook endpoint(s) disabled (nothing more is sent), "
                    f"{plan.posts_canceled} queued post(s) canceled, "
                    f"{len(plan.accounts_disconnected)} account(s) disconnected, of which {plan.leases_released} "
                    f"leased (released, no further charge, the current month not refunded), "
                    f"{plan.lease_requests_rejected} open lease request(s) rejected. "
                    f"{services.wallet_left(plan.wallet_balance_cents, show_balance=show_balance)}",
                )
            )
        return rows


class ProjectForm(forms.ModelForm):
    class Meta:
        model = Project
        fields = ("organization", "name")

    def clean_organization(self):
        # A project added to an off-boarded organization could never be used (no key can be issued for it). Read
        # under the organization's row lock, held to the save (the admin saves in one transaction), as the
        # off-boarding marks it: an add either commits first or sees the mark.
        organization = self.cleaned_data.get("organization")
        if organization is not None and self.instance._state.adding:
            offboarded_at = services.organization_offboarded_at(organization_id=organization.pk)
            if offboarded_at is not None:
                raise forms.ValidationError(
                    f"The organization was off-boarded on {offboarded_at:%Y-%m-%d %H:%M} UTC: no project can be "
                    "added to it."
                )
        return organization


@admin.register(Project)
class ProjectAdmin(NotDeletedInTheAdmin, IdSearchMixin, admin.ModelAdmin):
    form = ProjectForm
    list_display = ("name", "id", "organization", "created_at")
    list_filter = ("organization",)
    # Also the managed-provider page's project search: a project, or every project of an organization, by
    # its id or by name.
    id_search_fields = {"prj": ("id",), "org": ("organization_id",)}
    search_fields = ("name", "organization__name")
    search_help_text = "A project or organization id (exact), or a project or organization name."
    readonly_fields = ("id", "created_at")
    list_select_related = ("organization",)

    def get_readonly_fields(self, request, obj=None):
        # The organization of an existing project never changes. Its accounts, posts, containers, layers and
        # leases keep the organization they were created in: a project moved to another organization would
        # let that one create content in it and schedule it on the first one's accounts.
        return (*self.readonly_fields, "organization") if obj else self.readonly_fields


class AllowlistWidget(forms.Textarea):
    def format_value(self, value):
        if isinstance(value, list):
            return "\n".join(value)
        if isinstance(value, str) and value.startswith("["):
            import json

            try:
                return "\n".join(json.loads(value))
            except ValueError:
                return value
        return value


class ApiKeyForm(forms.ModelForm):
    allowed_return_domains = forms.CharField(
        required=False,
        widget=AllowlistWidget(attrs={"rows": 4}),
        help_text="One host per line, exactly as the returnUrl host (add :port for a non-default port), or an "
        "origin (https://app.acme.com:443, http://localhost:80): saved as its host and port (https's 443 "
        "dropped). A listed port is matched as a number, written in the returnUrl or not (localhost:80 allows "
        "http://localhost/), and no other port. No wildcards: app.acme.com does not allow www.app.acme.com.",
    )

    class Meta:
        model = ApiKey
        fields = ("organization", "name", "allowed_return_domains")

    def clean_organization(self):
        organization = self.cleaned_data.get("organization")
        if organization is not None and self.instance._state.adding:
            try:
                services.api_key_issuable_check(organization_id=organization.pk)
            except ValueError as exc:
                raise forms.ValidationError(str(exc))
        return organization

    def clean_allowed_return_domains(self):
        raw = self.cleaned_data.get("allowed_return_domains") or ""
        entries = [line.strip() for line in raw.replace(",", "\n").splitlines() if line.strip()]
        try:
            return services.normalize_allowlist(entries)
        except ValueError as exc:
            raise forms.ValidationError(str(exc))


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = ("__str__", "organization", "created_at", "last_used_at", "revoked_at")
    list_filter = ("organization", "revoked_at")
    search_fields = ("name", "prefix", "organization__name")
    readonly_fields = ("id", "prefix", "created_at", "created_by", "last_used_at", "revoked_at")
    actions = ["revoke_keys"]
    list_select_related = ("organization",)

    def has_delete_permission(self, request, obj=None):
        # Revoke instead. Deleting cuts the partner off like a revoke (which needs the change permission, and
        # so MFA) and also erases the key's row: who issued it, when it was last used, its audit history.
        return False

    def get_readonly_fields(self, request, obj=None):
        # The organization of an existing key never changes: a key moved to another org would leak it.
        return (*self.readonly_fields, "organization") if obj else self.readonly_fields

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
            # The form checked the organization; the service's lock settles an off-boarding that began since.
            request._layers_new_key = services.api_key_issue(key=obj)
            return
        super().save_model(request, obj, form, change)

    def response_add(self, request, obj, post_url_continue=None):
        # The raw key is rendered once, in this response, and stored nowhere (not even in a message). Beside it,
        # what else the partner needs to make its first call (the API's address, the docs, its project ids), so
        # that ops send it all at once rather than the partner asking back.
        return TemplateResponse(
            request,
            "admin/accounts/apikey/created.html",
            {
                **self.admin_site.each_context(request),
                "key": obj,
                "raw_key": request._layers_new_key,
                "projects": obj.organization.projects.order_by("created_at", "pk"),
                "public_url": settings.LAYERS_PUBLIC_URL,
                "title": "API key created",
                "opts": self.model._meta,
            },
        )

    @runs_in_batches
    @asks_first
    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke_keys(self, request, queryset):
        # Revoking is immediate (the partner's next call is a 401) and cannot be undone: ask first, naming
        # each key as ops know it (its name and prefix) and whose it is.
        queryset = queryset.select_related("organization")
        page = ask_first(
            self,
            request,
            queryset,
            describe=lambda keys: [
                (
                    f"{key} of {key.organization}",
                    "already revoked: left as it is"
                    if key.revoked_at is not None
                    else "revoked: every call made with it is refused (401) from now on",
                )
                for key in keys
            ],
        )
        if page is not None:
            return page
        # A batch of keys at a time (one transaction, one read of them), each batch's audit rows written once it
        # is revoked (runs_in_batches): the keys revoked get theirs, the ones found revoked already none.
        revoked, already = Said(), Said()
        for keys in row_batches(queryset):
            done = set(services.api_keys_revoke(key_ids=[key.pk for key in keys]))
            for key in keys:
                if key.pk in done:
                    revoked.add(about(key, "revoked.", label=str(key)))
                else:
                    already.add(about(key, "already revoked.", label=str(key)))
            audit_rows(
                [key for key in keys if key.pk in done],
                user_id=request.user.pk,
                description=self.revoke_keys.short_description,
            )
        # Each key named while they are few, counted past that ("select all" over every key: a message each).
        tell(
            self,
            request,
            revoked.rows,
            messages.SUCCESS,
            f"API keys: {revoked.count:,} revoked: every call made with them is refused (401) from now on.",
        )
        tell(
            self,
            request,
            already.rows,
            messages.WARNING,
            f"API keys: {already.count:,} already revoked: left as they are.",
        )
        if 0 < revoked.count <= ROW_MESSAGES:  # the skipped ones are said above: "Revoked 0 key(s)." read as a success
            self.message_user(request, f"Revoked {revoked.count} key(s).", messages.SUCCESS)


class EventTypeFilter(admin.SimpleListFilter):
    """The event types are a fixed set (EVENT_TYPES): listing them costs no query, where a filter on the
    column read the distinct types of every event on each page load."""

    title = "type"
    parameter_name = "type__exact"  # what the former field filter used: links keep working

    def lookups(self, request, model_admin):
        return [(type_, type_) for type_ in sorted(services.EVENT_TYPES)]

    def queryset(self, request, queryset):
        return queryset.filter(type=self.value()) if self.value() else queryset


class FanoutFilter(admin.SimpleListFilter):
    """The events behind "events not fanned out" in "Layers now" (scheduling/pipeline_status.py): of an
    organization with a live webhook endpoint, and not fanned out a minute and a half after they were recorded."""

    title = "webhook fan-out"
    parameter_name = "fanout"

    def lookups(self, request, model_admin):
        return [("late", "Late: not fanned out")]

    def queryset(self, request, queryset):
        if self.value() != "late":
            return queryset
        from accounts.webhooks import services as webhooks

        return queryset.filter(webhooks.events_fan_out_late(now=timezone.now()))


@admin.register(Event)
class EventAdmin(NotDeletedInTheAdmin, IdSearchMixin, RelatedIdsSearchMixin, admin.ModelAdmin):
    list_display = ("id", "type", "organization", "created_at")
    list_filter = (EventTypeFilter, FanoutFilter)
    # A partner's ticket names what it did not hear about ("no scheduled_post.failed for sp_…"): a post,
    # account or lease request id finds the events about it, by the id in their payload (`subject_id`, read
    # through the event_subject index on the same expression: the table is never small).
    id_search_fields = {
        "evt": ("id",),
        "org": ("organization_id",),
        "sp": ("subject_id",),
        "sa": ("subject_id",),
        "lreq": ("subject_id",),
    }
    search_fields = ("organization__name",)
    search_help_text = (
        "An event or organization id (exact), the id of the post, account or lease request an event is about "
        "(exact), or an organization name."
    )
    show_full_result_count = False  # one row per change of every partner: no second count of the table
    paginator = LargeTablePaginator  # unfiltered: the planner's estimate, not a COUNT(*) of the table
    readonly_fields = ("id", "organization", "type", "data", "created_at", "webhook_deliveries")
    list_select_related = ("organization",)

    def get_queryset(self, request):
        # An alias, not an annotation: it is computed only where a search filters on it, never selected.
        return super().get_queryset(request).alias(subject_id=EventSubjectId("data"))

    @admin.display(description="webhook deliveries")
    def webhook_deliveries(self, obj):
        """Where the event went: one delivery per subscribed endpoint (a handful), read in one query; and why
        it went nowhere else: its fan-out has not run, or endpoints subscribed to its type were not live (a
        410 disabled them, staff did, the partner deleted them) and were skipped. Three small queries."""
        from accounts.webhooks.models import WebhookDelivery, WebhookFanout

        deliveries = WebhookDelivery.objects.filter(event=obj).select_related("endpoint").order_by("created_at")
        rows = [
            (
                reverse("admin:webhooks_webhookdelivery_change", args=[quote(d.pk)]),
                d.pk,
                d.status,
                d.attempts,
                d.endpoint.url,
            )
            for d in deliveries
        ]
        fanout = WebhookFanout.objects.filter(event_id=obj.pk).first()
        if not rows and fanout is None:
            return _not_fanned_out(obj)
        skipped = _skipped_subscribers(obj, delivered_to={d.endpoint_id for d in deliveries})
        parts = []
        if rows:
            parts.append(
                format_html(
                    "<ul>{}</ul>",
                    format_html_join("", '<li><a href="{}">{}</a>: {}, {} attempt(s), to {}</li>', rows),
                )
            )
        elif not skipped:
            return format_html(
                "None: no endpoint of the organization subscribed to this type when it happened (fanned out {}).",
                _when(fanout.fanned_out_at),
            )
        if skipped:
            parts.append(
                format_html(
                    "{} these endpoints subscribed to this type, skipped because they were not live then:<ul>{}</ul>",
                    format_html("Fanned out {}; no delivery to", _when(fanout.fanned_out_at))
                    if fanout is not None
                    else "No delivery to",
                    format_html_join("", '<li><a href="{}">{}</a> ({}): {}</li>', skipped),
                )
            )
        return format_html_join("", "{}", ((part,) for part in parts))

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


def _when(moment) -> str:
    """A time as the back-office shows times (config/formats: "2026-11-29 12:31:05 UTC")."""
    return formats.localize(timezone.localtime(moment))


def _not_fanned_out(event: Event) -> str:
    """What the event page says of an event whose fan-out never committed (no WebhookFanout marker)."""
    from accounts.webhooks.services import RETRY_WINDOW

    if event.created_at < timezone.now() - RETRY_WINDOW:
        return (
            "None: never fanned out (its fan-out did not run or did not commit, and the relay tick no longer fans "
            "out events older than the retry window)."
        )
    return (
        "None yet: not fanned out yet (its fan-out has not run, or did not commit: a worker or the broker failed). "
        "If the organization has a live endpoint, the relay tick fans it out within minutes."
    )


def _skipped_subscribers(event: Event, *, delivered_to: set[str]) -> list[tuple[str, str, str, str]]:
    """(admin link, id, URL, state) of each endpoint of the event's organization that existed when it happened
    and subscribes to its type, yet got no delivery: the fan-out skips endpoints that are not live
    (accounts.webhooks.services._subscribers). Said with each: disabled or deleted since when, and why."""
    from accounts.webhooks.models import WebhookEndpoint

    endpoints = WebhookEndpoint.objects.filter(
        organization_id=event.organization_id, created_at__lte=event.created_at
    ).order_by("created_at", "pk")
    skipped = []
    for endpoint in endpoints:
        if event.type not in endpoint.events_at(event.created_at) or endpoint.pk in delivered_to:
            continue
        if endpoint.deleted_at is not None:
            state = format_html("deleted since {}", _when(endpoint.deleted_at))
        elif endpoint.status == WebhookEndpoint.Status.DISABLED:
            state = format_html(
                "disabled since {} ({}: {})",
                _when(endpoint.disabled_at),
                endpoint.disabled_reason or "no reason recorded",
                endpoint.get_disabled_reason_display() if endpoint.disabled_reason else "",
            )
        elif endpoint.enabled_at and endpoint.enabled_at > event.created_at:
            state = format_html(
                "enabled again {}, after the event: it receives the events from then on", _when(endpoint.enabled_at)
            )
        else:
            state = "active now, but not live when the event was fanned out (disabled then, enabled again since)"
        url = reverse("admin:webhooks_webhookendpoint_change", args=[quote(endpoint.pk)])
        skipped.append((url, endpoint.pk, endpoint.url, state))
    return skipped


@admin.register(PlatformIdentity)
class PlatformIdentityAdmin(NothingToSaveMixin, IdSearchMixin, admin.ModelAdmin):
    list_display = ("handle", "platform", "organization", "platform_user_id", "created_at")
    list_filter = ("platform",)
    id_search_fields = {"pi": ("id",), "org": ("organization_id",)}
    # Meta or the person may quote any of Instagram's ids for them (the data deletion request's row keeps the
    # one its request named).
    search_fields = ("handle", "platform_user_id", "app_scoped_id", "token_user_id", "organization__name")
    # All of it is the platform's, written at connect and profile refresh: the handle and display name are
    # what GET /v1/social-accounts shows partners, and an edit here (accounts.change_platformidentity needs
    # no MFA) rewrote them until the next refresh.
    readonly_fields = (
        "id",
        "organization",
        "platform",
        "platform_user_id",
        "app_scoped_id",
        "token_user_id",
        "handle",
        "display_name",
        "created_at",
        "updated_at",
    )
    list_select_related = ("organization",)

    def has_add_permission(self, request):
        # Identities are written by connects (one per organization and platform user); an added one had no
        # organization and its Save was a 500.
        return False


@admin.register(DataDeletionRequest)
class DataDeletionRequestAdmin(ViewOnlyInTheAdmin, admin.ModelAdmin):
    """Support's answer to Meta or to the person about a data deletion request: found by the confirmation code Meta
    showed the person (typed in any case, as the status page takes it) or by the id Meta's request named (the
    identity's page shows all three ids a person may be known by); when it was asked and done, and how many
    bindings it erased. The proof of an erasure: shown, never added, changed or deleted, by anyone. Nothing of the
    person is on it; the request's digest (request_key) is left out, it answers no question."""

    list_display = (
        "confirmation_code",
        "platform",
        "platform_user_id",
        "requested_at",
        "completed_at",
        "accounts_erased",
    )
    list_filter = ("platform",)
    # Exact (case-insensitive) matches only: a code or an id is quoted whole, and a part of one would list others'.
    search_fields = ("=confirmation_code", "=platform_user_id")
    search_help_text = "A confirmation code, or the Instagram user id Meta's request named (exact)."
    fields = ("confirmation_code", "platform", "platform_user_id", "requested_at", "completed_at", "accounts_erased")
    readonly_fields = fields
    ordering = ("-completed_at", "-id")


class StatusChangeInline(ViewOnlyInTheAdmin, admin.TabularInline):
    """The account's status history, oldest first: every transition with its reason and what made it. Appended by
    the services in the transition's transaction, never added, changed or deleted here (as the lease requests'
    audit trail, leasing's LeaseAction): staff reading a ticket must find what happened, all of it."""

    model = SocialAccountStatusChange
    extra = 0
    can_delete = False
    fields = ("at", "change", "reason", "source")
    readonly_fields = fields
    verbose_name_plural = "status history"

    @admin.display(description="change")
    def change(self, obj):
        was = SocialAccount.Status(obj.from_status).label if obj.from_status else "(created)"
        return f"{was} → {SocialAccount.Status(obj.to_status).label}"

    def has_view_permission(self, request, obj=None):
        # Whoever may see the account sees its history: no separate permission for staff to be given.
        return request.user.has_perm("accounts.view_socialaccount") or request.user.has_perm(
            "accounts.change_socialaccount"
        )


@admin.register(SocialAccount)
class SocialAccountAdmin(NothingToSaveMixin, IdSearchMixin, admin.ModelAdmin):
    """Read-only for ops; tokens are never shown (the encrypted columns are not even listed)."""

    list_display = ("id", "handle", "platform", "kind", "status", "project", "organization", "connected_at")
    list_filter = ("platform", "kind", "status")
    id_search_fields = {
        "sa": ("id",),
        "pi": ("identity_id",),
        "prj": ("project_id",),
        "org": ("organization_id",),
    }
    search_fields = ("identity__handle", "project__name", "organization__name")
    search_help_text = "An account, project or organization id (exact), a handle (@ or not), or a name."
    list_select_related = ("identity", "project", "organization")
    fields = (
        "id",
        "organization",
        "project",
        "identity",
        "platform",
        "kind",
        "status",
        "token_expires_at",
        "token_lifetime",
        "refresh_expires_at",
        "granted_scopes",
        "token_refreshed_at",
        "health_checked_at",
        "avatar_url",
        "connected_at",
        "reauth_required_at",
        "reauth_reason",
        "disconnected_at",
        "events",
    )
    readonly_fields = fields
    inlines = [StatusChangeInline]
    actions = ["revoke_accounts"]

    @admin.display(ordering="identity__handle")
    def handle(self, obj):
        return obj.identity.handle

    @admin.display(description="granted scopes")
    def granted_scopes(self, obj):
        """What the platform granted the account's token (a post or metrics call outside it is refused)."""
        return ", ".join(stored_scopes(obj.scopes)) or "Not known."

    @admin.display(description="events")
    def events(self, obj):
        # A link to the event list searched by the account's id, not the events themselves: reading them
        # on every view of the page would be a query on the events table for each.
        url = f"{reverse('admin:accounts_event_changelist')}?{urlencode({'q': obj.pk})}"
        return format_html('<a href="{}">events about this account</a>', url)

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # rows are the audit trail: revoke instead

    @runs_in_batches
    @asks_first
    @admin.action(description="Revoke (disconnect) selected accounts", permissions=["change"])
    def revoke_accounts(self, request, queryset):
        may_release = request.user.has_perm("leasing.change_lease")
        queryset = queryset.select_related("identity", "project", "organization")
        page = ask_first(
            self, request, queryset, describe=lambda accounts: self._revoke_consequences(accounts, may_release)
        )
        if page is not None:
            return page
        # A revoke calls the platform after its commit, and a leased account's is its lease's release: those
        # that fit this request's platform calls and its revokes are made now (services.RevokeBudget); from the
        # first that does not, the rest of the selection is handed to a worker, TASK_ROWS ids to a task (one task
        # per account was 50,000 broker calls in one request), which revokes each and writes its history line
        # under this staff member's name. Each kind of outcome is said of each account while they are few, and
        # counted past that (tell): 5,000 accounts were 5,000 messages.
        # The accounts a batch at a time (config.batches.row_batches), each batch's audit rows written once it is
        # done (runs_in_batches); those left alone get none.
        budget = services.RevokeBudget(calls=WEB_REQUEST_PLATFORM_CALLS, rows=services.REVOKES_IN_REQUEST)
        told = {kind: Said() for kind in ("done", "already", "leased", "meanwhile")}
        canceled = released = 0
        last = None
        later = False
        for accounts in row_batches(queryset):
            acted = []
            for account in accounts:
                if account.status == SocialAccount.Status.DISCONNECTED:
                    told["already"].add(about(account, "already disconnected."))
                elif account.kind == SocialAccount.Kind.LEASED and not may_release:
                    # Revoking a leased account releases its lease (billing stops): that is a lease change.
                    told["leased"].add(about(account, "leased; releasing it needs the lease permission."))
                elif (result := budget.revoke(account, actor=request.user)) == services.REVOKE_LATER:
                    later = True
                    break
                elif not result.revoked:
                    # Disconnected by someone else (the partner's DELETE, a colleague) after the list read it:
                    # "disconnected" would tell this one they did what the status history says another did.
                    told["meanwhile"].add(
                        about(account, f"already disconnected {_disconnected_by(account)}; nothing done.")
                    )
                else:
                    acted.append(account)
                    canceled += result.canceled_scheduled_posts
                    released += result.released
                    told["done"].add(
                        about(account, f"disconnected, {result.canceled_scheduled_posts} queued post(s) canceled")
                        + (", lease released" if result.released else "")
                    )
                last = account.pk
            audit_rows(acted, user_id=request.user.pk, description=self.revoke_accounts.short_description)
            if later:
                break
        handed, left = [], []
        if later:
            description = self.revoke_accounts.short_description
            handed, left = budget.hand_off(
                queryset,
                after=last,
                task=tasks.social_accounts_revoke_by_staff,
                args=(request.user.pk, None, description),
            )
        count = {kind: f"Social accounts: {said.count:,}" for kind, said in told.items()}
        for kind, level, many in (
            ("done", messages.SUCCESS, f"disconnected, {canceled:,} queued post(s) canceled, {released:,} lease(s) "
             "released."),
            ("already", messages.WARNING, "already disconnected: left as they are."),
            ("leased", messages.ERROR, "leased, left as they are: releasing them needs the lease permission."),
            ("meanwhile", messages.WARNING, "disconnected by someone else (the partner, a colleague) after the list "
             "was read: nothing done to them."),
        ):  # fmt: skip
            tell(self, request, told[kind].rows, level, f"{count[kind]} {many}")
        # The accounts handed on are known by their ids only (never read whole here): named while they are few.
        name = capfirst(SocialAccount._meta.verbose_name)
        tell(self, request,
             [f"{name} {pk}: a worker disconnects it in a moment (too many revokes for one page), in its history "
              "under your name; reload the list to see it disconnected." for pk in handed],
             messages.INFO,
             f"Social accounts: {len(handed):,} more are disconnected by a worker in the next minutes (too many for "
             "one page), each in its history under your name; those found disconnected already, or leased while you "
             "may not release leases, are left alone. Reload the list to follow it.")  # fmt: skip
        tell(self, request,
             [f"{name} {pk}: left as it is: the task queue did not take its revoke. Revoke it again." for pk in left],
             messages.ERROR,
             f"Social accounts: {len(left):,} left as they are: the task queue did not take their revokes. Revoke "
             "them again (the accounts disconnected already are left alone).")  # fmt: skip

    @staticmethod
    def _revoke_consequences(accounts, may_release: bool) -> list[tuple[str, str]]:
        """What revoke_accounts will do to each of `accounts` (the rows its confirmation page shows), with
        their queued posts, which the revoke cancels, counted in one grouped query (through the posts'
        account and status index, not a join of every post of the accounts)."""
        from django.db.models import Count

        from scheduling.models import ScheduledPost

        queued = dict(
            ScheduledPost.objects.filter(
                social_account_id__in=[account.pk for account in accounts], status=ScheduledPost.Status.QUEUED
            )
            .values_list("social_account_id")
            .annotate(count=Count("pk"))
            .order_by()
        )
        rows = []
        for account in accounts:
            label = f"@{account.identity.handle} on {account.platform}, "
            label += f"project {account.project} of {account.organization}"
            if account.status == SocialAccount.Status.DISCONNECTED:
                rows.append((label, "already disconnected: left as it is"))
            elif account.kind == SocialAccount.Kind.LEASED and not may_release:
                rows.append((label, "leased: left as it is (releasing it needs the lease permission)"))
            else:
                rows.append(
                    (
                        label,
                        f"disconnected, its tokens wiped, {queued.get(account.pk, 0)} queued post(s) canceled"
                        + (", its lease released (no refund)" if account.kind == SocialAccount.Kind.LEASED else ""),
                    )
                )
        return rows


def _disconnected_by(account: SocialAccount) -> str:
    """When and by whom `account` was disconnected, from its status history ("at … by partner (API key …)")."""
    change = account.status_changes.filter(to_status=SocialAccount.Status.DISCONNECTED).order_by("-at", "-id").first()
    if change is None:
        return "a moment ago"
    return f"at {_when(change.at)} ({change.source})"


# The short state as this list shows it (`st_` and 7 characters), as the oauth log lines give it, or as an
# access log cuts it (config/logfilters.py).
SHORT_STATE = re.compile(r"\Ast_[0-9a-f]{7}(?:…|\[redacted\])?\Z")


@admin.register(OAuthSession)
class OAuthSessionAdmin(NothingToSaveMixin, IdSearchMixin, admin.ModelAdmin):
    list_display = (
        "short_state",
        "platform",
        "purpose",
        "status",
        "error_code",
        "platform_message",
        "project",
        "pool_account",
        "return_url",
        "created_at",
        "completed_at",
    )
    # The state is the row's primary key, and a pending one is a bearer secret: no row links (their URLs
    # carry it) and no actions (their checkboxes do). The list shows everything staff need.
    list_display_links = None
    actions = None
    list_filter = ("platform", "purpose", "status", "error_code")
    search_fields = ("project__name", "organization__name")
    # The organization and project ids the oauth log lines name.
    id_search_fields = {"org": ("organization_id",), "prj": ("project_id",)}
    list_select_related = ("project", "pool_account")  # a `pool` session (staff connect) has no project
    exclude = ("state",)
    readonly_fields = (
        "organization",
        "project",
        "api_key",
        "platform",
        "purpose",
        "return_url",
        "usage_note",
        "scopes",
        "social_account",
        "pool_account",
        "staff_user",
        "status",
        "error_code",
        "platform_message",
        "expires_at",
        "created_at",
        "exchange_started_at",
        "completed_at",
    )

    @admin.display(description="state")
    def short_state(self, obj):
        # The full state is a bearer secret until used; staff only need to tell sessions apart.
        return f"{obj.short_state}…"

    # `?state__startswith=…` (or `pk__…`) would read a pending state a character at a time: refused, with every
    # other secret column, by the back-office site's SecretLookupsRefusedMixin (accounts/admin_site.py).

    def get_search_results(self, request, queryset, search_term):
        # The oauth log lines name a session by the short state this list shows: found by that exact prefix.
        # Only a term of exactly that shape: any longer one (the whole state included) answering "1 result" or
        # "0" would tell staff more of a pending state than the list shows, a character at a time.
        term = search_term.strip()
        term = term[:3].lower() + term[3:]  # `St_…` copied from the start of a sentence
        if SHORT_STATE.match(term):
            return queryset.filter(state__startswith=term[: OAuthSession.SHORT_STATE_LENGTH]), False
        return super().get_search_results(request, queryset, search_term)

    def has_add_permission(self, request):
        return False
