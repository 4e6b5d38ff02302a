"""Ops stock the pool in the admin: one by one, or by CSV import with row-level errors shown; and they connect
pool accounts on TikTok there (an account imported without tokens, or a leased one whose token died)."""

import re
from urllib.parse import parse_qs, urlsplit

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, override_settings
from django.urls import reverse

from accounts import services as account_services
from accounts.models import Event, OAuthSession
from accounts.platforms import get_client
from accounts.platforms.sandbox import identities
from accounts.platforms.sandbox.models import Token as SandboxToken
from leasing import services
from leasing.models import Lease, PoolAccount
from tests.leasing.helpers import add_pool, get_request, request_accounts
from tests.platform_helpers import consent, invalidate_tokens
from tests.scheduling.publish_helpers import later, post, run_dispatcher, sandbox_posts, schedule_now
from tests.staff import admin_object_url, staff_login, with_mfa

HEADER = "handle,vertical,languages,geos,monthly_price_cents,audience_notes,warmup_state\n"


@pytest.fixture
def staff(db):
    user = with_mfa(get_user_model().objects.create_superuser("ops", "ops@layers.test", "pw-ops-12345"))
    client = Client()
    staff_login(client, user)
    return client


def upload(staff, csv_text: str):
    page = staff.get("/admin/leasing/poolaccount/import/")
    assert page.status_code == 200
    formats = page.context["form"].fields["format"].choices
    csv_format = next(value for value, label in formats if str(label).lower() == "csv")
    return staff.post(
        "/admin/leasing/poolaccount/import/",
        {
            "format": csv_format,
            "import_file": SimpleUploadedFile("pool.csv", csv_text.encode(), content_type="text/csv"),
        },
    )


def test_csv_with_bad_rows_shows_them_and_imports_nothing(staff):
    response = upload(
        staff,
        HEADER
        + "fit.one,fitness,en-US,US;CA,4900,,warm\n"
        + "fit.two,fitness,english,US,4900,,warm\n"
        + "fit.three,fitness,en-US,ZZ,4900,,warm\n"
        + "fit.four,,en-US,US,-5,,warm\n",
    )
    text = response.content.decode()
    assert response.status_code == 200
    assert "BCP 47" in text and "ISO 3166-1" in text
    errors = text[text.index("Some rows failed to validate") :]
    assert all(handle in errors for handle in ("fit.two", "fit.three", "fit.four")) and "fit.one" not in errors
    assert not PoolAccount.objects.exists()


@pytest.mark.parametrize(
    "row, problem",
    [
        ("fit.bogus,fitness,en-US,US,4900,,bogus\n", "warmup_state"),
        (",fitness,en-US,US,4900,,warm\n", "handle"),
        ("   ,fitness,en-US,US,4900,,warm\n", "handle"),
        (f"{'h' * 65},fitness,en-US,US,4900,,warm\n", "handle"),
    ],
    ids=["unknown warmup state", "no handle", "a blank handle", "a handle too long"],
)
def test_a_csv_row_the_one_by_one_form_would_refuse_is_shown_and_nothing_is_imported(staff, row, problem):
    # These were imported as available pool accounts: one with an empty handle could be auto-assigned, and
    # the partner got `handle: ""`. The row is now held to the model's rules for the columns, as the form is.
    preview = upload(staff, HEADER + "fit.good,fitness,en-US,US,4900,,warm\n" + row)

    text = preview.content.decode()
    assert preview.status_code == 200 and preview.context.get("confirm_form") is None
    errors = text[text.index("Some rows failed to validate") :]
    assert problem in errors and "fit.good" not in errors
    assert not PoolAccount.objects.exists()


def test_valid_csv_imports_accounts_with_sandbox_tokens(staff):
    preview = upload(
        staff, HEADER + "fit.one,fitness,en-US;en-GB,us;ca,4900,gym,warm\nbeauty.two,beauty,fr-FR,FR,3900,,warming\n"
    )
    assert preview.status_code == 200
    confirm = preview.context["confirm_form"]
    done = staff.post(
        "/admin/leasing/poolaccount/process_import/",
        {**confirm.initial, "import_file_name": confirm.initial["import_file_name"]},
    )
    assert done.status_code in (200, 302)

    one = PoolAccount.objects.get(handle="fit.one")
    assert one.languages == ["en-US", "en-GB"] and one.geos == ["US", "CA"] and one.monthly_price_cents == 4900
    assert one.status == "available" and one.access_token
    assert PoolAccount.objects.get(handle="beauty.two").warmup_state == "warming"


def test_adding_one_account_in_the_admin(staff):
    response = staff.post(
        "/admin/leasing/poolaccount/add/",
        {
            "handle": "solo.fit",
            "display_name": "Solo",
            "vertical": "fitness",
            "audience_notes": "",
            "warmup_state": "warm",
            "monthly_price_cents": "5900",
            "status": "available",
            "languages_text": "en-US",
            "geos_text": "US, gb",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    account = PoolAccount.objects.get(handle="solo.fit")
    assert account.geos == ["US", "GB"] and account.access_token
    bad = staff.post(
        "/admin/leasing/poolaccount/add/",
        {
            "handle": "x",
            "vertical": "v",
            "warmup_state": "warm",
            "monthly_price_cents": "1",
            "status": "available",
            "languages_text": "nope!",
            "geos_text": "XX",
        },
    )
    assert bad.status_code == 200 and "BCP 47" in bad.content.decode()


def test_pool_accounts_are_retired_never_deleted_in_the_admin(staff):
    # Retiring is a change (MFA). Deleting, which takes the account out of the pool with its TikTok tokens for
    # good, needed only delete_poolaccount, with a password alone.
    from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME

    from tests.staff import signed_in, staff_member

    (pool_id,) = add_pool(1)
    support = signed_in(staff_member("support", "leasing.view_poolaccount", "leasing.delete_poolaccount"))
    chosen = {"action": "delete_selected", "post": "yes", ACTION_CHECKBOX_NAME: [pool_id]}
    support.post("/admin/leasing/poolaccount/", chosen)
    staff.post("/admin/leasing/poolaccount/", chosen)  # nor a superuser (with MFA): retire instead

    assert PoolAccount.objects.filter(pk=pool_id).exists()
    assert PoolAccount.objects.get(pk=pool_id).access_token
    assert 'value="delete_selected"' not in staff.get("/admin/leasing/poolaccount/").content.decode()
    assert staff.get(admin_object_url(PoolAccount, pool_id, "delete")).status_code == 403


# --- Connecting pool accounts on TikTok --------------------------------------------------------------


def start_connect(staff, pool_id: str):
    """The staff member presses "Connect on TikTok" on the pool account's page."""
    return staff.post(admin_object_url(PoolAccount, pool_id, "connect"))


def connect_on_tiktok(staff, pool_id: str, username: str):
    """Start the connect, consent on the (sandbox) TikTok page as `username`, and come back through our
    callback in the staff member's browser; returns (the callback's response, the page it sends staff to)."""
    started = start_connect(staff, pool_id)
    assert started.status_code == 302, started.content[:500]
    location = consent("tiktok", started["Location"], username)
    parts = urlsplit(location)
    back = staff.get(f"{parts.path}?{parts.query}")
    assert back.status_code == 302, back.content[:500]
    return back, staff.get(back["Location"])


def state_of(authorize_url: str) -> str:
    return parse_qs(urlsplit(authorize_url).query)["state"][0]


def test_connecting_an_account_imported_without_tokens_in_live_mode_makes_it_available(staff):
    with override_settings(LAYERS_PLATFORMS="live"):  # the import cannot mint tokens in live mode
        preview = upload(staff, HEADER + "fit.live,fitness,en-US,US,4900,,warm\n")
        confirm = preview.context["confirm_form"]
        staff.post("/admin/leasing/poolaccount/process_import/", {**confirm.initial})
    account = PoolAccount.objects.get(handle="fit.live")
    assert account.status == "retired" and not account.access_token
    assert "connect the account" in account.status_note
    page = staff.get(admin_object_url(PoolAccount, account.pk)).content.decode()
    assert "Connect on TikTok" in page

    back, landed = connect_on_tiktok(staff, account.pk, "fit.live")

    assert back["Location"] == admin_object_url(PoolAccount, account.pk)  # back on the pool account's page
    assert "Connected on TikTok as @fit.live" in landed.content.decode()
    account.refresh_from_db()
    assert account.status == "available" and account.status_note == ""
    assert account.platform_user_id == identities.tiktok_open_id("fit.live")
    # The token works, and the account is leased like any other.
    assert get_client("tiktok").get_profile(access_token=account.access_token).username == "fit.live"
    assert services.pool_account_check(pool_account_id=account.pk) == "ok"


def test_an_account_retired_by_hand_gets_its_token_but_stays_retired(staff):
    (pool_id,) = add_pool(1)
    PoolAccount.objects.filter(pk=pool_id).update(status="retired", status_note="banned in the US")
    handle = PoolAccount.objects.get(pk=pool_id).handle

    _, landed = connect_on_tiktok(staff, pool_id, handle)

    account = PoolAccount.objects.get(pk=pool_id)
    assert account.status == "retired" and account.status_note == "banned in the US"
    assert "still retired" in landed.content.decode()


@pytest.mark.django_db(transaction=True)
def test_staff_reconnect_a_leased_account_whose_token_died_and_the_partners_queued_post_publishes(owner, staff):
    (pool_id,) = add_pool(1)
    accepted = request_accounts(owner, 1)
    services.lease_assign(request_id=accepted["requestId"], auto=True)
    account_id = get_request(owner, accepted["requestId"])["socialAccountIds"][0]
    handle = PoolAccount.objects.get(pk=pool_id).handle
    invalidate_tokens("tiktok", handle)
    assert account_services.social_account_check_health(account_id=account_id) == "reauth_required"
    assert owner.client.get(f"/v1/social-accounts/{account_id}").json()["status"] == "reauth_required"
    # The partner cannot reauthorize it; the answer says who does.
    refused = owner.client.post(
        f"/v1/projects/{owner.project.id}/social/reauth-url", {"socialAccountId": account_id}, format="json"
    )
    assert refused.status_code == 409 and "admin" in refused.json()["error"]["message"]
    queued = schedule_now(owner, account_id, when=later(minutes=5))
    # Ops see it: the leases list says the account needs a reauth, the pool account's page offers the connect.
    leases = staff.get("/admin/leasing/lease/?account_status=reauth_required").content.decode()
    assert f"@{handle}" in leases and "reauth_required" in leases and "$49.00" in leases
    assert f"@{handle}" not in staff.get("/admin/leasing/lease/?account_status=connected").content.decode()
    page = staff.get(admin_object_url(PoolAccount, pool_id)).content.decode()
    assert "needs a reauth" in page and "Connect on TikTok" in page

    _, landed = connect_on_tiktok(staff, pool_id, handle)

    assert f"Connected on TikTok as @{handle}" in landed.content.decode()
    body = owner.client.get(f"/v1/social-accounts/{account_id}").json()
    assert body["id"] == account_id and body["status"] == "connected" and body["kind"] == "leased"
    assert Event.objects.filter(type="social_account.reconnected", data__id=account_id).count() == 1
    pool = PoolAccount.objects.get(pk=pool_id)
    assert pool.status == "leased" and not pool.access_token  # one live copy: the token is on the binding
    assert Lease.objects.get(pool_account_id=pool_id).released_at is None
    with time_machine.travel(later(minutes=10)):
        run_dispatcher()
    assert post(owner, queued["id"])["status"] == "published"
    assert len(sandbox_posts("tiktok", handle)) == 1


@pytest.mark.django_db(transaction=True)
def test_a_staff_reconnect_and_a_customer_connect_as_the_leased_user_at_once_both_complete(owner, staff, monkeypatch):
    """Ops reconnect a leased account on TikTok while a customer of the partner connects as the same TikTok user
    in the project (which answers the leased binding's id), after the profile changed. The customer's connect
    wrote the identity's profile, then waited for the binding's lock; the staff reconnect held the binding
    and the pool account, then waited to write the identity: PostgreSQL killed one as a deadlock."""

    from accounts.models import PlatformIdentity
    from tests.accounts.oauth_helpers import follow_callback, start, status
    from tests.concurrency import SecondQueuesBehindFirst

    (pool_id,) = add_pool(1)
    services.lease_assign(request_id=request_accounts(owner, 1)["requestId"], auto=True)
    handle = PoolAccount.objects.get(pk=pool_id).handle
    account_id = Lease.objects.get(pool_account_id=pool_id).social_account_id
    PlatformIdentity.objects.filter(bindings__pk=account_id).update(display_name="Old Name")
    customer_link = start(owner, "tiktok")
    customer_callback = consent("tiktok", customer_link["authorizeUrl"], handle)
    staff_callback = urlsplit(consent("tiktok", start_connect(staff, pool_id)["Location"], handle))

    # The customer's callback stops right after writing the new profile, its transaction open, until the staff
    # one queues on a lock it holds (the binding's; the identity's before).
    race, save = SecondQueuesBehindFirst('"accounts_'), PlatformIdentity.save

    def save_then_hold(identity, *args, **kwargs):
        save(identity, *args, **kwargs)
        race.hold()

    monkeypatch.setattr(PlatformIdentity, "save", save_then_hold)
    staff.raise_request_exception = False
    customer, reconnected = race.run(
        lambda: follow_callback(customer_callback), lambda: staff.get(f"{staff_callback.path}?{staff_callback.query}")
    )
    answers = {"customer": customer, "staff": reconnected}

    assert race.overlapped  # the two callbacks did overlap
    assert "layers_oauth_error" not in answers["customer"]["Location"]
    assert status(owner, customer_link["state"])["socialAccountId"] == account_id
    assert answers["staff"].status_code == 302, answers["staff"].content[:500]
    assert f"Connected on TikTok as @{handle}" in staff.get(answers["staff"]["Location"]).content.decode()
    assert OAuthSession.objects.get(pool_account_id=pool_id).status == "completed"
    assert Event.objects.filter(type="social_account.reconnected", data__id=account_id).count() == 1


def test_consenting_as_another_tiktok_user_is_an_account_mismatch_and_changes_nothing(staff):
    (pool_id,) = add_pool(1)
    before = PoolAccount.objects.get(pk=pool_id)

    back, landed = connect_on_tiktok(staff, pool_id, "somebody.else")

    assert back["Location"] == admin_object_url(PoolAccount, pool_id)
    assert "account_mismatch" in landed.content.decode() or "another TikTok user" in landed.content.decode()
    after = PoolAccount.objects.get(pk=pool_id)
    assert (after.platform_user_id, after.handle, after.status) == (before.platform_user_id, before.handle, "available")
    assert after.access_token == before.access_token and after.refresh_token == before.refresh_token
    session = OAuthSession.objects.get(pool_account_id=pool_id)
    assert (session.status, session.error_code) == ("failed", "account_mismatch")
    # The grant that other user just gave is bound to nothing: withdrawn at TikTok, not left live.
    assert not SandboxToken.objects.filter(username="somebody.else", revoked_at__isnull=True).exists()


@pytest.mark.parametrize(
    "granted, missing",
    [
        ("user.info.basic,user.info.profile", "video.publish and video.upload"),
        # Either one alone too: a partner leasing the account posts in both modes, and the mode the grant
        # lacks failed every such post after ops were told "the partner's posts publish with it".
        ("user.info.basic,user.info.profile,video.upload", "video.publish"),
        ("user.info.basic,user.info.profile,video.publish", "video.upload"),
    ],
)
def test_a_pool_connect_granted_without_the_publishing_scopes_is_refused_and_changes_nothing(staff, granted, missing):
    # A pool account is leased to partners to post with, in publish and in draft mode: a grant without both
    # publishing scopes would be leased and fail posts, so it is refused, naming what was unticked.
    (pool_id,) = add_pool(1)
    before = PoolAccount.objects.get(pk=pool_id)
    started = start_connect(staff, pool_id)
    narrowed = re.sub(r"scope=[^&]*", f"scope={granted}", started["Location"])
    location = consent("tiktok", narrowed, before.handle)
    parts = urlsplit(location)

    back = staff.get(f"{parts.path}?{parts.query}")

    assert back["Location"] == admin_object_url(PoolAccount, pool_id)
    page = staff.get(back["Location"]).content.decode()
    assert "without the publishing permission" in page and f"({missing} unticked)" in page
    after = PoolAccount.objects.get(pk=pool_id)
    assert (after.status, after.access_token, after.refresh_token) == (
        "available",
        before.access_token,
        before.refresh_token,
    )
    session = OAuthSession.objects.get(pool_account_id=pool_id)
    assert (session.status, session.error_code) == ("failed", "access_denied")


def test_staff_without_the_change_permission_on_pool_accounts_cannot_start_a_connect(db):
    (pool_id,) = add_pool(1)
    viewer = get_user_model().objects.create_user(username="support", password="pw-12345678", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(content_type__app_label="leasing", codename="view_poolaccount"))
    client = Client()
    client.force_login(viewer)

    assert "Connect on TikTok" not in client.get(admin_object_url(PoolAccount, pool_id)).content.decode()
    assert start_connect(client, pool_id).status_code == 403
    assert not OAuthSession.objects.exists()


@pytest.mark.parametrize("superuser", [True, False], ids=["superuser", "pool-account editor"])
def test_staff_who_must_use_mfa_cannot_start_a_connect_before_setting_it_up(db, superuser):
    # Connecting puts tokens on Layers' accounts (a leased one's: the partner's binding): whoever can change
    # pool accounts must use MFA, not only superusers.
    (pool_id,) = add_pool(1)
    if superuser:
        ops = get_user_model().objects.create_superuser("no.mfa", "no.mfa@layers.test", "pw-ops-12345")
    else:
        ops = get_user_model().objects.create_user("pool.editor", password="pw-ops-12345", is_staff=True)
        for codename in ("view_poolaccount", "change_poolaccount"):
            ops.user_permissions.add(Permission.objects.get(content_type__app_label="leasing", codename=codename))
    client = Client()
    client.force_login(ops)  # a password only

    response = start_connect(client, pool_id)

    assert response.status_code == 302 and response["Location"] == reverse("mfa_activate_totp")
    assert not OAuthSession.objects.exists()


def test_a_pool_connect_state_is_no_partner_state_and_shows_no_token(staff, owner):
    (pool_id,) = add_pool(1)
    handle = PoolAccount.objects.get(pk=pool_id).handle
    started = start_connect(staff, pool_id)
    state = state_of(started["Location"])
    assert owner.client.get(f"/v1/social/oauth-status/{state}").status_code == 404

    parts = urlsplit(consent("tiktok", started["Location"], handle))
    callback = f"{parts.path}?{parts.query}"
    back = staff.get(callback)
    landed = staff.get(back["Location"])

    assert OAuthSession.objects.get(pk=state).status == "completed"
    assert owner.client.get(f"/v1/social/oauth-status/{state}").status_code == 404
    token = PoolAccount.objects.get(pk=pool_id).access_token
    assert token and token not in back["Location"] and token not in landed.content.decode()
    sessions = staff.get("/admin/accounts/oauthsession/").content.decode()
    assert "pool" in sessions and token not in sessions and state not in sessions
    # A used state behaves as any: the callback says so, here on the pool account's page, and changes nothing.
    again = staff.get(callback)
    assert again["Location"] == admin_object_url(PoolAccount, pool_id)
    assert "already used" in staff.get(again["Location"]).content.decode()
    assert PoolAccount.objects.get(pk=pool_id).access_token == token


@pytest.mark.parametrize("browser", ["anonymous", "another staff member"])
def test_a_pool_connect_completes_only_in_the_browser_of_the_staff_member_who_started_it(staff, browser):
    """The state in the authorize URL is no proof of who consents: a leaked link (a screenshot, a paste in a
    chat) completed in another browser would put whoever consented into Layers' pool. The callback of a pool
    connect refuses anyone but the staff member who started it, signed in, without exchanging the code: the
    state stays pending, so the staff member can still finish in their own browser."""
    (pool_id,) = add_pool(1)
    before = PoolAccount.objects.get(pk=pool_id)
    started = start_connect(staff, pool_id)
    state = state_of(started["Location"])
    parts = urlsplit(consent("tiktok", started["Location"], before.handle))
    callback = f"{parts.path}?{parts.query}"
    other = Client()
    if browser == "another staff member":
        colleague = with_mfa(get_user_model().objects.create_superuser("ops2", "ops2@layers.test", "pw-ops-12345"))
        staff_login(other, colleague)

    refused = other.get(callback)

    assert refused.status_code == 403 and not refused.has_header("Location")
    assert "only the staff member who started it" in refused.content.decode()
    after = PoolAccount.objects.get(pk=pool_id)
    assert (after.access_token, after.refresh_token) == (before.access_token, before.refresh_token)
    session = OAuthSession.objects.get(pk=state)
    assert (session.status, session.error_code, session.completed_at) == ("pending", "", None)
    assert not Event.objects.exists()

    # The code was not spent: the staff member who started the connect finishes it.
    back = staff.get(callback)
    assert back["Location"] == admin_object_url(PoolAccount, pool_id)
    assert f"Connected on TikTok as @{before.handle}" in staff.get(back["Location"]).content.decode()
    assert OAuthSession.objects.get(pk=state).status == "completed"
    assert PoolAccount.objects.get(pk=pool_id).access_token != before.access_token


def test_a_pool_connect_whose_staff_member_was_deleted_cannot_be_completed(staff):
    (pool_id,) = add_pool(1)
    started = start_connect(staff, pool_id)
    parts = urlsplit(consent("tiktok", started["Location"], PoolAccount.objects.get(pk=pool_id).handle))
    OAuthSession.objects.filter(pk=state_of(started["Location"])).update(staff_user=None)

    assert staff.get(f"{parts.path}?{parts.query}").status_code == 403
    assert OAuthSession.objects.get(pk=state_of(started["Location"])).status == "pending"


def test_a_pool_connect_whose_staff_member_lost_the_permission_cannot_be_completed(staff):
    """Started while allowed to change pool accounts; the permission is taken away before TikTok sends the
    browser back (a role change, a leaver): the callback no longer puts anyone into the pool."""
    (pool_id,) = add_pool(1)
    before = PoolAccount.objects.get(pk=pool_id)
    started = start_connect(staff, pool_id)
    parts = urlsplit(consent("tiktok", started["Location"], before.handle))
    get_user_model().objects.filter(username="ops").update(is_superuser=False)  # no permission left

    assert staff.get(f"{parts.path}?{parts.query}").status_code == 403
    assert OAuthSession.objects.get(pk=state_of(started["Location"])).status == "pending"
    assert PoolAccount.objects.get(pk=pool_id).access_token == before.access_token


def test_pool_and_lease_lists_find_what_ops_paste(db, owner):
    from leasing import services as leasing
    from leasing.models import Lease

    (pool_id,) = add_pool(1)
    handle = PoolAccount.objects.get(pk=pool_id).handle
    leasing.lease_assign(request_id=request_accounts(owner, 1)["requestId"], auto=True)
    lease = Lease.objects.get(pool_account_id=pool_id)
    ops = Client()
    staff_login(ops, with_mfa(get_user_model().objects.create_superuser("finder", "f@layers.test", "pw-ops-12345")))

    def found(listing: str, term: str) -> int:
        return ops.get(f"/admin/leasing/{listing}/", {"q": term}).context["cl"].result_count

    assert found("poolaccount", f"@{handle}") == found("poolaccount", pool_id) == 1
    assert found("lease", f"@{handle}") == found("lease", lease.social_account_id) == found("lease", owner.org.pk) == 1
    assert found("leaserequest", lease.request_id) == 1
    # From a partner's ticket, ops hold the request id or the leased account's id: each finds the other.
    assert found("lease", lease.request_id) == found("lease", lease.project_id) == 1
    capitalised = "S" + lease.social_account_id[1:]  # copied from an admin message
    assert found("leaserequest", lease.social_account_id) == found("leaserequest", capitalised) == 1


# --- Re-importing accounts already in the pool -------------------------------------------------------


def import_csv(staff, csv_text: str):
    """Upload `csv_text`, then confirm its preview, as ops do."""
    preview = upload(staff, csv_text)
    assert preview.status_code == 200 and preview.context.get("confirm_form"), preview.content.decode()[:2000]
    confirm = preview.context["confirm_form"]
    done = staff.post("/admin/leasing/poolaccount/process_import/", {**confirm.initial})
    assert done.status_code in (200, 302), done.content.decode()[:2000]


def csv_row(pool: PoolAccount, price: int) -> str:
    return f"{pool.handle},{pool.vertical},{';'.join(pool.languages)},{';'.join(pool.geos)},{price},,warm\n"


@pytest.mark.parametrize("platforms", ["sandbox", "live"])
def test_reimporting_a_leased_account_changes_its_niche_and_price_not_its_lease(staff, owner, platforms):
    """A CSV updating the prices of the pool, leased accounts included, gave a leased account (whose token is
    with the partner's binding) a second token in sandbox mode, and in live mode retired it as "imported
    without tokens", so that it never came back to the pool after its release."""
    (pool_id,) = add_pool(1)
    services.lease_assign(request_id=request_accounts(owner, 1)["requestId"], auto=True)
    pool = PoolAccount.objects.get(pk=pool_id)
    assert pool.status == "leased" and not pool.access_token

    with override_settings(LAYERS_PLATFORMS=platforms):
        import_csv(staff, HEADER + csv_row(pool, 6900))

    pool.refresh_from_db()
    assert pool.monthly_price_cents == 6900  # what the import is for
    assert (pool.status, pool.status_note, pool.access_token_enc) == ("leased", "", "")


@pytest.mark.django_db(transaction=True)
def test_an_import_does_not_write_back_a_state_an_assignment_changed_while_it_ran(staff, owner, monkeypatch):
    """The import reads each existing row, then saves it: an account assigned in between (its status now
    leased, its token moved to the partner's binding) was written back available with its token, to be leased
    to the next partner too. The import writes only the columns it imports."""
    from leasing.admin import PoolAccountResource
    from tests.concurrency import run_in_threads

    (pool_id,) = add_pool(1)
    pool = PoolAccount.objects.get(pk=pool_id)
    request_id = request_accounts(owner, 1)["requestId"]
    real_import_instance = PoolAccountResource.import_instance
    assigned = []

    def assigned_meanwhile(self, instance, row, **kwargs):
        # Between the import's read of the row and its save, on another connection: an ops colleague assigns.
        if not kwargs.get("dry_run") and not assigned:
            assigned.append(run_in_threads(lambda: services.lease_assign(request_id=request_id, auto=True).status))
        return real_import_instance(self, instance, row, **kwargs)

    monkeypatch.setattr(PoolAccountResource, "import_instance", assigned_meanwhile)

    import_csv(staff, HEADER + csv_row(pool, 6900))

    assert assigned == [["assigned"]]
    pool.refresh_from_db()
    assert pool.monthly_price_cents == 6900
    assert pool.status == "leased" and pool.access_token_enc == ""
    assert Lease.objects.filter(pool_account_id=pool_id, released_at__isnull=True).count() == 1


def test_a_view_only_pool_account_page_shows_its_languages_and_geos(db):
    """Ops who may only view pool accounts read "Languages text: None" and "Geos text: None" on an account's
    page (the edit form's text fields, looked up on the account); they now read its languages and geos."""
    (pool_id,) = add_pool(1, language="en-GB", geos=("US", "CA"))
    viewer = get_user_model().objects.create_user(username="viewer", password="pw-12345678", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(content_type__app_label="leasing", codename="view_poolaccount"))
    client = staff_login(Client(), viewer)

    page = client.get(admin_object_url(PoolAccount, pool_id))

    assert page.status_code == 200
    shown = {
        line.field["label"]: str(line.contents())
        for fieldset in page.context["adminform"]
        for line in (f for row in fieldset for f in row)
        if line.is_readonly
    }
    assert shown.get("Languages") == "en-GB" and shown.get("Geos") == "US, CA", shown
