"""The back office's irreversible bulk actions (revoke API keys, revoke accounts, release leases) ask first,
as Django's own delete does: the action's first POST from the list changes nothing and answers a page that
says what will happen to which rows; only the confirming POST of that page runs the services. An ops person
who ticked the wrong row and pressed Go cut a partner's production key off at once, and the message did not
even say which key."""

import re
from datetime import timedelta
from html import unescape

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.models import LogEntry
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import ApiKey, SocialAccount
from billing.models import LedgerEntry
from leasing.models import Lease
from scheduling.models import ScheduledPost
from tests.billing.factories import lease_assign
from tests.factories import make_account
from tests.scheduling.publish_helpers import later, schedule_now
from tests.staff import signed_in_staff, staff_login, superuser

pytestmark = pytest.mark.django_db


def changelist(model) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")


def choose(client, model, action: str, pks):
    """Tick `pks` on the list and press Go with `action`, as the list's form posts it."""
    return client.post(changelist(model), {"action": action, ACTION_CHECKBOX_NAME: [str(pk) for pk in pks], "index": 0})


def confirm(client, model, page):
    """Press the confirmation page's button: post back the page's own form fields."""
    html = page.content.decode()
    form = re.search(r'<form method="post"[^>]*>(.*?)</form>', html, re.S).group(1)
    data: dict[str, list[str]] = {}
    for tag in re.findall(r"<input [^>]*>", form):
        name = re.search(r'name="([^"]*)"', tag)
        value = re.search(r'value="([^"]*)"', tag)
        if name and 'type="submit"' not in tag:
            data.setdefault(name.group(1), []).append(unescape(value.group(1)) if value else "")
    return client.post(changelist(model), data, follow=True)


def text_of(page) -> str:
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", page.content.decode())))


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


@pytest.fixture
def ops(db):
    return staff_login(Client(), superuser())


def test_revoking_keys_asks_first_naming_each_key_and_its_organization(ops, owner, sibling):
    owner.key.name = "Production"
    owner.key.save()

    page = choose(ops, ApiKey, "revoke_keys", [owner.key.pk])

    assert page.status_code == 200
    owner.key.refresh_from_db()
    assert owner.key.revoked_at is None  # nothing happened yet
    assert owner.client.get("/v1/projects").status_code == 200
    assert not LogEntry.objects.exists()  # and the history does not say it did
    shown = text_of(page)
    assert f"Production ({owner.key.prefix}…) of Acme" in shown
    assert sibling.key.prefix not in shown  # only the selected rows
    assert f'href="{changelist(ApiKey)}"' in page.content.decode()  # cancel: back to the list

    done = confirm(ops, ApiKey, page)

    owner.key.refresh_from_db()
    assert owner.key.revoked_at is not None
    assert owner.client.get("/v1/projects").status_code == 401
    assert f"API key Production ({owner.key.prefix}…): revoked." in messages_of(done)
    sibling.key.refresh_from_db()
    assert sibling.key.revoked_at is None
    assert LogEntry.objects.filter(object_id=owner.key.pk).count() == 1


def test_select_all_across_a_long_list_can_be_confirmed(ops, owner):
    # "Select all 1,001 API keys" then Go: the page used to post back one field per row, and past ~1,000
    # fields Django refuses the POST (400): nothing could be revoked in one go. It posts back the selection
    # ("all of the list") instead, and lists the first rows with a count of the rest.
    from accounts import services

    for i in range(1000):
        services.api_key_create(organization=owner.org, return_domains=[], name=f"batch {i}")
    page = ops.post(
        changelist(ApiKey),
        {"action": "revoke_keys", ACTION_CHECKBOX_NAME: [owner.key.pk], "index": 0, "select_across": "1"},
    )
    assert page.status_code == 200
    assert "the 1001 selected API keys" in text_of(page) and "and 901 more" in text_of(page)
    assert not ApiKey.objects.filter(revoked_at__isnull=False).exists()

    done = confirm(ops, ApiKey, page)

    assert done.status_code == 200
    assert not ApiKey.objects.filter(revoked_at__isnull=True).exists()


def test_a_go_posted_with_an_index_past_the_menus_still_asks_first(ops, owner):
    # The list has an action menu above and below it; `index` says which was used. A form posting an index
    # past them (a hand-made or stale form) is read as Django reads it, the one action posted, not a 500.
    response = ops.post(changelist(ApiKey), {"action": "revoke_keys", ACTION_CHECKBOX_NAME: [owner.key.pk], "index": 5})

    assert response.status_code == 200 and "revoke" in text_of(response).lower()
    owner.key.refresh_from_db()
    assert owner.key.revoked_at is None


@pytest.mark.parametrize("index", ["x", "", "1.5"])
def test_a_go_posted_with_an_index_that_is_no_number_reads_the_first_menu_as_django_does(ops, owner, index):
    # Django reads an `index` that is not a number as 0, the menu above the list; the confirmation page read
    # the last value posted instead (here the bottom menu's empty choice) and answered a 500 (KeyError).
    response = ops.post(
        changelist(ApiKey), {"action": ["revoke_keys", ""], "index": index, ACTION_CHECKBOX_NAME: [owner.key.pk]}
    )

    assert response.status_code == 200 and "revoke" in text_of(response).lower()
    owner.key.refresh_from_db()
    assert owner.key.revoked_at is None


def test_a_go_posted_with_an_index_past_two_menus_reads_the_last_action_as_django_does(ops, owner):
    response = ops.post(
        changelist(ApiKey), {"action": ["", "revoke_keys"], "index": 7, ACTION_CHECKBOX_NAME: [owner.key.pk]}
    )

    assert response.status_code == 200 and "revoke" in text_of(response).lower()
    owner.key.refresh_from_db()
    assert owner.key.revoked_at is None


def test_revoking_accounts_asks_first_saying_how_many_queued_posts_go(ops, owner):
    account = make_account(owner, handle="acme.brand")
    schedule_now(owner, account.pk, when=later(hours=2))
    schedule_now(owner, account.pk, when=later(hours=3))

    page = choose(ops, SocialAccount, "revoke_accounts", [account.pk])

    assert page.status_code == 200
    account.refresh_from_db()
    assert account.status == "connected"
    assert ScheduledPost.objects.filter(social_account=account, status="queued").count() == 2
    shown = text_of(page)
    assert f"@acme.brand on tiktok, project {account.project.name} of Acme" in shown
    assert "2 queued post(s) canceled" in shown

    done = confirm(ops, SocialAccount, page)

    account.refresh_from_db()
    assert account.status == "disconnected"
    assert not ScheduledPost.objects.filter(social_account=account, status="queued").exists()
    assert f"Social account {account.pk}: disconnected, 2 queued post(s) canceled" in messages_of(done)


def test_releasing_leases_asks_first_saying_no_refund_and_paid_through(ops, owner):
    lease = lease_assign(owner, at=timezone.now().replace(second=5) - timedelta(days=3))
    charges = LedgerEntry.objects.count()

    page = choose(ops, Lease, "release_leases", [lease.pk])

    assert page.status_code == 200
    lease.refresh_from_db()
    assert lease.released_at is None
    assert LedgerEntry.objects.count() == charges  # the page charges nothing either
    shown = text_of(page)
    paid_through = LedgerEntry.objects.filter(lease=lease).order_by("-period_index").first().period_end
    assert f"@{lease.handle} leased to Acme" in shown
    # to the second, as the lease's page and every admin time (a lease assigned at 14:31:05 is not paid
    # through 14:31)
    assert f"no refund: paid through {paid_through:%Y-%m-%d %H:%M:%S} UTC;" in shown

    done = confirm(ops, Lease, page)

    lease.refresh_from_db()
    assert lease.released_at is not None
    assert any(f"@{lease.pool_account.handle}: released" in m for m in messages_of(done))


def staff_member(*perms: str, mfa: bool):
    return signed_in_staff(*perms, mfa=mfa)[1]


@pytest.mark.parametrize("mfa", [False, True])
def test_staff_without_the_permission_or_mfa_cannot_confirm_a_revoke(ops, owner, mfa):
    page = choose(ops, ApiKey, "revoke_keys", [owner.key.pk])
    # Without MFA: the permission to change keys; with it, only to view them.
    perms = ("accounts.view_apikey",) if mfa else ("accounts.view_apikey", "accounts.change_apikey")

    confirm(staff_member(*perms, mfa=mfa), ApiKey, page)

    owner.key.refresh_from_db()
    assert owner.key.revoked_at is None
    assert owner.client.get("/v1/projects").status_code == 200


@pytest.mark.parametrize("mfa", [False, True])
def test_staff_without_the_permission_or_mfa_cannot_confirm_a_release(ops, owner, mfa):
    lease = lease_assign(owner)
    page = choose(ops, Lease, "release_leases", [lease.pk])
    perms = ("leasing.view_lease",) if mfa else ("leasing.view_lease", "leasing.change_lease")

    confirm(staff_member(*perms, mfa=mfa), Lease, page)

    lease.refresh_from_db()
    assert lease.released_at is None


def test_staff_who_may_only_view_accounts_cannot_confirm_a_revoke(ops, owner):
    account = make_account(owner)
    page = choose(ops, SocialAccount, "revoke_accounts", [account.pk])

    confirm(staff_member("accounts.view_socialaccount", mfa=True), SocialAccount, page)

    account.refresh_from_db()
    assert account.status == "connected"


@pytest.mark.parametrize("select_across", [True, False])
def test_confirming_a_revoke_of_a_long_selection_reads_only_the_rows_it_shows(ops, owner, select_across):
    """ "Revoke" on "select all 20,000 accounts" took 4.4 s to answer its confirmation page: it read the whole
    selection twice, and once more joined to every post of those accounts to count their queued ones. The
    page lists the first rows and counts the rest: it reads just those rows, and their queued posts in one
    grouped count."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from accounts.admin_site import SHOWN_ROWS
    from tests.admin_plans import statements_on

    for _ in range(SHOWN_ROWS + 5):
        make_account(owner)
    first, last = SocialAccount.objects.order_by("-pk")[:: SHOWN_ROWS + 4]  # the list's first row, a row not shown
    for account, when in ((first, 2), (first, 3), (last, 2)):
        schedule_now(owner, account.pk, when=later(hours=when))
    selection = {ACTION_CHECKBOX_NAME: [first.pk], "select_across": "1"} if select_across else {}
    if not select_across:
        selection[ACTION_CHECKBOX_NAME] = list(SocialAccount.objects.values_list("pk", flat=True))

    with CaptureQueriesContext(connection) as captured:
        page = ops.post(changelist(SocialAccount), {"action": "revoke_accounts", "index": 0, **selection})

    shown = text_of(page)
    assert f"the {SHOWN_ROWS + 5} selected social accounts" in shown and "and 5 more" in shown
    assert f"@{first.identity.handle} on tiktok" in shown and "2 queued post(s) canceled" in shown
    assert f"@{last.identity.handle} on" not in shown  # "@handle1 on", not a prefix of "@handle10 on"
    assert not SocialAccount.objects.filter(status="disconnected").exists()
    whole = [
        sql for sql in statements_on(captured, "accounts_socialaccount") if re.search(r"LIMIT|COUNT\(", sql) is None
    ]
    assert len(whole) <= (0 if select_across else 1), whole  # the ticked ids, posted back: one column
    assert not [sql for sql in whole if "accounts_platformidentity" in sql], whole
    on_posts = statements_on(captured, "scheduling_scheduledpost")
    assert len(on_posts) == 1 and re.search(r'FROM "scheduling_scheduledpost" .* GROUP BY', on_posts[0]), on_posts

    done = confirm(ops, SocialAccount, page)

    assert done.status_code == 200
    assert SocialAccount.objects.filter(status="connected").count() == 0
    assert LogEntry.objects.count() == SHOWN_ROWS + 5
