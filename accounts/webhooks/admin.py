"""Ops screens for webhooks. Secrets are never shown (the encrypted columns are not even listed); every
action calls the same services as the API and reports per row (counted by reason once there are many:
accounts/admin_bulk.py)."""

from django.contrib import admin, messages
from django.utils import timezone

from accounts.admin_bulk import run_in_batches, runs_in_batches
from accounts.admin_search import IdSearchMixin, RelatedIdsSearchMixin
from accounts.admin_site import NothingToSaveMixin, about, skip_in_action
from accounts.services import EVENT_TYPES
from accounts.webhooks import services, tasks
from accounts.webhooks.models import WebhookDelivery, WebhookDeliveryAttempt, WebhookEndpoint
from config.adminpaging import LargeTablePaginator
from config.api.errors import ApiError


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(NothingToSaveMixin, admin.ModelAdmin):
    list_display = ("url", "id", "organization", "event_types", "status", "disabled_reason", "created_at", "deleted_at")
    list_filter = ("status", "disabled_reason", ("deleted_at", admin.EmptyFieldListFilter))
    search_fields = ("id", "url", "organization__name")
    list_select_related = ("organization",)
    fields = (
        "id",
        "organization",
        "url",
        "events",
        "status",
        "disabled_reason",
        "disabled_at",
        "enabled_at",
        "secret_rotated_at",
        "previous_secret_expires_at",
        "created_at",
        "deleted_at",
    )
    readonly_fields = fields
    actions = ["disable_endpoints", "enable_endpoints"]

    @admin.display(description="events")
    def event_types(self, obj):
        return ", ".join(obj.events)

    def has_add_permission(self, request):
        return False  # partners create endpoints through the API, which shows them the secret once

    def has_delete_permission(self, request, obj=None):
        return False  # the deliveries' history hangs off the row: disable instead

    @admin.action(description="Disable selected endpoints (stops their deliveries)", permissions=["change"])
    def disable_endpoints(self, request, queryset):
        for endpoint in queryset:
            if endpoint.status == WebhookEndpoint.Status.DISABLED:
                skip_in_action(self, request, endpoint, about(endpoint, "already disabled"))
                continue
            services.endpoint_disable(
                endpoint_id=endpoint.pk, reason=WebhookEndpoint.DisabledReason.STAFF, actor=request.user
            )
            self.message_user(request, about(endpoint, "disabled"), messages.SUCCESS)

    @admin.action(description="Enable selected endpoints", permissions=["change"])
    def enable_endpoints(self, request, queryset):
        for endpoint in queryset:
            if endpoint.status == WebhookEndpoint.Status.ACTIVE:
                skip_in_action(self, request, endpoint, about(endpoint, "already enabled"))
                continue
            try:
                services.endpoint_enable(endpoint_id=endpoint.pk, actor=request.user)
            except ApiError as exc:
                skip_in_action(self, request, endpoint, about(endpoint, exc.message), messages.ERROR)
            else:
                self.message_user(request, about(endpoint, "enabled"), messages.SUCCESS)


class AttemptInline(admin.TabularInline):
    model = WebhookDeliveryAttempt
    extra = 0
    fields = ("number", "started_at", "finished_at", "status_code", "error")
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


class EventTypeFilter(admin.SimpleListFilter):
    """The event types are a fixed set: listing them costs no query (a filter on `event__type` would read
    the distinct types of every delivery on each page load)."""

    title = "event type"
    parameter_name = "event_type"

    def lookups(self, request, model_admin):
        return [(type_, type_) for type_ in sorted(EVENT_TYPES)]

    def queryset(self, request, queryset):
        return queryset.filter(event__type=self.value()) if self.value() else queryset


class EndpointFilter(admin.SimpleListFilter):
    """The endpoints of the organization picked in the "organization" filter (a handful). Listing the
    endpoints that have deliveries read the distinct endpoint of every delivery on each page load; every
    endpoint of every partner would be a long list. Without an organization only the endpoint being filtered
    on is shown; ops can also search a `we_…` id."""

    title = "endpoint"
    parameter_name = "endpoint__id__exact"  # what the former related filter used: links keep working
    organization_parameter = "endpoint__organization__id__exact"

    def lookups(self, request, model_admin):
        organization_id = request.GET.get(self.organization_parameter)
        endpoints = WebhookEndpoint.objects.none()
        if organization_id:
            endpoints = WebhookEndpoint.objects.filter(organization_id=organization_id)
        if self.value():
            endpoints = endpoints | WebhookEndpoint.objects.filter(pk=self.value())
        return [(e.pk, f"{e.url} ({e.pk})") for e in endpoints.order_by("created_at", "pk")]

    def queryset(self, request, queryset):
        return queryset.filter(endpoint_id=self.value()) if self.value() else queryset


class LateFilter(admin.SimpleListFilter):
    """The deliveries behind the webhooks count of "Layers now" (scheduling/pipeline_status.py): due (or whose
    relay died mid-send) more than a minute ago, to a live endpoint whose receiver does not hold them back."""

    title = "late"
    parameter_name = "late"

    def lookups(self, request, model_admin):
        return [("yes", "Late: not sent when due")]

    def queryset(self, request, queryset):
        if self.value() != "yes":
            return queryset
        now = timezone.now()
        late = services.deliveries_late_pending(now=now) | services.deliveries_late_sending(now=now)
        return queryset.filter(late, services.deliveries_sendable(held=services.receivers_holding_back(now=now)))


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(NothingToSaveMixin, IdSearchMixin, RelatedIdsSearchMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "event_type",
        "endpoint",
        "status",
        "attempts",
        "last_status_code",
        "short_error",
        "next_attempt_at",
        "last_attempt_at",
        "created_at",
    )
    # Choices from the known event types, the organizations and one organization's endpoints: none of them
    # reads the deliveries (one per event and endpoint, for every partner).
    list_filter = ("status", LateFilter, EventTypeFilter, "endpoint__organization", EndpointFilter)
    id_search_fields = {
        "whd": ("id",),
        "evt": ("event_id",),
        "we": ("endpoint_id",),
        "org": ("endpoint__organization_id",),
    }
    search_fields = ("endpoint__url", "endpoint__organization__name")
    search_help_text = "A delivery, event, endpoint or organization id (exact), an endpoint URL or an organization."
    show_full_result_count = False  # deliveries grow with every event: no second count of the table
    paginator = LargeTablePaginator  # unfiltered: the planner's estimate, not a COUNT(*) of the table
    list_select_related = ("endpoint", "event")
    fields = (
        "id",
        "event",
        "endpoint",
        "status",
        "attempts",
        "last_status_code",
        "last_error",
        "first_attempt_at",
        "last_attempt_at",
        "next_attempt_at",
        "lease_until",
        "give_up_at",
        "delivered_at",
        "failed_at",
        "created_at",
        "body",
    )
    readonly_fields = fields
    inlines = [AttemptInline]
    actions = ["resend"]

    @admin.display(description="event", ordering="event__type")
    def event_type(self, obj):
        return obj.event.type

    @admin.display(description="last error")
    def short_error(self, obj):
        return obj.last_error[:80]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @runs_in_batches
    @admin.action(
        description="Resend selected undelivered deliveries now (fresh 3-day retry window; delivered ones are refused)",
        permissions=["change"],
    )
    def resend(self, request, queryset):
        # A partner's receiver down for a day is 200,000 deliveries to resend: the first rows in the request,
        # the rest by a worker, the sends paced by the relay (accounts/admin_bulk.py, deliveries_resend).
        run_in_batches(
            self,
            request,
            queryset,
            # A delivery attempted after this click is not the one staff looked at (see deliveries_resend).
            mark=services.delivery_attempts_mark(),
            service=lambda ids, actor, mark: services.deliveries_resend(
                delivery_ids=ids, actor=actor, attempted_after=mark
            ),
            task=tasks.deliveries_resend_by_staff,
            description=self.resend.short_description,
            done_text="queued for sending",
            left_alone={
                "DELIVERY_ALREADY_DELIVERED": "they were delivered already (the receiver answered 2xx); the partner "
                "can replay their events from GET /v1/events.",
                "ENDPOINT_NOT_ACTIVE": "their endpoint is disabled or deleted; enable it first.",
                "DELIVERY_IN_FLIGHT": "an attempt of each is in flight; try again in a few minutes.",
                "DELIVERY_ALREADY_DUE": "they are waiting to be sent already (resent a moment ago, or never "
                "attempted yet).",
                "DELIVERY_CHANGED": "each was attempted again after this resend was asked for: look at them again.",
                "DELIVERY_GONE": "they no longer exist: their events passed the retention.",
            },
            level=messages.ERROR,
        )
