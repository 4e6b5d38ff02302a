"""The back-office: staff sign in through django-allauth (MFA available, the admin's own login cannot be
used to bypass it), manage organizations and projects, issue API keys (shown once, stored as a hash),
edit a key's return-domain allowlist and revoke keys."""

import hashlib
import json
import re
import time
from html.parser import HTMLParser

import pytest
from allauth.mfa import app_settings as mfa_settings
from allauth.mfa.models import Authenticator
from allauth.mfa.totp.internal.auth import TOTP, format_hotp_value, generate_totp_secret, hotp_value
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.test import Client
from django.urls import reverse

from accounts.models import ApiKey, Event, Organization, PlatformIdentity, Project
from tests.conftest import assert_error
from tests.factories import make_account
from tests.staff import admin_object_url, staff_login

PASSWORD = "correct horse battery staple"
RAW_KEY = re.compile(r"lyr_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    # allauth keeps its login rate-limit counters in the cache; each test starts with a clean slate.
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_user(username="ops", password=PASSWORD, is_staff=True, is_superuser=True)


def sign_in(client: Client, username: str, password: str = PASSWORD, next_url: str | None = None):
    url = "/staff/login/" + (f"?next={next_url}" if next_url else "")
    return client.post(url, {"login": username, "password": password})


def signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


@pytest.fixture
def staff_client(staff) -> Client:
    """A superuser signed in through allauth: password, then the TOTP code (MFA is required for them)."""
    secret = generate_totp_secret()
    TOTP.activate(staff, secret)
    client = Client()
    assert sign_in(client, staff.username)["Location"] == reverse("mfa_authenticate")
    response = client.post(reverse("mfa_authenticate"), {"code": totp_now(secret)})
    assert response.status_code == 302 and signed_in(client)
    return client


def totp_now(secret: str) -> str:
    return format_hotp_value(hotp_value(secret, int(time.time()) // mfa_settings.TOTP_PERIOD))


# --- signing in -----------------------------------------------------------------------------------


def test_anonymous_admin_redirects_to_the_allauth_login(db, client):
    response = client.get("/admin/", follow=True)

    final_url, status = response.redirect_chain[-1]
    assert status == 302
    assert final_url.startswith("/staff/login/?next=")
    assert response.status_code == 200
    assert 'name="password"' in response.content.decode()


def test_admin_login_page_redirects_to_allauth_and_cannot_sign_in(staff, client):
    assert client.get("/admin/login/")["Location"].startswith("/staff/login/?next=")

    # posting valid credentials to the admin's own form does not sign anyone in
    response = client.post("/admin/login/?next=/admin/", {"username": staff.username, "password": PASSWORD})

    assert response.status_code == 302 and response["Location"].startswith("/staff/login/")
    assert not signed_in(client)
    assert client.get("/admin/").status_code == 302


def test_staff_signs_in_through_allauth_and_reaches_the_admin(staff, client):
    secret = generate_totp_secret()
    TOTP.activate(staff, secret)
    sign_in(client, staff.username)
    response = client.post(reverse("mfa_authenticate"), {"code": totp_now(secret)})

    assert response.status_code == 302 and response["Location"] == "/admin/"
    page = client.get("/admin/")
    assert page.status_code == 200
    assert "Layers back-office" in page.content.decode()


def test_sign_in_returns_to_the_admin_page_asked_for(staff, client):
    response = sign_in(client, staff.username, next_url="/admin/accounts/apikey/")
    assert response["Location"] == "/admin/accounts/apikey/"


def test_wrong_password_does_not_sign_in(staff, client):
    response = sign_in(client, staff.username, password="wrong password")
    assert response.status_code == 200
    assert not signed_in(client)


def test_a_signed_in_user_who_is_not_staff_gets_no_admin(db, client):
    get_user_model().objects.create_user(username="partner", password=PASSWORD)
    sign_in(client, "partner")

    response = client.get("/admin/", follow=True)

    assert response.status_code == 403
    assert "Layers back-office" not in response.content.decode()


def test_nobody_can_sign_up(db, client):
    response = client.post("/staff/signup/", {"username": "intruder", "password1": PASSWORD, "password2": PASSWORD})
    assert not get_user_model().objects.filter(username="intruder").exists()
    assert response.status_code in (200, 403)


def test_staff_can_enable_totp_after_confirming_their_password(staff):
    staff_client = Client()  # signed in with the password only: no authenticator yet
    assert sign_in(staff_client, staff.username).status_code == 302 and signed_in(staff_client)
    assert staff_client.get(reverse("mfa_index")).status_code == 200
    activate = reverse("mfa_activate_totp")
    # allauth asks for the password again before any MFA change
    assert staff_client.get(activate)["Location"].startswith(reverse("account_reauthenticate"))
    response = staff_client.post(f"{reverse('account_reauthenticate')}?next={activate}", {"password": PASSWORD})
    assert response["Location"] == activate

    page = staff_client.get(activate)
    assert page.status_code == 200
    secret = staff_client.session["mfa.totp.secret"]
    assert secret in page.content.decode()  # shown for manual entry next to the QR code
    response = staff_client.post(activate, {"code": totp_now(secret)})

    assert response.status_code == 302
    assert Authenticator.objects.filter(user=staff, type=Authenticator.Type.TOTP).exists()


def test_staff_with_totp_must_pass_the_mfa_step_before_the_admin(staff, client):
    secret = generate_totp_secret()
    TOTP.activate(staff, secret)

    # password step: sent to the MFA page, not signed in yet
    response = sign_in(client, staff.username)
    assert response.status_code == 302
    assert response["Location"] == reverse("mfa_authenticate")
    assert not signed_in(client)
    assert client.get("/admin/").status_code == 302
    # the admin's own login form is no way around it either
    client.post("/admin/login/", {"username": staff.username, "password": PASSWORD})
    assert not signed_in(client)

    # a wrong code keeps them out
    wrong = "000000" if totp_now(secret) != "000000" else "111111"
    assert client.post(reverse("mfa_authenticate"), {"code": wrong}).status_code == 200
    assert not signed_in(client)

    # the right code lets them in, to the admin
    response = client.post(reverse("mfa_authenticate"), {"code": totp_now(secret)})
    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert signed_in(client)
    assert client.get("/admin/").status_code == 200


def test_the_sign_in_pages_invite_nobody_to_sign_up(staff, client):
    """/staff/login/ said "If you have not created an account yet, then please sign up first." and its menu,
    like the code step's, linked "Sign Up", which answers "Sign Up Closed": only a superuser creates staff."""
    TOTP.activate(staff, generate_totp_secret())
    signup = reverse("account_signup")

    pages = {"sign-in": client.get("/staff/login/"), "closed sign-up": client.get(signup)}
    assert sign_in(client, staff.username)["Location"] == reverse("mfa_authenticate")
    pages["code step"] = client.get(reverse("mfa_authenticate"))

    for name, page in pages.items():
        html = page.content.decode()
        assert page.status_code == 200, name
        assert f'href="{signup}"' not in html and "sign up first" not in html.lower(), name
    assert 'name="login"' in pages["sign-in"].content.decode()  # the form itself is still there
    assert 'name="code"' in pages["code step"].content.decode()


# --- organizations and projects --------------------------------------------------------------------


class HiddenInputs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.values = {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "input" and attrs.get("type") == "hidden" and attrs.get("name"):
            self.values[attrs["name"]] = attrs.get("value") or ""


def management_forms(client, url) -> dict:
    """The inline management forms of an admin add/change page, posting zero inline rows (which leaves any
    existing rows alone): other apps may hang their own inlines on these admins."""
    parser = HiddenInputs()
    parser.feed(client.get(url).content.decode())
    fields = {k: v for k, v in parser.values.items() if k.endswith("_FORMS")}
    return {k: ("0" if k.endswith(("TOTAL_FORMS", "INITIAL_FORMS")) else v) for k, v in fields.items()}


def test_staff_create_an_organization_and_a_project(staff_client):
    url = "/admin/accounts/organization/add/"
    response = staff_client.post(url, {"name": "Initech", **management_forms(staff_client, url)})
    assert response.status_code == 302, response.content.decode()[:2000]
    org = Organization.objects.get(name="Initech")
    assert org.id.startswith("org_")

    url = "/admin/accounts/project/add/"
    response = staff_client.post(url, {"organization": org.id, "name": "Web", **management_forms(staff_client, url)})
    assert response.status_code == 302
    assert Project.objects.get(organization=org).name == "Web"

    listing = staff_client.get("/admin/accounts/project/?q=Initech").content.decode()
    assert "Web" in listing


def test_organization_and_project_pages_render(staff_client, owner):
    for url in (
        "/admin/accounts/organization/",
        admin_object_url(Organization, owner.org.id),
        "/admin/accounts/project/",
        admin_object_url(Project, owner.project.id),
        "/admin/accounts/apikey/",
        "/admin/accounts/event/",
    ):
        assert staff_client.get(url).status_code == 200, url


# --- API keys -------------------------------------------------------------------------------------


def add_key(client, org, domains="App.Acme.test\nfoo.test:8443", name="partner key"):
    url = "/admin/accounts/apikey/add/"
    return client.post(
        url,
        {"organization": org.id, "name": name, "allowed_return_domains": domains, **management_forms(client, url)},
    )


def test_adding_a_key_shows_it_once_and_stores_only_prefix_and_hash(staff, staff_client, owner):
    response = add_key(staff_client, owner.org)

    assert response.status_code == 200
    assert "admin/accounts/apikey/created.html" in [t.name for t in response.templates]
    raw = RAW_KEY.search(response.content.decode()).group(0)
    row = ApiKey.objects.get(name="partner key")
    assert row.organization_id == owner.org.id and row.created_by_id == staff.id
    assert row.allowed_return_domains == ["app.acme.test", "foo.test:8443"]
    assert raw.startswith(f"lyr_{row.prefix}_")
    assert row.key_hash == hashlib.sha256(raw.encode()).hexdigest()
    for field in ApiKey._meta.concrete_fields:
        assert raw not in json.dumps(field.value_from_object(row), default=str), field.name
    # the key works, for its organization only
    api = Client()
    body = api.get("/v1/projects", HTTP_AUTHORIZATION=f"Bearer {raw}").json()
    assert sorted(p["id"] for p in body["data"]) == sorted(p.id for p in owner.projects)
    # and it is never shown again: not in the list, not in a flashed message
    assert raw not in staff_client.get("/admin/accounts/apikey/").content.decode()


def test_the_key_created_page_gives_ops_everything_the_partner_needs_for_a_first_call(staff_client, owner, settings):
    settings.LAYERS_PUBLIC_URL = "https://api.layers.test"

    page = add_key(staff_client, owner.org).content.decode()

    handover = page[page.index('id="partner-handover"') :]
    assert "https://api.layers.test/v1/" in handover and "https://api.layers.test/docs/" in handover
    assert owner.org.id in handover
    for project in owner.projects:
        assert project.id in handover and project.name in handover
    # the ids are those the key reads
    raw = RAW_KEY.search(page).group(0)
    listed = Client().get("/v1/projects", HTTP_AUTHORIZATION=f"Bearer {raw}").json()["data"]
    assert listed and all(p["id"] in handover for p in listed)


def test_the_key_created_page_says_when_the_organization_has_no_project_yet(staff_client):
    org = Organization.objects.create(name="Initech")

    page = add_key(staff_client, org).content.decode()

    assert "none yet: add one to the organization" in page[page.index('id="partner-handover"') :]


def test_key_change_page_shows_neither_the_key_nor_its_hash(staff_client, owner):
    raw = RAW_KEY.search(add_key(staff_client, owner.org).content.decode()).group(0)
    row = ApiKey.objects.get(name="partner key")

    page = staff_client.get(admin_object_url(ApiKey, row.pk)).content.decode()

    assert row.prefix in page  # staff can tell keys apart by prefix
    assert raw not in page
    assert row.key_hash not in page
    assert "app.acme.test\nfoo.test:8443" in page  # the allowlist, one host per line


def test_invalid_allowlist_entry_is_refused_and_no_key_is_created(staff_client, owner):
    response = add_key(staff_client, owner.org, domains="app.acme.test\nhttps://x.test/path")

    assert response.status_code == 200
    assert "https://x.test/path" in response.content.decode()
    assert "errorlist" in response.content.decode()
    assert not ApiKey.objects.filter(name="partner key").exists()


def test_staff_edit_the_allowlist_of_an_existing_key(staff_client, owner):
    url = admin_object_url(ApiKey, owner.key.pk)
    original_hash = owner.key.key_hash

    forms = management_forms(staff_client, url)
    response = staff_client.post(
        url, {"name": "renamed", "allowed_return_domains": "App.Acme.test\nfoo.test:8443", **forms}
    )
    assert response.status_code == 302
    owner.key.refresh_from_db()
    assert owner.key.allowed_return_domains == ["app.acme.test", "foo.test:8443"]
    assert owner.key.key_hash == original_hash  # editing never re-issues the secret

    refused = staff_client.post(url, {"name": "renamed", "allowed_return_domains": "https://x.test/path", **forms})
    assert refused.status_code == 200 and "errorlist" in refused.content.decode()
    owner.key.refresh_from_db()
    assert owner.key.allowed_return_domains == ["app.acme.test", "foo.test:8443"]


def test_an_allowlist_written_as_origins_with_default_ports_lets_those_return_urls_through(staff_client, owner):
    """Staff paste origins as a browser or a config file shows them (`https://host:443`, a dev server on
    `http://localhost:80`): saved as the hosts they allow, and the partner's returnUrl on that host, with or
    without the default port written, starts a connect. Another port of the same host does not."""
    url = admin_object_url(ApiKey, owner.key.pk)
    forms = management_forms(staff_client, url)
    saved = staff_client.post(
        url,
        {"name": "k", "allowed_return_domains": "https://App.Example.test:443\nhttp://localhost:80", **forms},
    )
    assert saved.status_code == 302, saved.content[:2000]
    owner.key.refresh_from_db()
    assert owner.key.allowed_return_domains == ["app.example.test", "localhost:80"]

    def oauth_url(return_url):
        return owner.client.post(
            f"/v1/projects/{owner.project.id}/social/oauth-url",
            {"platform": "tiktok", "returnUrl": return_url},
            format="json",
        )

    for allowed in ("https://app.example.test/cb", "https://app.example.test:443/cb", "http://localhost/cb"):
        assert oauth_url(allowed).status_code == 200, allowed
    for refused in ("https://app.example.test:8443/cb", "https://localhost/cb", "http://localhost:3000/cb"):
        assert_error(oauth_url(refused), 403, "RETURN_URL_NOT_ALLOWED")


def test_a_plain_http_origin_of_a_public_host_is_refused_with_the_reason(staff_client, owner):
    url = admin_object_url(ApiKey, owner.key.pk)
    refused = staff_client.post(
        url, {"name": "k", "allowed_return_domains": "http://app.example.test", **management_forms(staff_client, url)}
    )
    assert refused.status_code == 200 and "errorlist" in refused.content.decode()
    assert "plain http is only for localhost" in refused.content.decode()
    owner.key.refresh_from_db()
    assert owner.key.allowed_return_domains == ["app.acme.test", "localhost"]


def test_the_organization_of_an_existing_key_cannot_be_changed(staff_client, owner, outsider):
    url = admin_object_url(ApiKey, owner.key.pk)
    staff_client.post(url, {"organization": outsider.org.id, "name": "x", "allowed_return_domains": "a.test"})
    owner.key.refresh_from_db()
    assert owner.key.organization_id == owner.org.id


def test_the_revoke_action_revokes_the_selected_keys(staff_client, owner, sibling, outsider):
    response = staff_client.post(
        "/admin/accounts/apikey/",
        {"action": "revoke_keys", "post": "yes", "_selected_action": [owner.key.pk, sibling.key.pk]},
    )

    assert response.status_code == 302
    for tenant in (owner, sibling):
        tenant.key.refresh_from_db()
        assert tenant.key.revoked_at is not None
        assert_error(tenant.client.get("/v1/projects"), 401, "UNAUTHENTICATED")
    outsider.key.refresh_from_db()
    assert outsider.key.revoked_at is None
    assert outsider.client.get("/v1/projects").status_code == 200


def test_anonymous_cannot_add_a_key(owner, client):
    response = add_key(client, owner.org)
    assert response.status_code == 302
    assert ApiKey.objects.count() == 1  # the fixture's


def test_the_go_to_the_key_link_opens_the_key_whatever_its_id(staff_client, owner, monkeypatch):
    # The admin escapes "_" in the ids of its URLs; an id built into a link without that escaping reads back
    # differently when its underscore is followed by the hex of a character the admin escapes ("_22" is a
    # double quote), about one key in forty. Give the key such an id.
    import uuid

    from config.api import ids

    monkeypatch.setattr(ids.uuid, "uuid4", lambda: uuid.UUID("22805d091a8548f9b6c01bacb9bfc25d"))
    created = add_key(staff_client, owner.org)
    monkeypatch.undo()
    key = ApiKey.objects.get(name="partner key")
    assert key.pk == "key_22805d091a8548f9b6c01bacb9bfc25d"

    link = re.search(r'href="([^"]+)">Go to the key', created.content.decode()).group(1)
    page = staff_client.get(link)

    assert page.status_code == 200, page.status_code
    assert page.context["original"] == key


def test_support_finds_accounts_and_identities_by_the_handle_as_partners_write_it(staff_client, owner, outsider):
    account = make_account(owner, handle="acme.brand")
    other = make_account(outsider, handle="acme.other")

    accounts = staff_client.get("/admin/accounts/socialaccount/", {"q": "@acme.brand"}).content.decode()
    identities = staff_client.get("/admin/accounts/platformidentity/", {"q": "@acme.brand"}).content.decode()

    assert account.pk in accounts and other.pk not in accounts
    assert admin_object_url(PlatformIdentity, account.identity_id) in identities
    assert admin_object_url(PlatformIdentity, other.identity_id) not in identities


def test_support_finds_accounts_and_events_by_an_id_exactly(staff_client, owner, outsider):
    account = make_account(owner)
    theirs = make_account(outsider)
    event = Event.objects.create(organization=owner.org, type="social_account.connected", data={})
    Event.objects.create(organization=outsider.org, type="social_account.connected", data={})

    by_id = staff_client.get("/admin/accounts/socialaccount/", {"q": account.pk}).content.decode()
    by_org = staff_client.get("/admin/accounts/socialaccount/", {"q": f" {owner.org.pk} "}).content.decode()
    events = staff_client.get("/admin/accounts/event/", {"q": event.pk}).content.decode()
    events_of_org = staff_client.get("/admin/accounts/event/", {"q": outsider.org.pk}).content.decode()

    assert account.pk in by_id and theirs.pk not in by_id
    assert account.pk in by_org and theirs.pk not in by_org
    assert event.pk in events and "1 result" in events
    assert event.pk not in events_of_org and "1 result" in events_of_org


def test_revoking_only_keys_already_revoked_says_so_and_reports_no_success(staff_client, owner, sibling):
    from django.contrib import messages as levels

    owner.key.revoked_at = owner.key.created_at
    owner.key.save()

    response = staff_client.post(
        "/admin/accounts/apikey/",
        {"action": "revoke_keys", "post": "yes", "_selected_action": [owner.key.pk]},
        follow=True,
    )
    shown = [(m.level, str(m)) for m in response.context["messages"]]
    assert (levels.WARNING, f"API key {owner.key}: already revoked.") in shown  # its name and prefix
    assert not [text for level, text in shown if level == levels.SUCCESS and "Revoked" in text], shown

    response = staff_client.post(
        "/admin/accounts/apikey/",
        {"action": "revoke_keys", "post": "yes", "_selected_action": [owner.key.pk, sibling.key.pk]},
        follow=True,
    )
    shown = [(m.level, str(m)) for m in response.context["messages"]]
    assert (levels.SUCCESS, "Revoked 1 key(s).") in shown


def test_api_keys_are_revoked_never_deleted_in_the_admin(owner, staff_client):
    # Revoking needs accounts.change_apikey (MFA). Deleting, which also cuts the partner off and erases the
    # key's row (who issued it, its last use, its history), needed only delete_apikey, with a password alone.
    from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME

    from tests.staff import signed_in, staff_member

    support = signed_in(staff_member("support", "accounts.view_apikey", "accounts.delete_apikey"))
    chosen = {"action": "delete_selected", "post": "yes", ACTION_CHECKBOX_NAME: [owner.key.pk]}
    support.post("/admin/accounts/apikey/", chosen)
    staff_client.post("/admin/accounts/apikey/", chosen)  # nor a superuser (with MFA): revoke instead
    page = staff_client.get("/admin/accounts/apikey/").content.decode()

    assert ApiKey.objects.filter(pk=owner.key.pk).exists()
    assert owner.client.get("/v1/projects").status_code == 200
    assert 'value="delete_selected"' not in page and 'value="revoke_keys"' in page
    assert staff_client.get(admin_object_url(ApiKey, owner.key.pk, "delete")).status_code == 403


@pytest.mark.parametrize("codename", ["add_apikey", "change_apikey"])
def test_staff_who_can_issue_or_edit_api_keys_must_use_mfa(owner, codename):
    # A key acts for its whole organization: whoever can mint one (or edit one's allowlist) holds every
    # partner's API, so a password alone must not be enough.
    from django.contrib.auth.models import Permission

    keys = get_user_model().objects.create_user("keys.editor", password="pw-ops-12345", is_staff=True)
    for perm in ("view_apikey", codename):
        keys.user_permissions.add(Permission.objects.get(content_type__app_label="accounts", codename=perm))
    client = Client()
    client.force_login(keys)  # a password only

    page = client.get("/admin/accounts/apikey/")
    added = add_key(client, owner.org)

    assert page.status_code == 302 and page["Location"] == reverse("mfa_activate_totp")
    assert added.status_code == 302 and added["Location"] == reverse("mfa_activate_totp")
    assert ApiKey.objects.count() == 1  # the fixture's


def test_staff_who_only_view_api_keys_need_no_mfa(owner):
    from django.contrib.auth.models import Permission

    viewer = get_user_model().objects.create_user("keys.viewer", password="pw-ops-12345", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(content_type__app_label="accounts", codename="view_apikey"))
    client = Client()
    client.force_login(viewer)

    assert client.get("/admin/accounts/apikey/").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_support_sees_why_an_account_needs_a_reauth_and_a_reauth_clears_it(owner):
    from datetime import timedelta

    from django.utils import timezone

    from accounts import services
    from accounts.models import SocialAccount
    from tests.accounts.oauth_helpers import connected_account, reauthorize
    from tests.platform_helpers import invalidate_tokens
    from tests.staff import superuser

    staff = Client()
    staff_login(staff, superuser("support"))

    removed = make_account(owner, handle="gone.creator")
    services.platform_authorization_removed(
        platform="tiktok",
        platform_user_id=removed.identity.platform_user_id,
        removed_at=timezone.now() + timedelta(minutes=1),
    )
    dying = connected_account(owner, "instagram", "expired.token")
    invalidate_tokens("instagram", "expired.token")
    services.social_account_check_health(account_id=dying["id"])

    removed_page = staff.get(admin_object_url(SocialAccount, removed.pk)).content.decode()
    dying_page = staff.get(admin_object_url(SocialAccount, dying["id"])).content.decode()
    assert "removed the app&#x27;s access" in removed_page
    reason = SocialAccount.objects.get(pk=dying["id"]).reauth_reason
    assert "health check" in reason and "190" in reason and reason in dying_page.replace("&#x27;", "'")

    reauthorize(owner, dying["id"], "instagram", "expired.token")
    row = SocialAccount.objects.get(pk=dying["id"])
    assert (row.status, row.reauth_reason) == ("connected", "")
    assert row.access_token not in reason


def test_the_events_type_filter_offers_every_event_type_without_reading_the_events(owner, staff_client):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    connected = Event.objects.create(organization=owner.org, type="social_account.connected", data={})
    failed = Event.objects.create(organization=owner.org, type="scheduled_post.failed", data={})

    with CaptureQueriesContext(connection) as queries:
        page = staff_client.get("/admin/accounts/event/").content.decode()
    # One row per change of every partner: the filter's choices are the known types, not a DISTINCT of them.
    assert [q["sql"] for q in queries if "DISTINCT" in q["sql"] and "accounts_event" in q["sql"]] == []
    assert "lease_request.rejected" in page  # offered even though no such event happened yet

    filtered = staff_client.get("/admin/accounts/event/", {"type__exact": "scheduled_post.failed"}).content.decode()
    assert failed.pk in filtered and connected.pk not in filtered


# --- staff authenticators ----------------------------------------------------------------------------


def test_view_only_staff_see_no_colleagues_totp_secret_and_nobody_edits_an_authenticator(db):
    from tests.staff import signed_in, staff_member, superuser

    boss = superuser("boss")
    stored = Authenticator.objects.get(user=boss, type=Authenticator.Type.TOTP)
    viewer = signed_in(staff_member("viewer", "mfa.view_authenticator"))  # needs no MFA itself
    page = viewer.get(admin_object_url(Authenticator, stored.pk))
    listing = viewer.get(reverse("admin:mfa_authenticator_changelist"))

    assert page.status_code == 200 and "boss" in page.content.decode()
    for shown in (page, listing):
        # neither the encrypted TOTP secret (allauth's admin showed it in a JSON textarea) nor its JSON key
        assert stored.data["secret"] not in shown.content.decode() and '"secret"' not in shown.content.decode()

    # Even a superuser: an authenticator is deleted (a lost phone), never typed in or moved to someone else.
    staff = staff_login(Client(), superuser("ops"))
    assert staff.get(reverse("admin:mfa_authenticator_add")).status_code == 403
    staff.post(admin_object_url(Authenticator, stored.pk), {"user": staff_user_pk(staff), "type": "totp"})
    assert Authenticator.objects.get(pk=stored.pk).user == boss


def staff_user_pk(client: Client) -> str:
    return client.session["_auth_user_id"]


def test_deleting_a_lost_phones_authenticator_also_retires_its_recovery_codes(db, settings):
    """README's lost-phone procedure deletes the staff member's authenticator in the admin. Its recovery codes
    (printed, or on that phone) went on passing MFA, and the new authenticator set up later kept them: they go
    with it, as when TOTP is turned off on allauth's own pages."""
    from allauth.mfa.recovery_codes.internal.auth import RecoveryCodes

    from tests.staff import superuser, with_mfa

    settings.LAYERS_STAFF_MFA_REQUIRED = True
    lost = with_mfa(get_user_model().objects.create_user("lost", password=PASSWORD, is_staff=True, is_superuser=True))
    old_codes = RecoveryCodes.activate(lost).get_unused_codes()
    totp = Authenticator.objects.get(user=lost, type=Authenticator.Type.TOTP)
    boss = staff_login(Client(), superuser("boss"))
    deleted = boss.post(reverse("admin:mfa_authenticator_delete", args=[totp.pk]), {"post": "yes"})
    assert deleted.status_code == 302
    assert not Authenticator.objects.filter(user=lost).exists()  # the TOTP and the recovery codes

    with_mfa(lost)  # the staff member sets up a new authenticator
    thief = Client()
    assert thief.post("/staff/login/", {"login": "lost", "password": PASSWORD})["Location"] == reverse(
        "mfa_authenticate"
    )
    thief.post(reverse("mfa_authenticate"), {"code": old_codes[0]})
    assert thief.get("/admin/").status_code != 200  # an old recovery code opens nothing


def test_staff_who_may_delete_authenticators_cannot_strip_the_second_factor_of_anyone_outranking_them(db):
    """Deleting a superuser's TOTP (or that of a colleague holding permissions the deleter lacks) let the
    victim's password alone sign in and set up a new TOTP: the permissions that need MFA, taken with a
    password. Like the user admin (accounts/auth_admin.py `outranks`), the authenticator admin refuses it, on
    the delete page and through "delete selected"; a colleague holding no more than they do is still helped."""
    from django.contrib.auth.models import Permission

    from tests.staff import signed_in_staff, staff_member, superuser, with_mfa

    boss = superuser("boss")
    treasurer = with_mfa(staff_member("treasurer", "billing.record_money"))
    # deactivated for now: reactivating them is one edit away, so they hold their permissions all the same
    dormant = with_mfa(staff_member("dormant", "leasing.change_lease"))
    get_user_model().objects.filter(pk=dormant.pk).update(is_active=False)
    # a superuser's status alone outranks: holding every permission as well changes nothing
    everything = with_mfa(staff_member("everything", superuser=True))
    everything.user_permissions.set(Permission.objects.all())
    _, helpdesk = signed_in_staff("mfa.view_authenticator", "mfa.delete_authenticator", mfa=True, username="helpdesk")
    for victim in (boss, treasurer, dormant, everything):
        totp = Authenticator.objects.get(user=victim, type=Authenticator.Type.TOTP)
        page = helpdesk.post(reverse("admin:mfa_authenticator_delete", args=[totp.pk]), {"post": "yes"})
        assert page.status_code == 403, victim
        bulk = {"action": "delete_selected", "_selected_action": [totp.pk], "post": "yes"}
        assert helpdesk.post(reverse("admin:mfa_authenticator_changelist"), bulk).status_code == 403, victim
        assert Authenticator.objects.filter(pk=totp.pk).exists(), f"helpdesk deleted {victim}'s authenticator"

    # A colleague who lost their phone and holds nothing the helpdesk does not: helped, both ways.
    for name in ("lost", "lost-too"):
        lost = with_mfa(staff_member(name, "mfa.view_authenticator"))
        totp = Authenticator.objects.get(user=lost, type=Authenticator.Type.TOTP)
        if name == "lost":
            helpdesk.post(reverse("admin:mfa_authenticator_delete", args=[totp.pk]), {"post": "yes"})
        else:
            bulk = {"action": "delete_selected", "_selected_action": [totp.pk], "post": "yes"}
            helpdesk.post(reverse("admin:mfa_authenticator_changelist"), bulk)
        assert not Authenticator.objects.filter(user=lost).exists(), name


def test_organizations_projects_and_events_are_never_deleted_in_the_admin(owner, db):
    """Deleting an organization or a project took with it every account, post, event and lease of the partner
    (and, for an organization, ran into the append-only ledger: a 500); deleting events, the partner's replay
    history and their deliveries. None of it is a back-office action: even a superuser is refused."""
    from accounts.services import event_record
    from tests.staff import superuser

    event = event_record(organization_id=owner.org.pk, type="social_account.connected", data={})
    staff = staff_login(Client(), superuser("ops"))
    for model, pk in ((Organization, owner.org.pk), (Project, owner.project.pk), (Event, event.pk)):
        assert staff.get(admin_object_url(model, pk, "delete")).status_code == 403, model
        assert staff.post(admin_object_url(model, pk, "delete"), {"post": "yes"}).status_code == 403, model
        assert model.objects.filter(pk=pk).exists(), model
    # nor through the organization page's projects
    page = staff.get(admin_object_url(Organization, owner.org.pk))
    assert page.status_code == 200 and "projects-0-DELETE" not in page.content.decode()


def test_the_organization_of_an_existing_project_cannot_be_changed(owner, outsider):
    """A project moved to another organization kept its accounts, posts and leases under the first one, and
    the other organization could then create content in it and schedule it on the first one's accounts. As
    an API key's, a project's organization is set when it is created and never changes afterwards."""
    from tests.staff import superuser

    staff = staff_login(Client(), superuser("ops"))
    url = admin_object_url(Project, owner.project.pk)
    page = staff.get(url)
    assert page.status_code == 200
    assert 'name="organization"' not in page.content.decode()  # shown, not offered as a field

    response = staff.post(url, {"organization": outsider.org.id, "name": "Renamed", **management_forms(staff, url)})

    assert response.status_code == 302, response.content.decode()[:2000]
    owner.project.refresh_from_db()
    assert owner.project.organization_id == owner.org.id
    assert owner.project.name == "Renamed"  # the rest of the page still saves


def test_staff_still_choose_the_organization_of_a_new_project(owner):
    from tests.staff import superuser

    staff = staff_login(Client(), superuser("ops"))
    url = "/admin/accounts/project/add/"
    assert 'name="organization"' in staff.get(url).content.decode()
    response = staff.post(url, {"organization": owner.org.id, "name": "  Mobile ", **management_forms(staff, url)})
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Project.objects.get(organization=owner.org, name="Mobile")


def test_platform_identities_are_not_added_in_the_admin(owner):
    """Partners and accounts -> Platform identities offered "Add", whose form asked only for a handle and a
    display name and whose Save was a 500 (the organization is required). Identities come from connects."""
    from tests.staff import superuser

    staff = staff_login(Client(raise_request_exception=False), superuser("ops"))
    url = "/admin/accounts/platformidentity/add/"

    page = staff.get(url)
    saved = staff.post(url, {"handle": "hand.added", "display_name": "x"})
    index = staff.get("/admin/").content.decode()

    assert page.status_code == 403 and saved.status_code == 403, (page.status_code, saved.status_code)
    assert url not in index
    assert not PlatformIdentity.objects.filter(handle="hand.added").exists()


def test_staff_cannot_rename_the_handle_partners_see(owner):
    """The handle and display name are the platform's (written at connect and profile refresh): a staff member
    holding accounts.change_platformidentity, which needs no MFA, rewrote the handle GET
    /v1/social-accounts/{id} shows the partner. Now nothing on the identity's page is editable, for anyone."""
    from django.contrib.auth.models import Permission

    from accounts.staff_mfa import staff_needs_mfa
    from tests.staff import superuser

    account = make_account(owner, handle="real.handle")
    support = get_user_model().objects.create_user("support", password="pw-support-12345", is_staff=True)
    for codename in ("view_platformidentity", "change_platformidentity"):
        support.user_permissions.add(Permission.objects.get(content_type__app_label="accounts", codename=codename))
    assert not staff_needs_mfa(get_user_model().objects.get(pk=support.pk))
    url = admin_object_url(PlatformIdentity, account.identity_id)

    for staff in (staff_login(Client(), support), staff_login(Client(), superuser("ops"))):
        page = staff.get(url).content.decode()
        staff.post(url, {"handle": "evil.handle", "display_name": "Evil"})
        assert 'name="handle"' not in page and 'name="display_name"' not in page

    assert owner.client.get(f"/v1/social-accounts/{account.pk}").json()["handle"] == "real.handle"
    assert PlatformIdentity.objects.get(pk=account.identity_id).display_name == ""


def test_every_admin_choice_of_an_organization_says_its_id(owner, staff_client):
    """Staff pick an organization when they add a project, issue an API key or record money, and filter the
    monthly report by one: by name alone, two partners called "Acme" were two identical options, and a key
    issued to (or a top-up credited to) the wrong one is not undone by editing it."""
    twin = Organization.objects.create(name="Acme")

    for url in (
        "/admin/accounts/project/add/",
        "/admin/accounts/apikey/add/",
        "/admin/billing/wallet/record/",
        "/admin/billing/monthlybilling/",
    ):
        content = staff_client.get(url).content.decode()
        for org in (owner.org, twin):
            assert re.search(rf'<option value="{org.pk}"[^>]*>Acme \({org.pk}\)</option>', content), url
