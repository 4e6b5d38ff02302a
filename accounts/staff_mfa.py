"""MFA is required for staff who can assign accounts, move money, issue (or edit) API keys, change (and so
off-board) organizations or set where a project's managed posts go (its managed-distribution provider), for staff who
can hand out permissions (add or change users, groups or permissions), touch scheduled tasks (any
django-celery-beat permission but the read-only ones), change anyone's authenticators or hold a permission to
add, change or delete layer templates (which the admin grants no editing of), and for superusers.

What is checked is the SESSION, not only the account: the admin answers a session that presented the
account's second factor (allauth records an "mfa" authentication in the session when the TOTP or a recovery
code is entered at sign-in or at its MFA reauthentication page, and this module records one when the session
itself activates TOTP: that session just entered a code from the new authenticator). So:
- staff who need MFA and have no TOTP are sent to set one up, with a message, from every back-office page;
- staff who have TOTP but whose session never presented it (signed in with the password before TOTP was set
  up, in another browser) are sent to allauth's MFA reauthentication page, with a message, and come back to
  the page they asked for once they have entered a code. Signing them out instead would lose the page for no
  gain: without the code they get no further either way.
Other staff (read-only ops, support) are not affected.

Nor can a session that never presented the account's second factor manage it (allauth's /staff/2fa/ pages:
turning TOTP off, showing or regenerating recovery codes): allauth asks only for the password again there,
so such a session could otherwise swap the authenticator for its own, or read a recovery code, and then pass
MFA with it. It is sent to the MFA reauthentication page first, like the admin.

A middleware rather than a check in each admin view, so that a custom admin URL cannot forget it. The
allauth sign-in pages themselves (/staff/…: sign-in, MFA setup and reauthentication, sign-out) stay
reachable, and so does the admin's sign-out."""

import os
from urllib.parse import urlencode

from allauth.account.authentication import get_authentication_records
from allauth.account.internal.flows.login import record_authentication
from allauth.mfa.models import Authenticator
from django.conf import settings
from django.contrib import messages
from django.http import HttpResponseRedirect
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.cache import add_never_cache_headers
from django.utils.functional import cached_property

# Assigning warmed accounts (lease request fulfilment) and releasing or creating leases. Adding or changing a
# pool account sets the price new leases are billed, and changing one also connects it on TikTok (its tokens,
# and a leased account's: the partner's binding).
ASSIGN_PERMISSIONS = frozenset(
    {
        "leasing.add_poolaccount",
        "leasing.change_poolaccount",
        "leasing.change_leaserequest",
        "leasing.delete_leaserequest",
        "leasing.add_lease",
        "leasing.change_lease",
        "leasing.delete_lease",
    }
)
# Handing out permissions: whoever can add or change a user or a group can give anyone, themselves included,
# any of the permissions above, so a password alone must not be enough for them either (the user and group
# admins also keep permissions, groups and superuser status for superusers: accounts/auth_admin.py). A
# permission's string is its content type's app label and its codename: changing either rewrites what
# holders of that permission may do.
GRANT_PERMISSIONS = frozenset(
    {
        "auth.add_user",
        "auth.change_user",
        "auth.add_group",
        "auth.change_group",
        "auth.add_permission",
        "auth.change_permission",
        "contenttypes.add_contenttype",
        "contenttypes.change_contenttype",
        # Another staff member's authenticators: deleting one, or moving one's own onto them, turns MFA off
        # for that account.
        "mfa.add_authenticator",
        "mfa.change_authenticator",
        "mfa.delete_authenticator",
    }
)
# Issuing API keys: a key acts for its whole organization (every project, account and post, webhooks,
# wallet reads), so whoever can add one, for any organization, holds every partner's API. Changing one edits
# its return-domain allowlist, where a connect may send the partner's users (and their OAuth results).
KEY_PERMISSIONS = frozenset({"accounts.add_apikey", "accounts.change_apikey"})
# Off-boarding a partner (the organization admin's action, which needs the change permission): it revokes every
# key of the organization, disconnects its accounts and releases its leases at once, past undoing.
OFFBOARD_PERMISSIONS = frozenset({"accounts.change_organization"})
# Where a project's managed posts go: the provider receives the partner's content at its endpoint URL, so
# whoever can set (or replace) a provider can send every managed post of the project anywhere.
DISTRIBUTION_PERMISSIONS = frozenset(
    {"scheduling.add_managedprovider", "scheduling.change_managedprovider", "scheduling.delete_managedprovider"}
)
# What every new account is provisioned with: the onboarding layer template. The admin edits no template
# (scheduling/admin.py), so these permissions do nothing there today; they are here so that a permission
# named for changing every partner's new accounts is never held with a password alone, should anything come
# to honour it.
TEMPLATE_PERMISSIONS = frozenset(
    {"scheduling.add_layertemplate", "scheduling.change_layertemplate", "scheduling.delete_layertemplate"}
)
# Moving money: every billing permission but the read-only ones (record_money, ledger and wallet changes).
# Scheduled tasks: every django-celery-beat permission but the read-only ones. A periodic task runs any
# registered task with the arguments written in it (a lease assignment, a charge run), so adding or changing
# one is acting with the rights of every task; deleting or disabling one (the lease renewals) stops billing,
# and so does editing or deleting the interval, crontab, solar or clocked schedule it runs on.
MFA_APPS = frozenset({"billing", "django_celery_beat"})

MESSAGE = (
    "Your back-office account can assign accounts, add or change pool accounts, move money, issue API keys, "
    "off-board organizations, "
    "set managed-distribution providers, grant permissions, change scheduled tasks or change authenticators: "
    "set up two-factor authentication (an authenticator app) to continue."
)
CODE_MESSAGE = (
    "This session was signed in without your authenticator code: enter a code from your authenticator app "
    "(or a recovery code) to continue."
)


def staff_needs_mfa(user) -> bool:
    """Whether `user` must have MFA activated to use the back-office."""
    if not (user.is_authenticated and user.is_active and user.is_staff):
        return False
    if user.is_superuser:
        return True
    for permission in user.get_all_permissions():
        app, _, codename = permission.partition(".")
        if (
            permission in ASSIGN_PERMISSIONS
            or permission in KEY_PERMISSIONS
            or permission in OFFBOARD_PERMISSIONS
            or permission in DISTRIBUTION_PERMISSIONS
            or permission in TEMPLATE_PERMISSIONS
            or permission in GRANT_PERMISSIONS
            or (app in MFA_APPS and not codename.startswith("view_"))
        ):
            return True
    return False


def has_mfa(user) -> bool:
    return Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).exists()


def session_passed_mfa(request, user) -> bool:
    """Whether this session presented `user`'s second factor: at sign-in, at allauth's MFA reauthentication,
    or by activating TOTP (record_mfa_on_activation). allauth's records are the session's own, and are
    only read for the user they were made for."""
    return any(record.get("method") == "mfa" for record in get_authentication_records(request, user))


def record_mfa_on_activation(sender, request=None, user=None, authenticator=None, **kwargs):
    """allauth's `authenticator_added` receiver: the session that activates TOTP has just entered a code from
    the new authenticator (after its password again), so it counts as having passed MFA; without this, the
    staff member who set it up would be asked for a code straight away. Only for the session's own user:
    nothing else adds an authenticator with a request, but a record made for another user would not be
    read anyway (session_passed_mfa)."""
    if (
        request is not None
        and user is not None
        and authenticator is not None
        and authenticator.type == Authenticator.Type.TOTP
        and getattr(request, "user", None) is not None
        and request.user.pk == user.pk
    ):
        record_authentication(request, user, "mfa", id=authenticator.pk, type=authenticator.type, activated=True)


class StaffMFARequiredMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        # The path first: the user (a session and a database read) only for the pages concerned.
        if self._admin(request.path):
            user = getattr(request, "user", None)
            if getattr(settings, "LAYERS_STAFF_MFA_REQUIRED", True) and user is not None and staff_needs_mfa(user):
                if not has_mfa(user):
                    messages.warning(request, MESSAGE)
                    return redirect("mfa_activate_totp")
                if not session_passed_mfa(request, user):
                    return self._ask_for_a_code(request)
        elif self._mfa_management(request.path):
            user = getattr(request, "user", None)
            if user is not None and user.is_authenticated and has_mfa(user) and not session_passed_mfa(request, user):
                return self._ask_for_a_code(request)
        response = self.get_response(request)
        if request.path.startswith(self._paths["staff"]):
            # allauth's pages, mounted as they are: the TOTP setup page prints the authenticator's secret, and
            # answered with no Cache-Control at all, for a shared browser's or a proxy's cache to keep (the
            # admin's pages are never cached; these now neither).
            add_never_cache_headers(response)
        return response

    @staticmethod
    def _ask_for_a_code(request):
        messages.warning(request, CODE_MESSAGE)
        # Back to the page asked for (a GET: a form posted from a session without MFA is not replayed).
        query = urlencode({"next": request.get_full_path() if request.method == "GET" else request.path})
        return HttpResponseRedirect(f"{reverse('mfa_reauthenticate')}?{query}")

    @cached_property
    def _paths(self) -> dict:
        # Every request passes here, partner API calls included: the paths are reversed once per process, not
        # on each request (the URLconf does not change while the process runs).
        return {
            "admin": reverse("admin:index"),
            "admin_logout": reverse("admin:logout"),
            "mfa": reverse("mfa_index"),
            "mfa_code_pages": (reverse("mfa_authenticate"), reverse("mfa_reauthenticate")),
            # Where allauth's pages are mounted (config/urls.py): what its sign-in and MFA pages share.
            "staff": os.path.commonprefix([reverse("account_login"), reverse("mfa_index")]),
        }

    def _admin(self, path: str) -> bool:
        return path.startswith(self._paths["admin"]) and path != self._paths["admin_logout"]

    def _mfa_management(self, path: str) -> bool:
        """allauth's MFA pages but the two that present a code (sign-in's MFA step, reauthentication)."""
        return path.startswith(self._paths["mfa"]) and path not in self._paths["mfa_code_pages"]
