from django import forms
from django.contrib import admin, messages
from django.template.response import TemplateResponse

from accounts import services
from accounts.models import ApiKey, Event, Organization, Project


class ProjectInline(admin.TabularInline):
    model = Project
    extra = 0
    fields = ("id", "name", "created_at")
    readonly_fields = ("id", "created_at")


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ("name", "id", "created_at")
    search_fields = ("name", "id")
    readonly_fields = ("id", "created_at")
    inlines = [ProjectInline]


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ("name", "id", "organization", "created_at")
    list_filter = ("organization",)
    search_fields = ("name", "id", "organization__name")
    readonly_fields = ("id", "created_at")
    list_select_related = ("organization",)


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
        help_text="One host per line, exactly as the returnUrl host (add :port for a non-default port). "
        "No wildcards: app.acme.com does not allow www.app.acme.com.",
    )

    class Meta:
        model = ApiKey
        fields = ("organization", "name", "allowed_return_domains")

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

    def get_readonly_fields(self, request, obj=None):
        # The organization of an existing key never changes: a key moved to another org would leak it.
        return (*self.readonly_fields, "organization") if obj else self.readonly_fields

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
            request._layers_new_key = services.api_key_assign_secret(key=obj)
        super().save_model(request, obj, form, change)

    def response_add(self, request, obj, post_url_continue=None):
        # The raw key is rendered once, in this response, and stored nowhere (not even in a message).
        return TemplateResponse(
            request,
            "admin/accounts/apikey/created.html",
            {
                **self.admin_site.each_context(request),
                "key": obj,
                "raw_key": request._layers_new_key,
                "title": "API key created",
                "opts": self.model._meta,
            },
        )

    @admin.action(description="Revoke selected keys")
    def revoke_keys(self, request, queryset):
        for key in queryset:
            services.api_key_revoke(key=key)
        self.message_user(request, f"Revoked {queryset.count()} key(s).", messages.SUCCESS)


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ("id", "type", "organization", "created_at")
    list_filter = ("type",)
    search_fields = ("id", "organization__name")
    readonly_fields = ("id", "organization", "type", "data", "created_at")
    list_select_related = ("organization",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
