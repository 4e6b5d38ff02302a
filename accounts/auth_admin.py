"""The user and group admins: Django's own, except that who holds what is for superusers to decide.

With Django's, staff holding only "change user" could tick superuser status on their own account, or give
themselves (or a group they belong to) the lease and billing permissions, then set up their own TOTP and
hold everything the MFA requirement (accounts/staff_mfa.py) was meant to protect. Here, for staff who are
not superusers:
- superuser status, a user's permissions and their groups are read-only, and so are a group's permissions;
- the account of anyone holding something they do not (a superuser, a colleague with permissions they
  lack, even one deactivated for now) can be viewed, not edited, given a password or deleted: setting
  its password would make them that colleague.
Staff who acted in the back-office are never deleted, only deactivated: their audit trail stays.
Superusers (MFA required) edit all of it. Registered on the back-office site like every other admin, so
their actions are audited too (accounts/admin_site.py).

allauth's authenticator admin is replaced too: it showed each authenticator's `data` (the encrypted TOTP
secret, the recovery-code seed and used codes) to anyone who may view the list. Here an authenticator shows
whose it is, its type and when it was made and last used, and nothing else; it can be deleted (a staff
member who lost their phone sets up a new one at their next sign-in), which needs MFA
(accounts/staff_mfa.py), but not added or edited: a secret typed into a form, or an authenticator moved to
another user, is never what a colleague needs. Staff who are not superusers cannot delete the authenticator
of anyone holding something they do not: that account's password alone would then sign in and set up a new
TOTP."""

# allauth's admin module registers its AuthenticatorAdmin when imported; imported here so that it has been
# before it is replaced, whatever the order the apps' admin modules are loaded in.
from allauth.mfa import admin as _allauth_mfa_admin  # noqa: F401
from allauth.mfa.base.internal.flows import delete_and_cleanup
from allauth.mfa.models import Authenticator
from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, Permission, User
from django.db.models import Q

# Django's own registrations (made when django.contrib.auth.admin was imported, above) are replaced.
admin.site.unregister(User)
admin.site.unregister(Group)
admin.site.unregister(Authenticator)

GRANTING_FIELDS = ("is_superuser", "groups", "user_permissions")


def held_permissions(user) -> set[int]:
    """The permissions `user` holds, directly or through groups, whether or not the account is active now:
    reactivating it is one edit away, so an inactive account holds its permissions as much as an active one
    (get_all_permissions() says an inactive user holds none)."""
    return set(Permission.objects.filter(Q(user=user) | Q(group__user=user)).values_list("pk", flat=True))


def outranks(user, staff) -> bool:
    """Whether `user` holds something `staff` does not."""
    if staff.is_superuser:
        return False
    return user.is_superuser or not held_permissions(user) <= held_permissions(staff)


@admin.register(User)
class StaffUserAdmin(UserAdmin):
    def get_readonly_fields(self, request, obj=None):
        readonly = tuple(super().get_readonly_fields(request, obj))
        return readonly if request.user.is_superuser else readonly + GRANTING_FIELDS

    # Django's password-change view asks has_change_permission(request, user) too, so it is covered.
    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and not (obj is not None and outranks(obj, request.user))

    # "Delete selected users" asks it of each selected user too (get_deleted_objects).
    def has_delete_permission(self, request, obj=None):
        return (
            super().has_delete_permission(request, obj)
            and not (obj is not None and outranks(obj, request.user))
            and not (obj is not None and acted_in_back_office(obj))
        )


def acted_in_back_office(user) -> bool:
    """Whether `user` left an audit trail: admin history rows (every change and action, accounts/admin_site.py)
    or lease history. Deleting the user would delete the first (Django's LogEntry cascades) and blank the
    second, so who revoked a key or released a lease would be lost: such staff are deactivated instead."""
    from django.contrib.admin.models import LogEntry

    from leasing.models import LeaseAction

    return LogEntry.objects.filter(user=user).exists() or LeaseAction.objects.filter(actor=user).exists()


@admin.register(Group)
class StaffGroupAdmin(GroupAdmin):
    def get_readonly_fields(self, request, obj=None):
        readonly = tuple(super().get_readonly_fields(request, obj))
        return readonly if request.user.is_superuser else (*readonly, "permissions")


@admin.register(Authenticator)
class StaffAuthenticatorAdmin(admin.ModelAdmin):
    list_display = ("user", "type", "created_at", "last_used_at")
    list_filter = ("type", "created_at", "last_used_at")
    search_fields = ("user__username",)
    list_select_related = ("user",)
    fields = ("user", "type", "created_at", "last_used_at")  # never `data`
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    # Deleting the authenticator of someone holding something the deleter does not (a superuser, a colleague
    # with permissions they lack) would let that account's password alone sign in and set up a new TOTP: the
    # permissions that need MFA, taken with a password, as setting that colleague's password would (the user
    # admin above). "Delete selected" asks it of each selected authenticator too (get_deleted_objects).
    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and not (
            obj is not None and outranks(obj.user, request.user)
        )

    # A lost phone's authenticator deleted here takes the user's recovery codes with it, as turning TOTP off
    # on allauth's own pages does: left behind, the codes (printed, or on that phone) would still pass MFA,
    # and a new authenticator set up later keeps the codes it finds.
    def delete_model(self, request, obj):
        delete_and_cleanup(request, obj)

    def delete_queryset(self, request, queryset):
        for authenticator in queryset:
            delete_and_cleanup(request, authenticator)
