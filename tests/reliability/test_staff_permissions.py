"""Who holds what in the back-office is not a password-only decision. Staff who can add or change users or
groups (and so hand out permissions) must have MFA activated like those who assign accounts or move money;
and even with MFA, only a superuser can make someone superuser, give users permissions or groups, change a
group's permissions, or touch the account of someone holding more than they do (a superuser, or a
colleague with permissions they lack): changing that account's password would make them that colleague."""

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.cache import cache
from django.test import Client
from django.urls import reverse

from tests.reliability.test_staff import SETUP, admin_urls
from tests.staff import PASSWORD, admin_object_url, signed_in, staff_login, staff_member, with_mfa

pytestmark = pytest.mark.django_db

User = get_user_model()

# Each of these can, through the admin, give someone (themselves included) any permission.
GRANTING = (
    "auth.change_user",
    "auth.add_user",
    "auth.change_group",
    "auth.add_group",
    "auth.change_permission",
    "django_celery_beat.change_periodictask",  # runs any task with any arguments
    "mfa.delete_authenticator",  # turns someone else's MFA off
)


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    cache.clear()  # allauth's login rate limits live in the cache
    yield
    cache.clear()


def permission(name: str) -> Permission:
    app, codename = name.split(".")
    return Permission.objects.get(content_type__app_label=app, codename=codename)


def change_url(user) -> str:
    return reverse("admin:auth_user_change", args=[user.pk])


def user_form(user, **changes) -> dict:
    """The user change form as the admin page posts it, with `changes` on top."""
    form = {
        "username": user.username,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "email": user.email,
        "is_active": "on",
        "is_staff": "on",
        "last_login_0": "",
        "last_login_1": "",
        "date_joined_0": "2026-01-01",
        "date_joined_1": "00:00:00",
        "initial-date_joined_0": "2026-01-01",
        "initial-date_joined_1": "00:00:00",
    }
    form.update(changes)
    return form


def mfa_client(user) -> Client:
    client = Client()
    staff_login(client, with_mfa(user))
    return client


@pytest.fixture
def finance_group():
    group = Group.objects.create(name="finance")
    group.permissions.add(permission("billing.record_money"), permission("billing.view_wallet"))
    return group


def test_staff_who_can_manage_users_or_groups_reach_no_admin_page_before_setting_up_mfa():
    urls = admin_urls()
    reached = []
    for granting in GRANTING:
        user = staff_member(granting.replace(".", "-"), granting, "auth.view_user", "auth.view_group")
        client = signed_in(user)  # password only
        for url in [*urls, change_url(user), reverse("admin:auth_user_password_change", args=[user.pk])]:
            response = client.get(url)
            if response.status_code != 302 or response["Location"] != SETUP:
                reached.append((granting, url, response.status_code))

        # the audit's self-promotion: the post never reaches the admin
        response = client.post(change_url(user), user_form(user, is_superuser="on"))
        assert response["Location"] == SETUP
        user.refresh_from_db()
        assert not user.is_superuser, "a password-only staff member made themselves superuser"
    assert len(urls) > 20
    assert reached == []


def test_with_mfa_a_user_manager_who_is_no_superuser_cannot_grant_superuser_permissions_or_groups(finance_group):
    helpdesk = staff_member("helpdesk", "auth.view_user", "auth.change_user", "auth.add_user")
    colleague = staff_member("colleague", "auth.view_user")
    client = mfa_client(helpdesk)
    money = permission("billing.record_money")

    for user in (helpdesk, colleague):
        # the page shows who holds what, but offers no field to change it
        page = client.get(change_url(user)).content.decode()
        assert 'name="first_name"' in page
        for field in ("is_superuser", "user_permissions", "groups"):
            assert f'name="{field}"' not in page, field

        # a hand-made post saves the rest of the form and ignores the rest
        response = client.post(
            change_url(user),
            user_form(
                user, first_name="Renamed", is_superuser="on", user_permissions=[money.pk], groups=[finance_group.pk]
            ),
        )
        assert response.status_code == 302, response
        user = User.objects.get(pk=user.pk)
        assert user.first_name == "Renamed"
        assert not user.is_superuser
        assert not user.groups.exists()
        assert not user.has_perm("billing.record_money")

    # a user they add starts with nothing either
    client.post(
        reverse("admin:auth_user_add"),
        {
            "username": "newcomer",
            "usable_password": "true",
            "password1": PASSWORD,
            "password2": PASSWORD,
            "is_superuser": "on",
            "user_permissions": [money.pk],
            "groups": [finance_group.pk],
        },
    )
    newcomer = User.objects.get(username="newcomer")
    assert not newcomer.is_superuser and not newcomer.get_all_permissions()


def test_with_mfa_a_user_manager_who_is_no_superuser_cannot_touch_an_account_holding_more_than_they_do(
    finance_group,
):
    helpdesk = staff_member("helpdesk", "auth.view_user", "auth.change_user", "auth.delete_user")
    boss = with_mfa(staff_member("boss", superuser=True))
    treasurer = staff_member("treasurer")
    treasurer.groups.add(finance_group)
    # someone whose permissions were set aside by deactivating them still holds them once reactivated
    dormant = staff_member("dormant", "leasing.change_lease")
    User.objects.filter(pk=dormant.pk).update(is_active=False)
    dormant.refresh_from_db()
    client = mfa_client(helpdesk)

    for user in (boss, treasurer, dormant):
        # they can see the account, not edit it: no form field, no save button
        page = client.get(change_url(user))
        assert page.status_code == 200
        assert 'name="username"' not in page.content.decode() and 'name="_save"' not in page.content.decode()

        # neither by posting the form, nor by setting a password they would then sign in with, nor deleting it
        assert client.post(change_url(user), user_form(user, email="mine@helpdesk.test")).status_code == 403
        password_url = reverse("admin:auth_user_password_change", args=[user.pk])
        assert client.get(password_url).status_code == 403
        new_password = {
            "password1": "helpdesk-owns-you-1",
            "password2": "helpdesk-owns-you-1",
            "usable_password": "true",
        }
        assert client.post(password_url, new_password).status_code == 403
        bulk_delete = {"action": "delete_selected", "_selected_action": [user.pk], "post": "yes"}
        assert client.post(reverse("admin:auth_user_changelist"), bulk_delete).status_code == 403
        assert client.post(reverse("admin:auth_user_delete", args=[user.pk]), {"post": "yes"}).status_code == 403
        user = User.objects.get(pk=user.pk)  # still there
        assert user.email != "mine@helpdesk.test"
        assert user.check_password(PASSWORD)


def test_with_mfa_a_group_manager_who_is_no_superuser_cannot_add_permissions_to_a_group(finance_group):
    lead = staff_member("lead", "auth.view_group", "auth.change_group", "auth.add_group")
    support = Group.objects.create(name="support")
    support.permissions.add(permission("scheduling.view_scheduledpost"))
    lead.groups.add(support)
    client = mfa_client(lead)
    money = permission("billing.record_money")

    page = client.get(reverse("admin:auth_group_change", args=[support.pk])).content.decode()
    assert 'name="name"' in page and 'name="permissions"' not in page
    response = client.post(
        reverse("admin:auth_group_change", args=[support.pk]), {"name": "support desk", "permissions": [money.pk]}
    )
    assert response.status_code == 302, response
    support.refresh_from_db()
    assert support.name == "support desk"
    assert list(support.permissions.values_list("codename", flat=True)) == ["view_scheduledpost"]

    client.post(reverse("admin:auth_group_add"), {"name": "rich", "permissions": [money.pk]})
    assert not Group.objects.get(name="rich").permissions.exists()
    lead = User.objects.get(pk=lead.pk)
    assert not lead.has_perm("billing.record_money")


def test_a_superuser_grants_superuser_permissions_groups_and_group_permissions(finance_group):
    client = mfa_client(staff_member("boss", superuser=True))
    colleague = staff_member("colleague")
    lease = permission("leasing.change_lease")

    response = client.post(
        change_url(colleague),
        user_form(colleague, is_superuser="on", user_permissions=[lease.pk], groups=[finance_group.pk]),
    )
    assert response.status_code == 302, response
    colleague = User.objects.get(pk=colleague.pk)
    assert colleague.is_superuser
    assert list(colleague.user_permissions.all()) == [lease]
    assert list(colleague.groups.all()) == [finance_group]

    response = client.post(
        reverse("admin:auth_group_change", args=[finance_group.pk]), {"name": "finance", "permissions": [lease.pk]}
    )
    assert response.status_code == 302, response
    assert list(finance_group.permissions.all()) == [lease]

    from accounts.auth_admin import StaffGroupAdmin, StaffUserAdmin

    # these are the project's admins, on the back-office site (so their actions are audited like any other)
    assert isinstance(admin.site._registry[User], StaffUserAdmin)
    assert isinstance(admin.site._registry[Group], StaffGroupAdmin)


def test_staff_who_acted_in_the_back_office_are_deactivated_not_deleted_so_their_audit_trail_stays(owner):
    # A leaver's user deleted in the admin took every admin history row they made with it (who revoked a
    # partner's API key...). Deleting is refused for them; deactivating keeps the trail.
    from django.contrib.admin.models import LogEntry

    User = get_user_model()
    leaver = with_mfa(User.objects.create_user("leaver", password=PASSWORD, is_staff=True, is_superuser=True))
    boss = with_mfa(User.objects.create_user("boss", password=PASSWORD, is_staff=True, is_superuser=True))
    bystander = User.objects.create_user("never.acted", password=PASSWORD, is_staff=True)
    acting, deleting = Client(), Client()
    staff_login(acting, leaver)
    staff_login(deleting, boss)
    assert (
        acting.post(
            "/admin/accounts/apikey/", {"action": "revoke_keys", "post": "yes", "_selected_action": [owner.key.pk]}
        ).status_code
        == 302
    )
    trail = LogEntry.objects.filter(object_id=owner.key.pk, user=leaver)
    assert trail.count() == 1

    refused = deleting.post(admin_object_url(User, leaver.pk, "delete"), {"post": "yes"})
    in_bulk = deleting.post(
        "/admin/auth/user/", {"action": "delete_selected", "_selected_action": [leaver.pk], "post": "yes"}
    )
    removed = deleting.post(admin_object_url(User, bystander.pk, "delete"), {"post": "yes"})

    assert refused.status_code == 403 and User.objects.filter(pk=leaver.pk).exists()
    assert in_bulk.status_code in (200, 403) and User.objects.filter(pk=leaver.pk).exists()
    assert trail.count() == 1
    assert removed.status_code == 302 and not User.objects.filter(pk=bystander.pk).exists()


def test_deleting_the_billing_renewal_task_or_its_schedule_needs_mfa_like_changing_them(db):
    # Without the renewals task no lease renewal is charged until beat restarts, and so with its interval
    # deleted (or changed: every 15 minutes becomes every year). Staff who can do either must use MFA.
    from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    every = IntervalSchedule.objects.create(every=900, period=IntervalSchedule.SECONDS)
    task = PeriodicTask.objects.create(
        name="billing-lease-renewals", task="billing.tasks.lease_renewals_tick", interval=every
    )
    for model, pk in ((PeriodicTask, task.pk), (IntervalSchedule, every.pk)):
        name = model._meta.model_name
        support = signed_in(
            staff_member(f"support-{name}", f"django_celery_beat.view_{name}", f"django_celery_beat.delete_{name}")
        )
        url = reverse(f"admin:django_celery_beat_{name}_changelist")
        response = support.post(url, {"action": "delete_selected", "post": "yes", ACTION_CHECKBOX_NAME: [pk]})
        assert response.status_code == 302 and response["Location"] == SETUP, name
    assert PeriodicTask.objects.filter(pk=task.pk, interval=every).exists()
    changer = signed_in(staff_member("scheduler", "django_celery_beat.change_intervalschedule"))
    assert changer.get(reverse("admin:index"))["Location"] == SETUP


@pytest.mark.parametrize("codename", ["add_managedprovider", "change_managedprovider", "delete_managedprovider"])
def test_changing_where_managed_posts_are_sent_needs_mfa(db, owner, codename):
    # A project's managed-distribution provider receives the partner's content (its media and captions) at
    # its endpoint URL: whoever can set that URL can send every managed post of the project anywhere.
    from scheduling.models import ManagedProvider

    provider = ManagedProvider.objects.create(
        project=owner.project, name="Boost", endpoint_url="https://provider.example/in"
    )
    support = signed_in(
        staff_member(f"support-{codename}", "scheduling.view_managedprovider", f"scheduling.{codename}")
    )
    assert support.get(reverse("admin:index"))["Location"] == SETUP
    response = support.post(
        admin_object_url(ManagedProvider, provider.pk),
        {"project": owner.project.pk, "name": "Boost", "endpoint_url": "https://elsewhere.example/in", "enabled": "on"},
    )
    assert response["Location"] == SETUP
    assert ManagedProvider.objects.get(pk=provider.pk).endpoint_url == "https://provider.example/in"
