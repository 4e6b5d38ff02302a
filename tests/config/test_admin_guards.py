"""The back office holds what it promises staff: an admin action that changes something needs the change
permission (viewing a list is not enough), a CSV import needs add and change, a pending OAuth state is never
printed, the busy lists cost the same number of queries however many rows they show, and odd URLs are
answered with a page, not a server error."""

from datetime import timedelta

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client, RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts import crypto
from accounts.models import ApiKey, OAuthSession, SocialAccount
from accounts.webhooks.models import WebhookDelivery, WebhookEndpoint
from config.logfilters import redact_secrets
from leasing.models import Lease, LeaseAction, PoolAccount
from scheduling.models import Layer, ScheduledPost
from tests.billing.factories import lease_assign
from tests.factories import make_account
from tests.scheduling.publish_helpers import later, schedule_now
from tests.staff import signed_in_staff, staff_login, superuser

pytestmark = pytest.mark.django_db


def staff_with(*perms: str, mfa: bool = False):
    return signed_in_staff(*perms, mfa=mfa)


def run_action(client, model, action: str, pks) -> None:
    # As confirmed on the confirmation page of the actions that ask first (revoke, release): `post=yes`.
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    client.post(url, {"action": action, ACTION_CHECKBOX_NAME: [str(pk) for pk in pks], "index": 0, "post": "yes"})


def endpoint_of(tenant) -> WebhookEndpoint:
    return WebhookEndpoint.objects.create(
        organization=tenant.org,
        url="https://hooks.acme.test/x",
        events=["social_account.connected"],
        secret_enc=crypto.encrypt("whsec_x"),
    )


@pytest.mark.parametrize(
    "model, view_perm, action",
    [
        (ApiKey, "accounts.view_apikey", "revoke_keys"),
        (SocialAccount, "accounts.view_socialaccount", "revoke_accounts"),
        (ScheduledPost, "scheduling.view_scheduledpost", "retry_posts"),
        (ScheduledPost, "scheduling.view_scheduledpost", "cancel_posts"),
        (WebhookEndpoint, "webhooks.view_webhookendpoint", "disable_endpoints"),
        (WebhookEndpoint, "webhooks.view_webhookendpoint", "enable_endpoints"),
        ("webhooks.WebhookDelivery", "webhooks.view_webhookdelivery", "resend"),
        (Lease, "leasing.view_lease", "release_leases"),
    ],
)
def test_view_only_staff_are_offered_no_action_that_changes_something(model, view_perm, action):
    model = apps.get_model(model) if isinstance(model, str) else model
    viewer, _ = staff_with(view_perm)
    changer = superuser("changer")
    request = RequestFactory().get("/admin/")
    request.user = viewer
    assert action not in admin.site._registry[model].get_actions(request)
    request.user = changer
    assert action in admin.site._registry[model].get_actions(request)


def test_a_view_only_post_of_an_action_changes_nothing(owner):
    account = make_account(owner)
    queued = schedule_now(owner, make_account(owner).pk, when=later(hours=2))
    endpoint = endpoint_of(owner)
    _, viewer = staff_with(
        "accounts.view_apikey",
        "accounts.view_socialaccount",
        "scheduling.view_scheduledpost",
        "webhooks.view_webhookendpoint",
    )

    run_action(viewer, ApiKey, "revoke_keys", [owner.key.pk])
    run_action(viewer, SocialAccount, "revoke_accounts", [account.pk])
    run_action(viewer, ScheduledPost, "cancel_posts", [queued["id"]])
    run_action(viewer, WebhookEndpoint, "disable_endpoints", [endpoint.pk])

    owner.key.refresh_from_db()
    account.refresh_from_db()
    endpoint.refresh_from_db()
    assert owner.key.revoked_at is None
    assert account.status == "connected"
    assert ScheduledPost.objects.get(pk=queued["id"]).status == "queued"
    assert endpoint.status == "active"


def test_revoking_a_leased_account_needs_the_permission_to_release_leases(owner):
    lease = lease_assign(owner)
    connected = make_account(owner)
    _, staff = staff_with("accounts.view_socialaccount", "accounts.change_socialaccount", mfa=True)

    run_action(staff, SocialAccount, "revoke_accounts", [lease.social_account_id, connected.pk])

    lease.refresh_from_db()
    assert lease.released_at is None  # billing goes on: releasing is a lease change
    assert SocialAccount.objects.get(pk=connected.pk).status == "disconnected"


def test_importing_pool_accounts_needs_add_and_change(db):
    existing = PoolAccount.objects.create(
        handle="fit.one",
        platform_user_id="pool-x",
        vertical="fitness",
        languages=["en-US"],
        geos=["US"],
        monthly_price_cents=4900,
    )
    _, viewer = staff_with("leasing.view_poolaccount")
    assert viewer.get("/admin/leasing/poolaccount/import/").status_code == 403
    csv = "handle,vertical,languages,geos,monthly_price_cents,audience_notes,warmup_state\n"
    csv += "fit.one,fitness,en-US,US,1,,warm\n"
    viewer.post(
        "/admin/leasing/poolaccount/import/",
        {"format": "0", "import_file": SimpleUploadedFile("pool.csv", csv.encode(), content_type="text/csv")},
    )
    existing.refresh_from_db()
    assert existing.monthly_price_cents == 4900


def pending_session(tenant) -> OAuthSession:
    """A partner's connect link, not used yet: its state is a bearer secret."""
    return OAuthSession.objects.create(
        organization=tenant.org,
        project=tenant.project,
        api_key=tenant.key,
        platform="tiktok",
        purpose="connect",
        return_url="https://app.acme.test/done",
        expires_at=timezone.now() + timedelta(minutes=30),
    )


def test_the_oauth_session_list_never_prints_a_whole_state(owner):
    session = pending_session(owner)
    staff = Client()
    staff_login(staff, superuser())
    page = staff.get(reverse("admin:accounts_oauthsession_changelist"))
    assert page.status_code == 200
    text = page.content.decode()
    assert session.state[:10] in text and session.state not in text
    assert session.state not in str(session)

    # Nor can the list's URL filters be used as an oracle to read it one character at a time.
    for lookup in ("state__startswith", "state__gt", "state__regex", "pk__startswith", "state__in", "state"):
        probe = staff.get(reverse("admin:accounts_oauthsession_changelist"), {lookup: session.state[:12]})
        assert probe.status_code == 400, (lookup, probe.status_code)
    assert staff.get(reverse("admin:accounts_oauthsession_changelist"), {"status": "pending"}).status_code == 200


def test_the_oauth_session_search_finds_the_short_state_it_shows_and_never_reads_more_of_it(owner, outsider):
    """The oauth log lines name a session by the short state the list shows (`st_` and 7 characters): pasted
    into the search, it finds that session. Anything longer or shorter, the whole state included, finds
    nothing: the search must not tell staff one character of a pending state more than the list shows."""
    ours, theirs = pending_session(owner), pending_session(outsider)
    staff = Client()
    staff_login(staff, superuser())

    def found(term: str) -> list[str]:
        page = staff.get(reverse("admin:accounts_oauthsession_changelist"), {"q": term})
        assert page.status_code == 200
        return [row.pk for row in page.context["cl"].result_list]

    short = ours.state[:10]
    for term in (short, f" {short} ", f"{short}…", "S" + short[1:]):  # as logged, as listed, capitalised
        assert found(term) == [ours.pk], term
    # As an access log line cuts it (config/logfilters.py), copied from the path.
    cut = redact_secrets(f"GET /v1/social/oauth-status/{ours.state}").rsplit("/", 1)[1]
    assert cut == f"{short}[redacted]"
    assert found(cut) == [ours.pk]
    for term in (ours.state, ours.state[:11], ours.state[:9], f"{short}x"):
        assert found(term) == [], term
    # The organization and project ids the same log lines give.
    assert found(owner.org.pk) == [ours.pk] and found(outsider.project.pk) == [theirs.pk]


@pytest.mark.parametrize(
    "model, perm, column",
    [(ApiKey, "accounts.view_apikey", "key_hash"), (SocialAccount, "accounts.view_socialaccount", "access_token_enc")],
)
def test_view_only_staff_cannot_read_a_secret_column_through_the_list_filters(owner, model, perm, column):
    from tests.staff import signed_in, staff_member

    make_account(owner)
    row = model.objects.first()
    secret = getattr(row, column)
    viewer = signed_in(staff_member("viewer", perm))
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    # "1 result" for the right next character, "0" for a wrong one: the column, a character at a time.
    right = viewer.get(url, {f"{column}__startswith": secret[:12]})
    wrong = viewer.get(url, {f"{column}__startswith": secret[:11] + ("0" if secret[11] != "0" else "1")})
    # Refused (400, as the OAuth session list refuses `state__…`), or at least telling nothing apart.
    assert right.status_code == 400 or right.context["cl"].result_count == wrong.context["cl"].result_count


def test_no_admin_list_filters_on_a_secret_column_not_even_for_a_superuser(owner):
    from allauth.mfa.models import Authenticator

    from scheduling.models import ManagedProvider

    staff = Client()
    staff_login(staff, superuser())
    lease_assign(owner)
    probes = [
        (ApiKey, "key_hash__startswith"),
        (SocialAccount, "refresh_token_enc__gt"),
        (PoolAccount, "access_token_enc__startswith"),
        (WebhookEndpoint, "secret_enc__startswith"),
        (WebhookEndpoint, "previous_secret_enc"),
        (ManagedProvider, "secret_enc__startswith"),
        (Authenticator, "data__icontains"),
        (OAuthSession, "pk__startswith"),
        # through a relation
        (Lease, "social_account__access_token_enc__startswith"),
        (Lease, "pool_account__refresh_token_enc__startswith"),
        (OAuthSession, "api_key__key_hash__startswith"),
    ]
    answered = []
    for model, lookup in probes:
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        status = staff.get(url, {lookup: "gAAAA"}).status_code
        if status != 400:
            answered.append((model.__name__, lookup, status))
    assert answered == []
    # and ordinary filters still work
    assert staff.get(reverse("admin:leasing_lease_changelist"), {"released_at__isnull": "True"}).status_code == 200
    assert staff.get(reverse("admin:accounts_apikey_changelist"), {"name__startswith": "te"}).status_code == 200


def _changelist_queries(client, model) -> int:
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries.captured_queries)


@pytest.mark.parametrize("model", [ScheduledPost, Layer, LeaseAction, Lease])
def test_busy_lists_cost_the_same_queries_for_3_rows_as_for_30(owner, model):
    staff = Client()
    staff_login(staff, superuser())
    actor = get_user_model().objects.create_user(username="someone", is_staff=True)

    def add_row():
        if model is ScheduledPost:
            schedule_now(owner, make_account(owner).pk, when=later(hours=2))
        elif model is Layer:
            account = make_account(owner)
            Layer.objects.create(organization=owner.org, project=owner.project, social_account=account, kind="x")
        elif model is LeaseAction:
            lease = lease_assign(owner)
            LeaseAction.objects.create(request=lease.request, lease=lease, actor=actor, action="assigned")
        else:  # the leases list shows each leased account's status
            lease_assign(owner)

    for _ in range(3):
        add_row()
    few = _changelist_queries(staff, model)
    for _ in range(27):
        add_row()
    assert _changelist_queries(staff, model) == few


@pytest.mark.parametrize(
    "url, status",
    [
        ("/admin/billing/monthlybilling/?month=9999-12", 200),  # the month after it was past what a date holds
        ("/admin/billing/monthlybilling/?organization=%00", 400),
        ("/admin/billing/wallet/%00/change/", 400),
        ("/admin/leasing/leaserequest/%00/change/", 400),
        ("/admin/scheduling/scheduledpost/?q=%00", 400),
    ],
)
def test_odd_admin_urls_get_a_page_not_a_server_error(db, url, status):
    staff = Client(raise_request_exception=False)
    staff_login(staff, superuser())
    assert staff.get(url).status_code == status


def test_a_forged_money_form_token_is_a_form_error(owner):
    staff = Client(raise_request_exception=False)
    staff_login(staff, superuser())
    response = staff.post(
        reverse("admin:billing_wallet_record"),
        {
            "organization": owner.org.pk,
            "kind": "top_up",
            "amount": "10.00",
            "reason": "wire",
            "reference": "",
            "token": "x" * 200,
        },
    )
    assert response.status_code == 200  # the form again, with its error
    assert not owner.org.ledger_entries.exists()


@pytest.mark.parametrize(
    "model, action",
    [
        (ScheduledPost, "retry_posts"),
        (ApiKey, "revoke_keys"),
        (SocialAccount, "revoke_accounts"),
        (WebhookDelivery, "resend"),
        (WebhookEndpoint, "disable_endpoints"),
    ],
)
def test_an_action_posted_with_a_nul_in_its_selection_is_a_400_not_a_500(db, model, action):
    staff = Client(raise_request_exception=False)
    staff_login(staff, superuser())
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")

    response = staff.post(url, {"action": action, ACTION_CHECKBOX_NAME: ["\x00"], "index": 0})

    assert response.status_code == 400


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


@pytest.mark.parametrize("odd", ["abc", "1.5", "sa_00000000-0000-0000-0000-000000000000", ""])
def test_an_action_posted_with_an_id_the_list_cannot_hold_does_nothing_and_says_so(owner, odd):
    # Leases have integer ids: Django filtered the list by the posted ids unchecked (`pk__in=["abc"]`), a
    # ValueError and a 500 page. Nothing is done, not even to the good id posted with it.
    lease = lease_assign(owner)
    staff = staff_login(Client(raise_request_exception=False), superuser())
    url = reverse("admin:leasing_lease_changelist")

    response = staff.post(
        url,
        {"action": "release_leases", "post": "yes", "index": 0, ACTION_CHECKBOX_NAME: [str(lease.pk), odd]},
        follow=True,
    )

    assert response.status_code == 200 and response.redirect_chain == [(url, 302)]
    assert any("No action was taken" in message for message in messages_of(response)), messages_of(response)
    lease.refresh_from_db()
    assert lease.released_at is None
    assert not LeaseAction.objects.filter(lease=lease, action="released").exists()


def test_no_admin_list_answers_an_id_its_rows_cannot_have_with_a_server_error(db):
    """Every list with actions whose ids are not free text (integer ids: users, groups, leases, managed
    providers, the beat schedules, authenticators, e-mail addresses; uuids), the installed apps' included,
    answers such an id with the list and a message, not a 500."""
    staff = staff_login(Client(raise_request_exception=False), superuser("ops"))
    request = RequestFactory().get("/admin/")
    request.user = get_user_model().objects.get(username="ops")
    answers = {}
    for model, model_admin in admin.site._registry.items():
        try:
            model._meta.pk.to_python("abc")
            continue  # a text id: "abc" is one (matching no row)
        except ValidationError:
            pass
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        for action in model_admin.get_actions(request):
            response = staff.post(url, {"action": action, "index": 0, ACTION_CHECKBOX_NAME: ["abc"], "post": "yes"})
            answers[f"{model._meta.label}.{action}"] = response.status_code
    assert {label.split(".")[0] for label in answers} >= {"auth", "leasing", "django_celery_beat", "mfa", "account"}
    assert {label: status for label, status in answers.items() if status != 302} == {}


def test_a_form_posted_with_a_nul_anywhere_is_a_400(owner):
    staff = Client(raise_request_exception=False)
    staff_login(staff, superuser())
    url = reverse("admin:accounts_project_change", args=[owner.project.pk])

    response = staff.post(url, {"name": "Web\x00app", "organization": owner.org.pk})

    assert response.status_code == 400
    owner.project.refresh_from_db()
    assert owner.project.name != "Web\x00app"


def test_the_nul_refusal_is_the_readable_400_page_not_a_line_of_plain_text(owner):
    # Staff got "Bad request: a NUL byte in the request." as text/plain, the one admin answer without a page.
    staff = staff_login(Client(raise_request_exception=False), superuser())

    response = staff.get(reverse("admin:accounts_project_changelist"), {"q": "a\x00b"})

    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")
    assert "could not be opened" in response.content.decode()


def test_a_stale_form_is_refused_with_a_page_saying_to_reload_not_djangos_csrf_page(owner):
    # A form left open across a sign-out (or a second tab's sign-in) fails Django's CSRF check; staff saw
    # Django's developer page ("CSRF verification failed. Request aborted." and its reasons for a developer).
    staff = staff_login(Client(enforce_csrf_checks=True, raise_request_exception=False), superuser())
    url = reverse("admin:accounts_project_change", args=[owner.project.pk])

    response = staff.post(url, {"name": "Renamed", "organization": owner.org.pk, "csrfmiddlewaretoken": "stale" * 7})

    assert response.status_code == 403
    page = response.content.decode()
    assert "reload" in page.lower() and "CSRF verification failed" not in page
    owner.project.refresh_from_db()
    assert owner.project.name != "Renamed"


def _row_shown_read_only(owner, model):
    """A row of `model`, whose admin page shows every field read-only."""
    from accounts.models import Event
    from scheduling.models import ContentContainer

    if model is SocialAccount:
        return make_account(owner)
    if model is WebhookEndpoint:
        return endpoint_of(owner)
    if model is WebhookDelivery:
        event = Event.objects.create(organization=owner.org, type="social_account.connected", data={})
        return WebhookDelivery.objects.create(event=event, endpoint=endpoint_of(owner))
    if model is Lease:
        return lease_assign(owner)
    if model is ScheduledPost:
        return ScheduledPost.objects.get(pk=schedule_now(owner, make_account(owner).pk, when=later(hours=2))["id"])
    if model is ContentContainer:
        return ContentContainer.objects.get(
            pk=schedule_now(owner, make_account(owner).pk, when=later(hours=2))["containerId"]
        )
    if model is Layer:
        return Layer.objects.create(
            organization=owner.org, project=owner.project, social_account=make_account(owner), kind="x"
        )
    raise AssertionError(model)


@pytest.mark.parametrize(
    "model",
    [WebhookDelivery, WebhookEndpoint, SocialAccount, Lease, ScheduledPost, "scheduling.ContentContainer", Layer],
)
def test_a_page_with_nothing_to_edit_offers_no_save_and_claims_no_change(owner, model):
    """These pages show every field read-only, yet offered Save; pressing it answered "… was changed
    successfully." and wrote a "No fields changed." history row. They are now read-only pages (no Save; a
    posted save is refused), while the list's actions, which need the change permission, stay offered."""
    from django.contrib.admin.models import LogEntry

    from tests.staff import admin_object_url

    model = apps.get_model(model) if isinstance(model, str) else model
    row = _row_shown_read_only(owner, model)
    staff = staff_login(Client(raise_request_exception=False), superuser("ops"))
    url = admin_object_url(model, row.pk)

    page = staff.get(url)
    saved = staff.post(url, {"_save": "Save"}, follow=True)

    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert "changed successfully" not in saved.content.decode()
    assert not LogEntry.objects.filter(object_id=row.pk).exists()
    request = RequestFactory().get("/admin/")
    request.user = get_user_model().objects.get(username="ops")
    model_admin = admin.site._registry[model]
    assert set(model_admin.actions or ()) <= set(model_admin.get_actions(request))  # still offered


def test_every_change_page_with_nothing_to_edit_is_read_only(db):
    """No admin page offers a Save that can change nothing: if every field of the page is read-only (for a
    superuser), the admin refuses the change of a row (its list actions stay)."""
    request = RequestFactory().get("/admin/")
    request.user = superuser("ops")
    offered = []
    for model, model_admin in admin.site._registry.items():
        row = model()
        editable = set(model_admin.get_fields(request, row)) - set(model_admin.get_readonly_fields(request, row))
        inlines_editable = any(
            inline.has_change_permission(request, row) or inline.has_add_permission(request, row)
            for inline in model_admin.get_inline_instances(request, row)
            if not set(inline.get_fields(request, row)) <= set(inline.get_readonly_fields(request, row))
        )
        if not editable and not inlines_editable and model_admin.has_change_permission(request, row):
            offered.append(model._meta.label)
    assert offered == []
