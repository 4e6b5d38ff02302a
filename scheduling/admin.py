import json
from datetime import UTC, timedelta

from django import forms
from django.contrib import admin, messages
from django.utils import timezone

from accounts import crypto
from accounts.admin import NotDeletedInTheAdmin
from accounts.admin_bulk import run_in_batches, runs_in_batches
from accounts.admin_search import IdSearchMixin, RelatedIdsSearchMixin
from accounts.admin_site import NothingToSaveMixin, ViewOnlyInTheAdmin, ask_first, asks_first
from accounts.models import Project, SocialAccount
from config.adminpaging import LargeTablePaginator
from config.marks import mark_from_text
from config.netguard import UnresolvedHost, UnsafeURL, assert_public_url
from scheduling import pipeline_status, platform_status, services, tasks
from scheduling.models import (
    ContentContainer,
    Layer,
    LayerTemplate,
    ManagedProvider,
    ScheduledPost,
    ScheduledPostAttempt,
)

# The field "retry anyway"'s confirmation page carries its mark in (config.marks).
ATTEMPTS_MARK_FIELD = "attempts_mark"


class DueWindowFilter(admin.SimpleListFilter):
    """By due time. "Overdue" and "Check overdue" are the posts behind the counts of "Layers now"
    (pipeline_status): queued posts the dispatcher has not taken, publishing posts the resolver has not."""

    title = "due"
    parameter_name = "due"

    def lookups(self, request, model_admin):
        return [
            ("overdue", "Overdue"),
            ("check_overdue", "Publishing, check overdue"),
            ("hour", "Next hour"),
            ("day", "Next 24 hours"),
        ]

    def queryset(self, request, queryset):
        now = timezone.now()
        queued = queryset.filter(status=ScheduledPost.Status.QUEUED)
        if self.value() == "overdue":
            return queryset.filter(pipeline_status.due_late(now))
        if self.value() == "check_overdue":
            return queryset.filter(pipeline_status.publishing_late(now))
        if self.value() == "hour":
            return queued.filter(due_at__gte=now, due_at__lt=now + timedelta(hours=1))
        if self.value() == "day":
            return queued.filter(due_at__gte=now, due_at__lt=now + timedelta(days=1))
        return queryset


class FailureCodeFilter(admin.SimpleListFilter):
    """Failed posts by why they failed, the codes API.md defines: after a platform outage ops find the posts it
    failed (PLATFORM_UNAVAILABLE, scheduled today) and retry them all with the list's action. Fixed choices:
    no DISTINCT over every post ever failed on each visit."""

    title = "failure"
    parameter_name = "failure"
    CODES = (
        "PLATFORM_UNAVAILABLE",
        "RATE_LIMITED",
        "CREDENTIAL_INVALID",
        "ACCOUNT_DISCONNECTED",
        "PLATFORM_REJECTED",
        "MEDIA_INVALID",
    )

    def lookups(self, request, model_admin):
        return [(code, code) for code in self.CODES]

    def queryset(self, request, queryset):
        if self.value() in self.CODES:
            return queryset.filter(status=ScheduledPost.Status.FAILED, error_code=self.value())
        return queryset


class RecentAnswerFilter(admin.SimpleListFilter):
    """The posts behind each count of "Platforms now" (platform_status): those with a call the platform (or the
    provider) refused as unavailable or rate-limited, or published, in the last 15 minutes — as counted there, not
    a run that stopped. The panel's links add its group's posts (mode, account platform). Found through the
    attempts' partial indexes by platform and time, not through every post."""

    title = "platform's answer, last 15 minutes"
    parameter_name = "answered"
    CHOICES = {"unavailable": "Refused: unavailable", "rate_limited": "Refused: rate-limited", "published": "Published"}

    def lookups(self, request, model_admin):
        return list(self.CHOICES.items())

    def queryset(self, request, queryset):
        if self.value() in self.CHOICES:
            return queryset.filter(pk__in=platform_status.recent_attempts(self.value()).values("post_id"))
        return queryset


class ScheduledDayFilter(admin.SimpleListFilter):
    """Posts by the day they are scheduled for, in UTC like every time in the admin. It replaces a date
    hierarchy, whose year links read the distinct years of every post ever scheduled on each visit (posts are
    never purged); each choice here is one bounded range, and the list is no slower with years of posts."""

    title = "scheduled for"
    parameter_name = "scheduled"

    def lookups(self, request, model_admin):
        return [
            ("yesterday", "Yesterday"),
            ("today", "Today"),
            ("tomorrow", "Tomorrow"),
            ("past7", "Past 7 days"),
            ("next7", "Next 7 days"),
            ("this_month", "This month"),
            ("last_month", "Last month"),
        ]

    def queryset(self, request, queryset):
        today = timezone.now().astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        day = timedelta(days=1)
        this_month = today.replace(day=1)
        ranges = {
            "yesterday": (today - day, today),
            "today": (today, today + day),
            "tomorrow": (today + day, today + 2 * day),
            "past7": (today - 6 * day, today + day),
            "next7": (today, today + 7 * day),
            "this_month": (this_month, (this_month + 32 * day).replace(day=1)),
            "last_month": ((this_month - day).replace(day=1), this_month),
        }
        if self.value() not in ranges:
            return queryset
        start, end = ranges[self.value()]
        return queryset.filter(scheduled_for__gte=start, scheduled_for__lt=end)


class AttemptInline(admin.TabularInline):
    """The post's publishing attempts, read-only, as a delivery's page shows its attempts: what support reads
    to answer "my post never went out" (each try, when, what the platform said, its publish id)."""

    model = ScheduledPostAttempt
    extra = 0
    fields = ("number", "platform", "outcome", "started_at", "finished_at", "error_code", "message", "publish_id")
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_view_permission(self, request, obj=None):
        # Part of the post's page: whoever may see the post sees its attempts (no permission of their own).
        return self.admin_site.get_model_admin(ScheduledPost).has_view_permission(request, obj)


@admin.register(ScheduledPost)
class ScheduledPostAdmin(NothingToSaveMixin, IdSearchMixin, RelatedIdsSearchMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "status",
        "mode",
        "social_account",
        "project",
        "scheduled_for",
        "attempts",
        "error_code",
        "published_at",
    )
    # No project filter: it listed every project of every partner by bare name (2,005 links, 262 KB of the
    # page at production volume, "Production" many times over). A `prj_…` search lists one project's posts
    # (and `?project__id__exact=` links still work).
    list_filter = (
        "status",
        FailureCodeFilter,
        RecentAnswerFilter,
        "mode",
        DueWindowFilter,
        ScheduledDayFilter,
        "social_account__platform",
    )
    id_search_fields = {
        "sp": ("id",),
        "cnt": ("container_id",),
        "sa": ("social_account_id",),
        "prj": ("project_id",),
        "org": ("organization_id",),
    }
    search_fields = ("social_account__identity__handle", "project__name", "organization__name")
    search_help_text = "A post, container, account, project or organization id (exact), a handle, or a name."
    # Posts are never purged: no second count of the whole table on every filtered page.
    show_full_result_count = False
    paginator = LargeTablePaginator  # unfiltered: the planner's estimate, not a COUNT(*) of the table
    list_select_related = ("social_account__identity", "project")  # an account's label is its handle
    # Not updated_at: no state change moves it (models.ScheduledPost), it always read the creation time.
    readonly_fields = [f.name for f in ScheduledPost._meta.fields if f.name != "updated_at"]
    inlines = [AttemptInline]
    actions = ["retry_posts", "retry_posts_checked", "cancel_posts"]

    # The "Layers now" links (DueWindowFilter) list the most late first, in the order of the partial index that
    # finds them. Newest first, as the list is otherwise, the planner walked the whole table backwards by id when
    # it expected many of the rows to match, reading millions of published posts to find the few late ones.
    # "Next hour" and "Next 24 hours" are read as a queue: the soonest due first, the order the posts go out.
    DUE_ORDERING = {
        "overdue": ("due_at",),
        "check_overdue": ("next_check_at",),
        "hour": ("due_at",),
        "day": ("due_at",),
    }

    def get_ordering(self, request):
        ordering = self.DUE_ORDERING.get(request.GET.get(DueWindowFilter.parameter_name))
        return ordering or super().get_ordering(request)

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    # After an outage the day's failed posts are tens of thousands: each action does the first rows in the
    # request and hands the rest to a worker, counting what it did by reason (accounts/admin_bulk.py).
    LEFT_ALONE = {
        "POST_NOT_RETRYABLE": "they are not failed (queued again already, publishing, published or canceled).",
        "ACCOUNT_DISCONNECTED": "their account is disconnected: connect it and schedule them anew.",
        "POST_OUTCOME_UNKNOWN": "they may already be on the platform (they reached it and failed "
        "PLATFORM_UNAVAILABLE or CREDENTIAL_INVALID): check the accounts, then retry them anyway if they are "
        "not there.",
        "POST_CHANGED": "an attempt of each was recorded after this retry was asked for (they were being "
        "published, or someone retried them, and they failed again): look at them again before retrying them.",
        "POST_NOT_CANCELABLE": "they are not queued (publishing, published, failed or canceled already).",
    }

    def _retry(self, request, queryset, *, checked_on_platform: bool, description: str, mark=None):
        run_in_batches(
            self,
            request,
            queryset,
            # Posts retried by someone else after this click, or being published at it, and failed since, are not
            # what staff looked at. "Retry anyway" brings the mark read with its confirmation page.
            mark=services.post_attempts_mark() if mark is None else mark,
            service=lambda ids, actor, mark: services.posts_retry(
                post_ids=ids, actor=actor, checked_on_platform=checked_on_platform, attempted_after=mark
            ),
            task=tasks.posts_retry_by_staff,
            task_args=(checked_on_platform,),
            description=description,
            done_text="queued again",
            left_alone=self.LEFT_ALONE,
        )

    @runs_in_batches
    @admin.action(
        description="Retry selected failed posts (due now; skips any that may already be on the platform)",
        permissions=["change"],
    )
    def retry_posts(self, request, queryset):
        description = self.retry_posts.short_description
        self._retry(request, queryset, checked_on_platform=False, description=description)

    # At most once is the contract: a post whose outcome is unknown is sent again only by someone who has
    # looked at the account on the platform. The action's name says so; its use is audited like any other.
    # It asks first, counting the selected posts that may be live: Go on "Select all" of a day's failures sent
    # again at once every post of it that reached the platform, and a second post on a creator's account
    # cannot be undone.
    @runs_in_batches
    @asks_first
    @admin.action(
        description="Retry selected failed posts anyway — I checked they are NOT on the platform",
        permissions=["change"],
    )
    def retry_posts_checked(self, request, queryset):
        # Staff's word is about the posts the confirmation page counted, and they may confirm minutes later: a post
        # failed meanwhile after reaching the platform was not on it, yet the confirm, re-reading the list, sent it
        # again. So the mark is read before the page counts the list, carried by the page, and used by the
        # confirm (a fresh one if the page carried none: one shown by the release before).
        mark = mark_from_text(request.POST.get(ATTEMPTS_MARK_FIELD)) or services.post_attempts_mark()
        page = ask_first(
            self,
            request,
            queryset,
            describe=lambda posts: _retry_anyway_consequences(queryset, posts),
            carry={ATTEMPTS_MARK_FIELD: json.dumps(mark, separators=(",", ":"))},
        )
        if page is not None:
            return page
        description = self.retry_posts_checked.short_description
        self._retry(request, queryset, checked_on_platform=True, description=description, mark=mark)

    @runs_in_batches
    @admin.action(description="Cancel selected queued posts", permissions=["change"])
    def cancel_posts(self, request, queryset):
        run_in_batches(
            self,
            request,
            queryset,
            service=lambda ids, actor, mark: services.posts_cancel(post_ids=ids, actor=actor),
            task=tasks.posts_cancel_by_staff,
            description=self.cancel_posts.short_description,
            done_text="canceled",
            left_alone=self.LEFT_ALONE,
        )


def _retry_anyway_consequences(queryset, posts) -> list[tuple[str, str]]:
    """The confirmation page of "retry anyway": how many of the whole selection may be live (one count), then
    what happens to each of `posts`, the rows it shows."""
    total = queryset.count()
    live = queryset.filter(services.outcome_unknown_q()).count()
    rows = [
        (
            f"All {total:,} selected",
            f"{live:,} of the {total:,} selected reached the platform and may be on it: each of those is posted "
            "again, a second time if it is there. Look at the accounts on the platform first.",
        )
    ]
    for post in posts:
        label = f"{post.pk} on @{post.social_account.identity.handle} ({post.social_account.platform})"
        if post.status != ScheduledPost.Status.FAILED:
            rows.append((label, f"{post.status}, not failed: left as it is"))
        elif post.social_account.status == SocialAccount.Status.DISCONNECTED:
            rows.append((label, "its account is disconnected: left as it is"))
        elif services._outcome_unknown(post):
            reached = f"publish id {post.publish_id}" if post.publish_id else "no publish id recorded"
            rows.append((label, f"queued again, due now; it reached the platform ({post.error_code}, {reached})"))
        else:
            rows.append((label, "queued again, due now (it never reached the platform, or the platform refused it)"))
    return rows


@admin.register(ContentContainer)
class ContentContainerAdmin(
    NotDeletedInTheAdmin, NothingToSaveMixin, IdSearchMixin, RelatedIdsSearchMixin, admin.ModelAdmin
):
    list_display = ("id", "media_type", "project", "created_at")
    list_filter = ("media_type",)
    id_search_fields = {"cnt": ("id",), "prj": ("project_id",), "org": ("organization_id",)}
    search_fields = ("project__name", "organization__name")
    search_help_text = "A container, project or organization id (exact), or a name."
    # One container per content item scheduled, never purged (posts point at them): as the posts list.
    show_full_result_count = False
    paginator = LargeTablePaginator
    list_select_related = ("project",)
    readonly_fields = [f.name for f in ContentContainer._meta.fields]

    def has_add_permission(self, request):
        return False


class ManagedProviderForm(forms.ModelForm):
    # Django's URL field reads an address typed without a scheme (`provider.example/in`, as providers often
    # write theirs) as plain http, which every dispatch refuses outside dev: the page then refused a URL that
    # ops never typed. Providers are https.
    endpoint_url = forms.URLField(
        max_length=ManagedProvider._meta.get_field("endpoint_url").max_length,
        assume_scheme="https",
        help_text="The provider's https URL (written without a scheme, it is taken as https://…).",
    )
    new_secret = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Shared secret the provider verifies our Layers-Signature with. Leave empty to keep the current one.",
    )

    class Meta:
        model = ManagedProvider
        fields = ("project", "name", "endpoint_url", "enabled")

    def clean(self):
        data = super().clean()
        if not self.instance.pk and not data.get("new_secret"):
            self.add_error("new_secret", "A new provider needs a secret.")
        self.warnings = []
        # The check every dispatch makes (https, a public address): a provider saved failing it has every
        # managed post of its project fail PLATFORM_REJECTED. A disabled provider is sent nothing, so it is
        # not checked: ops can always switch off one that fails (one saved before this check, say) without
        # first finding a URL that passes.
        url = data.get("endpoint_url")
        if url and data.get("enabled"):
            try:
                services.check_provider_url(url)
            except UnresolvedHost as exc:
                # Saved, with a warning, not refused: a host that does not resolve now is what dispatch
                # retries (the resolver may be restarting, or the provider publishing its DNS record as it is
                # set up), and refusing would stop ops from saving anything else about the provider (a name,
                # a new secret) while its DNS is out. A typo is still seen on the next page.
                self.warnings.append(
                    f"Saved, but {exc}: managed posts are retried until it resolves, then fail "
                    "PLATFORM_UNAVAILABLE. Check the URL."
                )
            except UnsafeURL as exc:
                self.add_error("endpoint_url", f"Every dispatch would refuse this URL: {exc}.")
        elif url and "endpoint_url" in self.changed_data:
            # Disabled, a new URL is still one an HTTP client can use: Django's URL field takes a port past
            # 65535 or an ftp:// URL, which no dispatch could ever send to once the provider is enabled.
            # The shape only (allow_private: no address is looked up), whatever the settings.
            try:
                assert_public_url(url, allow_private=True)
            except UnsafeURL as exc:
                self.add_error("endpoint_url", f"This URL cannot be used: {exc}.")
        return data

    def save(self, commit=True):
        if self.cleaned_data.get("new_secret"):
            self.instance.secret_enc = crypto.encrypt(self.cleaned_data["new_secret"])
        return super().save(commit)


@admin.register(ManagedProvider)
class ManagedProviderAdmin(admin.ModelAdmin):
    form = ManagedProviderForm
    list_display = ("name", "project", "endpoint_url", "enabled")
    list_select_related = ("project",)

    def save_model(self, request, obj, form, change):
        if change and not form.cleaned_data.get("new_secret"):
            # Only what the form edits: the secret's stored form as this page read it may have been
            # re-encrypted since by rotate_token_keys, and writing it back would leave it under a key about to
            # be removed (every managed post of the project would then fail).
            model_fields = {field.name for field in ManagedProvider._meta.concrete_fields}
            obj.save(update_fields=[name for name in form.fields if name in model_fields])
        else:
            super().save_model(request, obj, form, change)
        for warning in form.warnings:
            messages.warning(request, warning)

    def get_readonly_fields(self, request, obj=None):
        # A provider stays with the project it was set up for: moved to another organization's project, it
        # would receive that organization's managed posts at the endpoint (and secret) set up for the first.
        return ("project",) if obj else ()

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if db_field.name == "project":
            field.widget.attrs["style"] = "width: 40em"  # the whole label, the project's id included
        return field

    def get_autocomplete_fields(self, request):
        # Typed, not picked from every project of every partner (2,000 options, "Production" many times over;
        # each found project says its organization and id). The search is the projects list's, which needs
        # its view permission: staff who may add a provider without it get the select (labelled the same).
        can_search = self.admin_site.get_model_admin(Project).has_view_permission(request)
        return ("project",) if can_search else ()


@admin.register(Layer)
class LayerAdmin(NotDeletedInTheAdmin, NothingToSaveMixin, IdSearchMixin, RelatedIdsSearchMixin, admin.ModelAdmin):
    list_display = ("name", "kind", "social_account", "project", "created_at")
    list_filter = ("kind",)
    id_search_fields = {
        "lay": ("id",),
        "sa": ("social_account_id",),
        "prj": ("project_id",),
        "org": ("organization_id",),
    }
    search_fields = ("social_account__identity__handle", "project__name", "organization__name")
    search_help_text = "A layer, account, project or organization id (exact), a handle (@ or not), or a name."
    # Four per account and one per project, kept while the account is: as the posts list.
    show_full_result_count = False
    paginator = LargeTablePaginator
    list_select_related = ("social_account__identity", "project")  # an account's label is its handle
    readonly_fields = [f.name for f in Layer._meta.fields]

    def has_add_permission(self, request):
        # Layers are provisioned with their account; an add page of read-only fields only crashed on Save.
        return False


@admin.register(LayerTemplate)
class LayerTemplateAdmin(ViewOnlyInTheAdmin, admin.ModelAdmin):
    """Shown, never edited, added or deleted, by anyone. The "Social Account Onboarding" template is what
    every new account's layers are made from, and only its shape is right: one layer per kind that the
    metrics sync and publishing count (services.ACCOUNT_LAYER_KINDS), which is code, not a setting. Edited
    here, free JSON failed every lease assignment and every connect's layers step, or gave new accounts
    fewer layers; renamed, new accounts would carry names their older siblings do not; deleted, it came back
    from the code's defaults on the next provisioning. No procedure asks staff to change it: a change is a
    migration, reviewed and applied everywhere alike. Other templates are used by nothing, so adding one is
    no use either. Its permissions need MFA all the same (accounts/staff_mfa.py)."""

    list_display = ("name", "is_system")
