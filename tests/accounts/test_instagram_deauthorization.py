"""Instagram's Deauthorize callback and Data deletion request callback (Meta requires both before app review): a
person who removes the app in Instagram makes every live binding of theirs need a reauth at once, as TikTok's
authorization.removed does; one who also asks for their data to be deleted gets what Layers keeps about them
erased, and a confirmation code with a page to check it. Only requests signed with the app secret count."""

import base64
import hashlib
import hmac
import json
import logging
import time
from urllib.parse import urlsplit

import httpx
import pytest
from django.conf import settings
from django.core.files.storage import default_storage
from django.test import Client

from accounts import services
from accounts.models import DataDeletionRequest, Event, PlatformIdentity, SocialAccount, SocialAccountStatusChange
from accounts.platforms.sandbox.identities import instagram_scoped_id, instagram_user_id
from tests.accounts.oauth_helpers import connected_account, reauthorize
from tests.conftest import assert_error
from tests.platform_helpers import intercepted
from tests.staff import admin_object_url, staff_login, superuser

pytestmark = pytest.mark.django_db(transaction=True)

DEAUTHORIZE = "/platform-webhooks/instagram/deauthorize"
DATA_DELETION = "/platform-webhooks/instagram/data-deletion"
CALLBACKS = [DEAUTHORIZE, DATA_DELETION]


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def signed_request(payload, *, secret: str | None = None, raw: bytes | None = None) -> str:
    """What Meta posts: <base64url(HMAC-SHA256(app secret, encoded payload))>.<base64url(payload JSON)>."""
    encoded = b64url(json.dumps(payload).encode() if raw is None else raw)
    key = (secret or settings.LAYERS_INSTAGRAM_CLIENT_SECRET).encode()
    return f"{b64url(hmac.new(key, encoded.encode(), hashlib.sha256).digest())}.{encoded}"


def payload_for(username: str, *, issued_at: int | None = None, **overrides) -> dict:
    return {
        "algorithm": "HMAC-SHA256",
        "issued_at": int(time.time()) if issued_at is None else issued_at,
        "user_id": instagram_user_id(username),
        **overrides,
    }


def post(url: str, value: str | None):
    # Meta posts a form, one field.
    return Client(raise_request_exception=False).post(url, {} if value is None else {"signed_request": value})


def control(username: str, **extra) -> dict:
    response = Client().post(
        "/sandbox/instagram/_control/deauthorize", {"username": username, **extra}, content_type="application/json"
    )
    assert response.status_code == 200, response.content
    return response.json()


def statuses(*ids) -> list[str]:
    return [SocialAccount.objects.get(pk=i).status for i in ids]


def media_name(url: str) -> str:
    path = urlsplit(url).path
    assert path.startswith(settings.MEDIA_URL), url
    return path[len(settings.MEDIA_URL) :]


def test_removing_the_app_in_instagram_flips_every_live_binding_of_that_user_once(owner, outsider):
    mine = connected_account(owner, "instagram", "ig.leaver")
    second_project = connected_account(owner, "instagram", "ig.leaver", project=owner.projects[1])
    other_org = connected_account(outsider, "instagram", "ig.leaver", return_url="https://globex.test/back")
    same_handle_on_tiktok = connected_account(owner, "tiktok", "ig.leaver")
    someone_else = connected_account(owner, "instagram", "ig.stayer")

    answer = control("ig.leaver")

    assert answer["invalidated"] >= 1
    assert answer["webhook"]["status"] == 200 and answer["webhook"]["url"].endswith(DEAUTHORIZE)
    assert "dataDeletion" not in answer
    assert statuses(mine["id"], second_project["id"], other_org["id"]) == ["reauth_required"] * 3
    assert statuses(same_handle_on_tiktok["id"], someone_else["id"]) == ["connected", "connected"]
    # The partner gets the event TikTok's removal sends, and support reads where it came from.
    flipped = Event.objects.filter(type="social_account.needs_reauth")
    assert sorted(e.data["id"] for e in flipped) == sorted([mine["id"], second_project["id"], other_org["id"]])
    assert {e.organization_id for e in flipped} == {owner.org.id, outsider.org.id}
    change = SocialAccountStatusChange.objects.filter(social_account_id=mine["id"]).latest("at", "id")
    assert change.source == "Instagram's deauthorize callback"
    body = owner.client.get(f"/v1/social-accounts/{mine['id']}").json()
    assert body["status"] == "reauth_required" and body["reauthRequiredAt"]
    # Deauthorizing is not a deletion request: the profile stays, a reauth brings the account back.
    assert body["handle"] == "ig.leaver" and body["avatarUrl"]
    assert not DataDeletionRequest.objects.exists()

    # A repeat changes nothing and is still answered 200.
    again = control("ig.leaver")
    assert again["webhook"]["status"] == 200
    assert Event.objects.filter(type="social_account.needs_reauth").count() == 3


def test_a_reauth_after_the_removal_survives_a_late_delivery(owner):
    account = connected_account(owner, "instagram", "ig.returner")
    removed_a_minute_ago = signed_request(payload_for("ig.returner", issued_at=int(time.time()) - 60))

    assert post(DEAUTHORIZE, removed_a_minute_ago).json() == {"received": True, "applied": False}
    assert statuses(account["id"]) == ["connected"]


def test_a_valid_request_for_an_unknown_user_is_acknowledged(owner):
    account = connected_account(owner, "instagram", "ig.bystander")

    assert post(DEAUTHORIZE, signed_request(payload_for("ig.nobody"))).json() == {"received": True, "applied": False}
    answer = post(DATA_DELETION, signed_request(payload_for("ig.nobody")))

    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"url", "confirmation_code"} and body["confirmation_code"]
    page = Client().get(urlsplit(body["url"]).path)
    assert page.status_code == 200 and b"completed" in page.content
    assert statuses(account["id"]) == ["connected"]


@pytest.mark.parametrize("url", CALLBACKS)
def test_only_requests_signed_by_meta_for_this_app_are_applied(owner, url):
    account = connected_account(owner, "instagram", "ig.target")
    good = signed_request(payload_for("ig.target"))
    signature, payload = good.split(".")

    # Not signed with this app's secret, or a payload changed after signing.
    assert_error(
        post(url, signed_request(payload_for("ig.target"), secret="an-attackers-guess")), 401, "INVALID_SIGNATURE"
    )
    other = b64url(json.dumps(payload_for("ig.bystander")).encode())
    assert_error(post(url, f"{signature}.{other}"), 401, "INVALID_SIGNATURE")
    assert_error(post(url, f"{b64url(b'x' * 32)}.{payload}"), 401, "INVALID_SIGNATURE")
    # Signed, but not with the algorithm it names.
    for algorithm in ("HMAC-SHA1", "none", None):
        assert_error(
            post(url, signed_request(payload_for("ig.target", algorithm=algorithm))), 400, "UNSUPPORTED_ALGORITHM"
        )
    # Missing or malformed: a 400 saying what is wrong, never a 500.
    assert_error(post(url, None), 400, "MALFORMED_REQUEST")
    for malformed in (
        "",
        payload,  # no signature part
        f"{signature}.",
        f".{payload}",
        f"{signature}.{payload}.extra",
        f"{signature}!.{payload}",
        f"{signature}.{payload}\u00e9",
        f"{signature[:-1]}.{payload}",  # a signature of the wrong length
        "a" * 5 + "." + "b" * 5,  # base64 that no byte string encodes
        "A" * 10_000 + "." + payload,
        signed_request(None, raw=b"\xff\xfe not json"),
        signed_request(["not", "an", "object"]),
        signed_request({"algorithm": "HMAC-SHA256", "issued_at": 1700000000}),  # no user_id
        signed_request(payload_for("ig.target", user_id="")),
        signed_request(payload_for("ig.target", user_id=["1"])),
        signed_request(payload_for("ig.target", user_id="1\u00002")),
        signed_request(payload_for("ig.target", user_id="1\ud800")),
        signed_request(payload_for("ig.target", user_id="9" * 200)),
        signed_request(payload_for("ig.target", issued_at="yesterday")),
        signed_request(payload_for("ig.target", issued_at=10**20)),
        signed_request(None, raw=b"[" * 5000 + b"]" * 5000),
        signed_request(None, raw=b'{"a":' * 5000 + b"1" + b"}" * 5000),
    ):
        assert_error(post(url, malformed), 400, "MALFORMED_REQUEST")
    # Two values of the one field: which one Meta meant cannot be known.
    two = Client().post(
        url, f"signed_request={good}&signed_request={good}", content_type="application/x-www-form-urlencoded"
    )
    assert_error(two, 400, "MALFORMED_REQUEST")
    assert_error(Client().get(url), 405, "METHOD_NOT_ALLOWED")
    form = "application/x-www-form-urlencoded"
    lenient = Client(raise_request_exception=False)
    too_big = f"signed_request={good}&pad=" + "x" * settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    too_many = (
        "&".join(f"f{i}=1" for i in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1)) + f"&signed_request={good}"
    )
    for body in (too_big, too_many, b"signed_request=\xff\xfe." + payload.encode()):
        assert_error(lenient.post(url, body, content_type=form), 400, "MALFORMED_REQUEST")

    assert statuses(account["id"]) == ["connected"]
    assert not Event.objects.filter(type="social_account.needs_reauth").exists()
    assert not DataDeletionRequest.objects.exists()
    # The valid one is applied: the checks above refused for their reason, not for any request.
    assert post(url, good).status_code == 200
    assert statuses(account["id"]) == ["reauth_required"]


@pytest.mark.parametrize("url", CALLBACKS)
def test_no_app_secret_configured_is_a_503_not_a_pass(owner, url, settings):
    settings.LAYERS_INSTAGRAM_CLIENT_SECRET = ""
    forged = signed_request(payload_for("ig.target"), secret="")
    assert_error(post(url, forged), 503, "NOT_CONFIGURED")


def test_a_data_deletion_request_erases_the_person_and_answers_a_code_with_a_status_page(owner, outsider, caplog):
    caplog.set_level(logging.DEBUG)
    mine = connected_account(owner, "instagram", "ig.erased")
    second_project = connected_account(owner, "instagram", "ig.erased", project=owner.projects[1])
    other_org = connected_account(outsider, "instagram", "ig.erased", return_url="https://globex.test/back")
    same_handle_on_tiktok = connected_account(owner, "tiktok", "ig.erased")
    ids = [mine["id"], second_project["id"], other_org["id"]]
    rows = {pk: SocialAccount.objects.get(pk=pk) for pk in ids}
    tokens = [row.access_token for row in rows.values()]
    avatars = [media_name(row.avatar_url) for row in rows.values()]
    assert all(tokens) and all(default_storage.exists(name) for name in avatars)
    user_id = instagram_user_id("ig.erased")

    answer = control("ig.erased", deleteData=True)

    deletion = answer["dataDeletion"]
    assert deletion["status"] == 200 and deletion["url"].endswith(DATA_DELETION)
    code, status_url = deletion["answer"]["confirmation_code"], deletion["answer"]["url"]
    assert status_url == f"{settings.LAYERS_PUBLIC_URL}/data-deletion/{code}"
    # The deauthorize effect ...
    assert statuses(*ids) == ["reauth_required"] * 3
    assert statuses(same_handle_on_tiktok["id"]) == ["connected"]
    # ... and the erasure: no token, no picture, no name, in every organization.
    for pk in ids:
        row = SocialAccount.objects.get(pk=pk)
        assert (row.access_token_enc, row.refresh_token_enc, row.avatar_url) == ("", "", "")
        shown = owner.client.get(f"/v1/social-accounts/{pk}") if row.organization_id == owner.org.id else None
        if shown is not None:
            body = shown.json()
            assert (body["handle"], body["displayName"], body["avatarUrl"]) == ("", "", None)
    assert not any(default_storage.exists(name) for name in avatars)
    for identity in PlatformIdentity.objects.filter(platform="instagram", platform_user_id=user_id):
        assert (identity.handle, identity.display_name) == ("", "")
    # The TikTok account of the same handle is another person's grant: untouched.
    tiktok = SocialAccount.objects.get(pk=same_handle_on_tiktok["id"])
    assert tiktok.access_token and tiktok.avatar_url and tiktok.identity.handle == "ig.erased"

    row = DataDeletionRequest.objects.get()
    assert row.confirmation_code == code and row.platform == "instagram"

    page = Client().get(urlsplit(status_url).path)
    assert page.status_code == 200
    text = page.content.decode()
    assert code in text and "completed" in text and row.completed_at.date().isoformat() in text
    for personal in ("ig.erased", "Ig Erased", user_id, *tokens):
        assert personal not in text
    unknown = Client().get("/data-deletion/NOSUCHCODE0000")
    assert unknown.status_code == 404 and b"No data deletion request has this confirmation code" in unknown.content
    # Nothing of the tokens or of the signed request reaches the logs.
    for secret in (*tokens, settings.LAYERS_INSTAGRAM_CLIENT_SECRET):
        assert secret not in caplog.text


@pytest.mark.parametrize(
    "code",
    [
        "%00",  # PostgreSQL cannot hold a NUL: the lookup was a DataError, a 500
        "%ED%A0%80",  # a lone surrogate, as UTF-8 bytes
        "A" * 5000,
        "%20" + "0" * 20,
        "0" * 19,
        "G" * 20,  # not hex
        "ABCDEF0123456789ABCD%0A",
    ],
    ids=["nul", "surrogate", "long", "space", "short", "not-hex", "newline"],
)
def test_the_status_page_of_a_code_of_another_shape_is_the_unknown_code_page_without_a_query(
    code, django_assert_num_queries
):
    # Anyone may type anything after /data-deletion/: only the shape the service issues is looked up.
    with django_assert_num_queries(0):
        page = Client(raise_request_exception=False).get(f"/data-deletion/{code}")
    assert page.status_code == 404
    assert b"No data deletion request has this confirmation code" in page.content


def test_the_status_page_finds_a_code_typed_in_lower_case(owner):
    connected_account(owner, "instagram", "ig.typed")
    code = post(DATA_DELETION, signed_request(payload_for("ig.typed"))).json()["confirmation_code"]

    page = Client().get(f"/data-deletion/{code.lower()}")

    assert page.status_code == 200 and code in page.content.decode()


def test_a_deletion_request_alone_also_flips_and_tells_the_partner_nothing_it_erased(owner):
    # Meta may send the data deletion request without (or before) the deauthorize callback.
    account = connected_account(owner, "instagram", "ig.alone")

    assert post(DATA_DELETION, signed_request(payload_for("ig.alone"))).status_code == 200

    assert statuses(account["id"]) == ["reauth_required"]
    event = Event.objects.get(type="social_account.needs_reauth")
    assert (event.data["id"], event.data["handle"], event.data["displayName"], event.data["avatarUrl"]) == (
        account["id"],
        "",
        "",
        None,
    )
    change = SocialAccountStatusChange.objects.filter(social_account_id=account["id"]).latest("at", "id")
    assert change.source == "Instagram's data deletion request callback"


def test_a_deletion_request_older_than_the_consent_leaves_that_consent_alone(owner):
    # Meta delivers late: a request issued a minute before the person connected (again) erases nothing of it.
    account = connected_account(owner, "instagram", "ig.newer")
    late = signed_request(payload_for("ig.newer", issued_at=int(time.time()) - 60))

    assert post(DATA_DELETION, late).status_code == 200

    row = SocialAccount.objects.get(pk=account["id"])
    assert row.status == "connected" and row.access_token and row.avatar_url
    assert (row.identity.handle, row.identity.display_name) == ("ig.newer", "Ig Newer")
    assert DataDeletionRequest.objects.get().accounts_erased == 0


def test_the_same_deletion_request_twice_does_nothing_more(owner):
    account = connected_account(owner, "instagram", "ig.twice")
    request = signed_request(payload_for("ig.twice"))

    first = post(DATA_DELETION, request)
    assert first.status_code == 200
    # The person consents again (same binding, within the request's second); Meta's request, sent again, must
    # not erase the new grant.
    reauthorize(owner, account["id"], "instagram", "ig.twice")
    assert statuses(account["id"]) == ["connected"]
    events, changes = Event.objects.count(), SocialAccountStatusChange.objects.count()
    token = SocialAccount.objects.get(pk=account["id"]).access_token

    second = post(DATA_DELETION, request)

    assert second.status_code == 200 and second.json() == first.json()
    assert DataDeletionRequest.objects.count() == 1
    assert (Event.objects.count(), SocialAccountStatusChange.objects.count()) == (events, changes)
    row = SocialAccount.objects.get(pk=account["id"])
    assert row.status == "connected" and row.access_token == token and row.identity.handle == "ig.twice"


def test_the_service_is_one_for_both_platforms(owner):
    # TikTok's authorization.removed and Instagram's deauthorize go through the same service.
    tiktok = connected_account(owner, "tiktok", "both.ways")
    instagram = connected_account(owner, "instagram", "both.ways")
    row = SocialAccount.objects.get(pk=instagram["id"])
    flipped = services.platform_authorization_removed(
        platform="instagram", platform_user_id=row.identity.platform_user_id, removed_at=row.token_refreshed_at
    )
    assert flipped == [instagram["id"]]
    assert statuses(tiktok["id"], instagram["id"]) == ["connected", "reauth_required"]


def test_sandbox_instagram_deauthorize_control_validates_its_input():
    def call(body):
        return Client().post("/sandbox/instagram/_control/deauthorize", body, content_type="application/json")

    assert call({}).status_code == 422
    assert call({"username": "ok.name", "deleteData": "yes"}).status_code == 422
    assert call({"username": "ok.name", "reason": 1}).status_code == 422  # TikTok's field
    assert call({"username": "nobody.here"}).json()["webhook"]["status"] == 200


# Which of Instagram's ids Meta's signed request carries for Instagram Login is not documented: /me's `user_id`
# (the professional account id Layers publishes with) or the app-scoped id (/me's `id`, and maybe the code
# exchange's `user_id`). Layers records all of them at connect and matches the request against any.
ID_KINDS = ["user_id", "app_scoped"]


def id_of(username: str, kind: str) -> str:
    return instagram_user_id(username) if kind == "user_id" else instagram_scoped_id(username)


# What the log says matched: the sandbox's code exchange answers /me's `user_id`, so that id is both kinds.
MATCHED = {"user_id": "user_id+token", "app_scoped": "app_scoped"}


def deauthorize_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("instagram deauthorize:")]


@pytest.mark.parametrize("id_kind", ID_KINDS)
def test_deauthorize_finds_the_person_by_whichever_id_meta_sends(owner, outsider, id_kind, caplog):
    caplog.set_level(logging.INFO)
    mine = connected_account(owner, "instagram", "ig.either")
    other_org = connected_account(outsider, "instagram", "ig.either", return_url="https://globex.test/back")
    someone_else = connected_account(owner, "instagram", "ig.stayer")

    answer = control("ig.either", idKind=id_kind)

    assert answer["webhook"]["status"] == 200
    assert statuses(mine["id"], other_org["id"]) == ["reauth_required"] * 2
    assert statuses(someone_else["id"]) == ["connected"]
    assert Event.objects.filter(type="social_account.needs_reauth").count() == 2
    # Ops read which id Meta sent, not the id itself: it names a person, and the log outlives a deletion.
    assert deauthorize_lines(caplog) == [
        f"instagram deauthorize: 2 binding(s) now need a reauth (matched {MATCHED[id_kind]})"
    ]
    assert id_of("ig.either", id_kind) not in caplog.text


@pytest.mark.parametrize("id_kind", ID_KINDS)
def test_a_data_deletion_finds_the_person_by_whichever_id_and_keeps_the_ids_a_later_request_names(
    owner, outsider, id_kind, caplog
):
    caplog.set_level(logging.INFO)
    mine = connected_account(owner, "instagram", "ig.gone")
    other_org = connected_account(outsider, "instagram", "ig.gone", return_url="https://globex.test/back")
    someone_else = connected_account(owner, "instagram", "ig.stayer")

    answer = control("ig.gone", deleteData=True, idKind=id_kind)

    assert answer["dataDeletion"]["status"] == 200 and answer["dataDeletion"]["answer"]["confirmation_code"]
    assert DataDeletionRequest.objects.get().accounts_erased == 2
    for pk in (mine["id"], other_org["id"]):
        row = SocialAccount.objects.select_related("identity").get(pk=pk)
        assert row.status == "reauth_required"
        assert (row.access_token_enc, row.refresh_token_enc, row.avatar_url) == ("", "", "")
        assert (row.identity.handle, row.identity.display_name) == ("", "")
        # Kept, as platform_user_id is: not a profile, and what a later request or a reconnect is matched by.
        assert (row.identity.platform_user_id, row.identity.app_scoped_id) == (
            instagram_user_id("ig.gone"),
            instagram_scoped_id("ig.gone"),
        )
    kept = SocialAccount.objects.get(pk=someone_else["id"])
    assert kept.status == "connected" and kept.access_token and kept.identity.handle == "ig.stayer"
    assert any(f"binding(s) erased (matched {MATCHED[id_kind]})" in r.getMessage() for r in caplog.records)
    assert id_of("ig.gone", id_kind) not in caplog.text

    # Meta's next request may name the person by the other id: it still finds them.
    other_kind = next(kind for kind in ID_KINDS if kind != id_kind)
    later = post(DATA_DELETION, signed_request(payload_for("ig.gone", user_id=id_of("ig.gone", other_kind))))
    assert later.status_code == 200
    assert DataDeletionRequest.objects.order_by("completed_at", "pk").last().accounts_erased == 2


@pytest.mark.parametrize("url", CALLBACKS)
def test_an_id_of_another_person_matches_nobody(owner, url):
    mine = connected_account(owner, "instagram", "ig.mine")

    for user_id in (instagram_user_id("ig.other"), instagram_scoped_id("ig.other"), "0"):
        assert post(url, signed_request(payload_for("ig.mine", user_id=user_id))).status_code == 200

    row = SocialAccount.objects.select_related("identity").get(pk=mine["id"])
    assert row.status == "connected" and row.access_token and row.avatar_url and row.identity.handle == "ig.mine"
    assert not Event.objects.filter(type="social_account.needs_reauth").exists()


def _exchange_answering_user_id(user_id: str):
    """An override of Instagram's code exchange: the sandbox's answer, naming the user by `user_id`."""

    def answer(request, sandbox):
        response = sandbox.handle_request(request)
        body = json.loads(response.read())
        return httpx.Response(response.status_code, json={**body, "user_id": int(user_id)})

    return answer


def test_the_code_exchanges_user_id_is_recorded_and_matched_too(owner, caplog):
    # Said to be the app-scoped id; a third number here, so that only a match on it can find the account.
    token_user_id = "31000000000000042"
    with intercepted({"/oauth/access_token": _exchange_answering_user_id(token_user_id)}):
        account = connected_account(owner, "instagram", "ig.tokenid")
    identity = SocialAccount.objects.get(pk=account["id"]).identity
    assert identity.platform_user_id == instagram_user_id("ig.tokenid")  # still /me's user_id: publishing uses it
    assert identity.token_user_id == token_user_id
    caplog.set_level(logging.INFO)

    answer = post(DEAUTHORIZE, signed_request(payload_for("ig.tokenid", user_id=token_user_id)))

    assert answer.json() == {"received": True, "applied": True}
    assert statuses(account["id"]) == ["reauth_required"]
    assert deauthorize_lines(caplog) == ["instagram deauthorize: 1 binding(s) now need a reauth (matched token)"]


def test_an_account_connected_before_the_ids_were_recorded_gets_them_at_its_next_profile_read_or_reauth(owner):
    account = connected_account(owner, "instagram", "ig.older")
    identity = SocialAccount.objects.get(pk=account["id"]).identity
    PlatformIdentity.objects.filter(pk=identity.pk).update(app_scoped_id="", token_user_id="")  # as it was stored
    by_app_scoped_id = signed_request(payload_for("ig.older", user_id=instagram_scoped_id("ig.older")))

    # Until then it is found by /me's user_id only.
    assert post(DEAUTHORIZE, by_app_scoped_id).json()["applied"] is False
    # The daily health check reads the profile: /me's id is recorded from it.
    assert services.social_account_check_health(account_id=account["id"]) == "healthy"
    assert PlatformIdentity.objects.get(pk=identity.pk).app_scoped_id == instagram_scoped_id("ig.older")
    assert post(DEAUTHORIZE, by_app_scoped_id).json()["applied"] is True

    # A reauth records them again (the code exchange's answer included).
    PlatformIdentity.objects.filter(pk=identity.pk).update(app_scoped_id="", token_user_id="")
    assert reauthorize(owner, account["id"], "instagram", "ig.older").status_code == 302
    assert statuses(account["id"]) == ["connected"]
    again = PlatformIdentity.objects.get(pk=identity.pk)
    assert again.app_scoped_id == instagram_scoped_id("ig.older")
    assert again.token_user_id == instagram_user_id("ig.older")  # what the sandbox's code exchange answers


def test_sandbox_instagram_deauthorize_control_takes_the_kind_of_id_to_send():
    def call(body):
        return Client().post("/sandbox/instagram/_control/deauthorize", body, content_type="application/json")

    assert call({"username": "ok.name", "idKind": "open_id"}).status_code == 422
    assert call({"username": "ok.name", "idKind": 1}).status_code == 422
    for kind in ID_KINDS:
        assert call({"username": "ok.name", "idKind": kind}).status_code == 200


def test_the_identitys_admin_page_shows_the_ids_support_is_quoted_and_no_token(owner):
    account = connected_account(owner, "instagram", "ig.support")
    row = SocialAccount.objects.get(pk=account["id"])
    staff = staff_login(Client(), superuser("ops"))

    page = staff.get(admin_object_url(PlatformIdentity, row.identity_id)).content.decode()
    # Meta's or the person's own message quotes one of them: support finds the identity by any.
    found = staff.get("/admin/accounts/platformidentity/", {"q": instagram_scoped_id("ig.support")}).content.decode()
    account_page = staff.get(admin_object_url(SocialAccount, row.pk)).content.decode()

    assert instagram_user_id("ig.support") in page and instagram_scoped_id("ig.support") in page
    assert 'name="app_scoped_id"' not in page and 'name="token_user_id"' not in page  # read-only
    assert row.identity_id in found and "0 platform identities" not in found
    for shown in (page, found, account_page):
        assert row.access_token not in shown and settings.LAYERS_INSTAGRAM_CLIENT_SECRET not in shown


def test_a_second_deletion_request_after_a_new_consent_erases_that_consent_too(owner):
    # The person deletes, connects again later, then removes the app and asks again: Meta signs a new request
    # (a new issued_at). It is a request of its own, with its own code, and it erases the new grant.
    account = connected_account(owner, "instagram", "ig.again")
    first = post(DATA_DELETION, signed_request(payload_for("ig.again")))
    assert first.status_code == 200
    reauthorize(owner, account["id"], "instagram", "ig.again")
    assert statuses(account["id"]) == ["connected"]

    second = post(DATA_DELETION, signed_request(payload_for("ig.again", issued_at=int(time.time()) + 2)))

    assert second.status_code == 200
    assert second.json()["confirmation_code"] != first.json()["confirmation_code"]
    assert DataDeletionRequest.objects.count() == 2
    row = SocialAccount.objects.get(pk=account["id"])
    assert row.status == "reauth_required"
    assert (row.access_token_enc, row.refresh_token_enc, row.avatar_url, row.identity.handle) == ("", "", "", "")


def test_no_notice_names_the_empty_id(owner):
    from django.utils import timezone

    # Instagram identities keep "" for an id Meta did not give, TikTok ones for ids TikTok has none of: a notice
    # naming "" (a caller that forgot to check) must match nobody, not every identity with an id left blank.
    tiktok = connected_account(owner, "tiktok", "blank.ids")
    instagram = connected_account(owner, "instagram", "blank.ids")
    for platform in ("tiktok", "instagram"):
        assert not services.platform_user_identities(platform=platform, platform_user_id="").exists()
        assert (
            services.platform_authorization_removed(platform=platform, platform_user_id="", removed_at=timezone.now())
            == []
        )
    assert statuses(tiktok["id"], instagram["id"]) == ["connected", "connected"]
