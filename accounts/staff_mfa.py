"""MFA is required for staff who can assign accounts, move money or issue (or edit) API keys, for staff who
can hand out permissions (add or change users, groups or permissions), schedule any task (periodic tasks) or
change anyone's authenticators, and for superusers: without an activated authenticator (TOTP) they are sent
to set one up, with a message, from every back-office page; they never reach the admin.
Other staff (read-only ops, support) are not affected.

A middleware rather than a check in each admin view, so that a custom admin URL cannot forget it. The
allauth pages themselves (/staff/…: sign-in, MFA setup, sign-out) stay reachable, and so does the admin's
sign-out."""

from allauth.mfa.models import Authenticator
from django.conf import settings
from django.contrib import messages
from django.shortcuts import redirect
from django.urls import reverse

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
        # A periodic task runs any registered task with the arguments written in it (a lease assignment, a
        # charge run): scheduling one is acting with the rights of every task.
        "django_celery_beat.add_periodictask",
        "django_celery_beat.change_periodictask",
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
# Moving money: every billing permission but the read-only ones (record_money, ledger and wallet changes).
MONEY_APP = "billing"

MESSAGE = (
    "Your back-office account can assign accounts, add or change pool accounts, move money, issue API keys or "
    "grant permissions: set up two-factor authentication (an authenticator app) to continue."
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
            or permission in GRANT_PERMISSIONS
            or (app == MONEY_APP and not codename.startswith("view_"))
        ):
            return True
    return False


def has_mfa(user) -> bool:
    return Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).exists()


class StaffMFARequiredMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if getattr(settings, "LAYERS_STAFF_MFA_REQUIRED", True) and self._guarded(request.path):
            user = getattr(request, "user", None)
            if user is not None and staff_needs_mfa(user) and not has_mfa(user):
                messages.warning(request, MESSAGE)
                return redirect("mfa_activate_totp")
        return self.get_response(request)

    @staticmethod
    def _guarded(path: str) -> bool:
        admin = reverse("admin:index")
        return path.startswith(admin) and path != reverse("admin:logout")
