"""The back-office admin site: Django's own, plus an audit row for every custom admin action.

Django's admin writes a LogEntry for change-form saves, additions and deletions, but an admin action
(revoke accounts, revoke API keys, retry or cancel posts, release leases, disable webhook endpoints, …)
leaves none. Here every action of every registered ModelAdmin is wrapped: once it has run, each selected
object gets a LogEntry ("Admin action: …", by whom, when), shown on its History page and listed by
`LogEntry` queries, like any other admin change. An object the action left alone (refused by its service,
already in the target state, beyond the staff member's permissions) is reported with `skip_in_action` and
gets no row: the history says what was done, not what was selected. An action over a whole list
(`runs_in_batches`: retry or cancel posts, resend deliveries, release leases, revoke accounts or API keys,
off-board organizations) reads its selection a batch at a time and writes the rows of what it did itself, and
its worker those it does later (accounts/admin_bulk.py). Custom views keep their own audit
trails (lease requests: LeaseAction rows; money: the ledger entry's actor).

The irreversible bulk actions (revoke API keys, revoke accounts, release leases, retry posts anyway) ask
first, as Django's own delete does (`ask_first`, `asks_first`): pressing Go answers a page saying what will
happen to which rows, and only its confirming POST runs the services.

Every registered ModelAdmin also refuses list URL lookups on secret columns (SecretLookupsRefusedMixin):
`?key_hash__startswith=…` answering "1 result" or "0" reads the column a character at a time to anyone who
may view the list. And an action posted with a selected id its rows cannot have (SelectionCheckedMixin) does
nothing and says so, where Django's own reading of the selection was a 500."""

import functools

from django.contrib import messages
from django.contrib.admin import AdminSite, ModelAdmin
from django.contrib.admin.apps import AdminConfig
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.views.autocomplete import AutocompleteJsonView
from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured, ValidationError
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.text import capfirst

_SKIPPED = "_layers_action_skipped"
_ASKED = "_layers_action_asked"  # the action answered its confirmation page: it did nothing


def about(obj, text: str, *, label: str | None = None) -> str:
    """An action's message about one row: `Scheduled post sp_…: canceled.`. It starts with what the row is,
    not with its id: the admin capitalises every message, and `Sp_…` pasted into a search box is not the id.
    `label` names the row where its id alone says nothing to ops (`API key Production (3b9a58b45000…)`)."""
    return f"{capfirst(obj._meta.verbose_name)} {obj.pk if label is None else label}: {text}"


def skip_in_action(modeladmin, request, obj, message: str | None, level=messages.WARNING) -> None:
    """Tell staff why the action left `obj` alone (unless `message` is None: the action counts such rows in one
    message of its own), and keep it out of the action's audit rows."""
    getattr(request, _SKIPPED, set()).add(str(obj.pk))
    if message is not None:
        modeladmin.message_user(request, message, level)


# The field the confirmation page posts back with the selection (Django's delete_selected posts the same).
CONFIRMED_FIELD = "post"
# The rows a confirmation page lists one by one; past them it says how many more.
SHOWN_ROWS = 100


def asks_first(action):
    """Marks an admin action that calls `ask_first` before it does anything. Its confirmation page then costs
    what the page shows: the audit (_audited) reads nothing of the selection for it. "Select all 20,000
    accounts" was read in full twice (and counted per row) to list 100 of them on a page that changes nothing.
    """
    action.asks_first = True
    return action


def ask_first(modeladmin, request, queryset, *, describe, carry: dict[str, str] | None = None):
    """For an action that cannot be undone: unless this POST is the confirmation page's, answer that page
    and change nothing; returns None once confirmed (the action then runs). An ops person who ticked the
    wrong row and pressed Go revoked a partner's production key at once.

    `describe(rows)`: (what the row is, what the action will do to it) for each of `rows`, the first
    SHOWN_ROWS selected rows in the queryset's order; the page lists these and counts the rest (only these
    are read). The page posts back the action, the selected ids and `post=yes` to the list's own URL: the
    confirming POST goes through the same checks as any action (the middleware's MFA, the action being
    offered to this user at all, CSRF), and the action re-reads the rows then. `carry`: fields the page posts
    back as well, what the action read with the page (the confirm's POST has them; only staff post it)."""
    if request.POST.get(CONFIRMED_FIELD) == "yes":
        return None
    setattr(request, _ASKED, True)  # nothing was done: no audit row for any of them (see _audited)
    shown = list(queryset[:SHOWN_ROWS])
    count = len(shown) if len(shown) < SHOWN_ROWS else queryset.count()
    # "Select all N" across the list's pages: the page posts that back (the list's filters are in its URL)
    # with one ticked row, not one field per row, which past ~1,000 rows Django refuses
    # (DATA_UPLOAD_MAX_NUMBER_FIELDS). Rows ticked one by one (a page of the list at most) are posted back.
    select_across = request.POST.get("select_across") == "1"
    if select_across or count == len(shown):
        selected = [obj.pk for obj in shown[: 1 if select_across else None]]
    else:
        selected = list(queryset.values_list("pk", flat=True))
    opts = modeladmin.model._meta
    # The changelist has an action menu above and below the list: `index` says which one was used. Read as
    # Django's response_action reads it (which has already run this action): an index that is not a number
    # is the first menu, one past the menus the last value posted. Reading the last value for both answered
    # a 500 for `action=revoke_keys&action=&index=x` (the bottom menu's empty choice is no action).
    try:
        index = int(request.POST.get("index", 0))
    except ValueError:
        index = 0
    chosen = request.POST.getlist("action")
    try:
        action = chosen[index]
    except IndexError:
        action = chosen[-1]
    _, _, description = modeladmin.get_actions(request)[action]
    cancel_url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist", current_app=modeladmin.admin_site.name)
    if request.GET:
        cancel_url += f"?{request.GET.urlencode()}"  # the list as staff left it (filters, search, page)
    request.current_app = modeladmin.admin_site.name
    return TemplateResponse(
        request,
        "admin/confirm_action.html",
        {
            **modeladmin.admin_site.each_context(request),
            "title": f"{capfirst(str(description))}?",
            "subtitle": None,
            "opts": opts,
            "action": action,
            "rows": describe(shown),
            "more_rows": count - len(shown),
            "count": count,
            "select_across": select_across,
            "selected": selected,
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
            "confirmed_field": CONFIRMED_FIELD,
            "carried": sorted((carry or {}).items()),
            "cancel_url": cancel_url,
            "media": modeladmin.media,
        },
    )


def _audited(func, description):
    @functools.wraps(func)
    def run(modeladmin, request, queryset):
        from django.contrib.admin.models import CHANGE, LogEntry

        if getattr(func, "runs_in_batches", False):
            # It audits the rows it did itself, and its worker the rest (accounts/admin_bulk.py): reading the
            # whole selection here held 200,000 webhook deliveries, bodies and all, in one web process.
            return func(modeladmin, request, queryset)
        if getattr(func, "asks_first", False) and request.POST.get(CONFIRMED_FIELD) != "yes":
            try:  # its confirmation page: nothing is done, nothing to audit, nothing to read for it
                response = func(modeladmin, request, queryset)
                if not getattr(request, _ASKED, False):
                    raise ImproperlyConfigured(f"{func.__name__} is marked asks_first but did not ask")
            finally:
                request.__dict__.pop(_ASKED, None)
            return response
        selected = list(queryset)  # the selection as it was when staff acted
        setattr(request, _SKIPPED, set())
        try:
            response = func(modeladmin, request, queryset)
            skipped = getattr(request, _SKIPPED)
            asked = getattr(request, _ASKED, False)
        finally:
            delattr(request, _SKIPPED)
            request.__dict__.pop(_ASKED, None)
        objects = [] if asked else [obj for obj in selected if str(obj.pk) not in skipped]
        if objects:
            LogEntry.objects.log_actions(
                user_id=request.user.pk,
                queryset=objects,
                action_flag=CHANGE,
                change_message=f"Admin action: {description}",
                single_object=len(objects) == 1,
            )
        return response

    return run


class AuditedActionsMixin:
    def get_actions(self, request):
        actions = super().get_actions(request)
        # Django offers an action that declares no `permissions` to anyone who may view the list, and runs it
        # when posted: view-only support staff could revoke API keys or disconnect accounts. Every action
        # here changes something, so one without declared permissions needs the change permission.
        can_change = self.has_change_permission(request)
        return {
            # delete_selected logs each deletion itself, once confirmed
            name: (func if name == "delete_selected" else _audited(func, str(description)), name, description)
            for name, (func, _, description) in actions.items()
            if can_change or hasattr(func, "allowed_permissions")
        }


class SelectionCheckedMixin:
    def response_action(self, request, queryset):
        # Django filters the list by the ids the action posted (`pk__in=selected`) without checking them: an id
        # the list's primary key cannot hold (`abc` or `1.5` for an integer id, `""`) raised ValueError there,
        # a 500 page on every list with actions whose rows have integer ids (leases, users, the beat schedules,
        # …). No list of ours ever posts one: refuse the whole selection, having done nothing, and say why.
        # (A NUL byte in it is refused before, with a 400: config/nulguard.py.)
        pk = self.model._meta.pk
        odd = []
        for value in request.POST.getlist(ACTION_CHECKBOX_NAME):
            try:
                pk.to_python(value)
            except ValidationError:
                odd.append(value)
        if odd:
            shown = ", ".join(repr(value[:40]) for value in odd[:3]) + (", …" if len(odd) > 3 else "")
            self.message_user(
                request,
                f"No action was taken: the selection holds {'an id' if len(odd) == 1 else 'ids'} that no "
                f"{self.model._meta.verbose_name} can have ({shown}). Reload the list and select the rows again.",
                messages.ERROR,
            )
            return None  # the changelist then redirects to itself, where the message is shown
        return super().response_action(request, queryset)


class ViewOnlyInTheAdmin:
    """Shown, never added, changed or deleted in the admin, by anyone: records the services write (the ledger,
    audit trails, status histories) or that code defines. For a model admin or an inline (whose
    has_add_permission also takes the parent object)."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class NothingToSaveMixin:
    """For an admin whose change page shows every field read-only: the page is a read-only one (no Save).
    Offered Save, it answered "… was changed successfully." and wrote a "No fields changed." history row.

    Only the change of a row is refused: the list's actions (resend, disable, revoke, release…) are checked
    against the change permission without a row (`obj=None`), which is kept."""

    def has_change_permission(self, request, obj=None):
        if obj is not None:
            return False
        return super().has_change_permission(request, obj)


# Columns that hold a secret, or something derived from one: the hash of an API key, every encrypted column
# (`…_enc`: platform tokens, webhook and provider signing secrets), staff TOTP secrets and recovery-code seeds
# (allauth's Authenticator.data), a pending OAuth state (OAuthSession's primary key: a bearer secret until
# used) and staff password hashes.
SECRET_COLUMNS = frozenset(
    {
        ("accounts", "apikey", "key_hash"),
        ("mfa", "authenticator", "data"),
        ("accounts", "oauthsession", "state"),
        ("auth", "user", "password"),
    }
)


def is_secret_column(field) -> bool:
    opts = field.model._meta
    return field.name.endswith("_enc") or (opts.app_label, opts.model_name, field.name) in SECRET_COLUMNS


def lookup_reads_a_secret(model, lookup: str) -> bool:
    """Whether the list filter `lookup` (`key_hash__startswith`, `social_account__access_token_enc__gt`,
    `pk__startswith`…) compares a secret column, on `model` or on a model it reaches through relations."""
    for part in lookup.split("__"):
        try:
            field = model._meta.pk if part == "pk" else model._meta.get_field(part)
        except FieldDoesNotExist:
            return False  # a lookup or transform (`startswith`, `lower`): the columns before it were not secret
        if is_secret_column(field):
            return True
        if not field.is_relation or field.related_model is None:
            return False
        if field.concrete and (field.many_to_one or field.one_to_one) and is_secret_column(field.target_field):
            return True  # a foreign key's column holds the value it points at (a pending state, say)
        model = field.related_model
    return False


class SecretLookupsRefusedMixin:
    def lookup_allowed(self, lookup, value, request=None):
        # The list filters on any local field given in the URL (and on related ones its filters name): a
        # secret column there is an oracle. Refused like any other disallowed lookup: a 400 (as Django's
        # own UserAdmin refuses `password__…`).
        if lookup_reads_a_secret(self.model, lookup):
            return False
        return super().lookup_allowed(lookup, value, request)


class BackOfficeAdminSite(AdminSite):
    def register(self, model_or_iterable, admin_class=None, **options):
        from accounts.admin_choices import LabelledChoicesMixin  # models are loaded by now, not at import

        admin_class = admin_class or ModelAdmin
        # Every admin, the project's and the installed apps' (allauth's, django-celery-beat's, …), gets them.
        mixins = tuple(
            m
            for m in (AuditedActionsMixin, SelectionCheckedMixin, SecretLookupsRefusedMixin, LabelledChoicesMixin)
            if not issubclass(admin_class, m)
        )
        if mixins:
            admin_class = type(
                admin_class.__name__,
                (*mixins, admin_class),
                {"__module__": admin_class.__module__, "__doc__": admin_class.__doc__},
            )
        return super().register(model_or_iterable, admin_class, **options)

    def autocomplete_view(self, request):
        return LabelledAutocompleteJsonView.as_view(admin_site=self)(request)


class LabelledAutocompleteJsonView(AutocompleteJsonView):
    """The admin's search-as-you-type choices (`autocomplete_fields`), labelled as its selects are
    (accounts/admin_choices.py): a project found says its organization and id."""

    def get_queryset(self):
        from accounts.admin_choices import labelled_queryset

        return labelled_queryset(super().get_queryset())

    def serialize_result(self, obj, to_field_name):
        from accounts.admin_choices import LABELS

        label = LABELS.get(type(obj), str)
        return {"id": str(getattr(obj, to_field_name)), "text": label(obj)}


class BackOfficeAdminConfig(AdminConfig):
    default_site = "accounts.admin_site.BackOfficeAdminSite"
