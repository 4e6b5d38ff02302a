"""TikTok's `authorization.removed` webhook: a user who removes the app in TikTok makes every live binding
of theirs need a reauth at once, not at its next failed call; only TikTok's signed deliveries count."""

import hashlib
import hmac
import json
import time

import pytest
from django.conf import settings
from django.test import Client

from accounts.models import Event, SocialAccount
from accounts.platforms.base import TokenInvalid
from accounts.platforms.sandbox.identities import tiktok_open_id
from accounts.platforms.tiktok import TikTokClient
from tests.accounts.oauth_helpers import connected_account, reauthorize
from tests.conftest import assert_error

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/platform-webhooks/tiktok"


def deauthorize(username: str, **extra) -> dict:
    response = Client().post(
        "/sandbox/tiktok/_control/deauthorize", {"username": username, **extra}, content_type="application/json"
    )
    assert response.status_code == 200, response.content
    return response.json()


def tiktok_signature(body: bytes, *, secret: str | None = None, t: int | None = None) -> str:
    """The header TikTok signs a delivery with (PLATFORMS.md): HMAC-SHA256(client secret, "<t>.<body>")."""
    t = int(time.time()) if t is None else t
    key = (secret or settings.LAYERS_TIKTOK_CLIENT_SECRET).encode()
    return f"t={t},s={hmac.new(key, f'{t}.'.encode() + body, hashlib.sha256).hexdigest()}"


def signed(payload: dict, *, secret: str | None = None, t: int | None = None) -> tuple[bytes, str]:
    body = json.dumps(payload).encode()
    return body, tiktok_signature(body, secret=secret, t=t)


def removal(username: str, *, create_time: int | None = None, **overrides) -> dict:
    return {
        "client_key": settings.LAYERS_TIKTOK_CLIENT_KEY,
        "event": "authorization.removed",
        "create_time": int(time.time()) if create_time is None else create_time,
        "user_openid": tiktok_open_id(username),
        "content": json.dumps({"reason": 1}),
        **overrides,
    }


def post(body: bytes, signature: str | None):
    headers = {"HTTP_TIKTOK_SIGNATURE": signature} if signature is not None else {}
    return Client().post(URL, body, content_type="application/json", **headers)


def statuses(*ids) -> list[str]:
    return [SocialAccount.objects.get(pk=i).status for i in ids]


def test_removing_the_app_in_tiktok_flips_every_live_binding_of_that_user_once(owner, outsider):
    mine = connected_account(owner, "tiktok", "leaver")
    second_project = connected_account(owner, "tiktok", "leaver", project=owner.projects[1])
    other_org = connected_account(outsider, "tiktok", "leaver", return_url="https://globex.test/back")
    same_handle_on_instagram = connected_account(owner, "instagram", "leaver")
    someone_else = connected_account(owner, "tiktok", "stayer")
    token = SocialAccount.objects.get(pk=mine["id"]).access_token

    answer = deauthorize("leaver")

    assert answer["invalidated"] >= 1
    assert answer["webhook"]["status"] == 200 and answer["webhook"]["url"].endswith(URL)
    assert statuses(mine["id"], second_project["id"], other_org["id"]) == ["reauth_required"] * 3
    assert statuses(same_handle_on_instagram["id"], someone_else["id"]) == ["connected", "connected"]
    flipped = Event.objects.filter(type="social_account.needs_reauth")
    assert sorted(e.data["id"] for e in flipped) == sorted([mine["id"], second_project["id"], other_org["id"]])
    assert {e.organization_id for e in flipped} == {owner.org.id, outsider.org.id}
    # The partner sees it on the account, as after a failed health check.
    body = owner.client.get(f"/v1/social-accounts/{mine['id']}").json()
    assert body["status"] == "reauth_required" and body["reauthRequiredAt"]
    # TikTok really stopped accepting the token.
    with pytest.raises(TokenInvalid):
        TikTokClient().get_profile(access_token=token)

    # TikTok delivers at least once: the same event again changes nothing and is still acknowledged.
    again = deauthorize("leaver")
    assert again["webhook"]["status"] == 200
    assert Event.objects.filter(type="social_account.needs_reauth").count() == 3


def test_a_reauth_after_the_removal_survives_a_late_or_repeated_delivery(owner):
    account = connected_account(owner, "tiktok", "returner")
    removed_at = int(time.time()) - 60  # the removal happened a minute ago; TikTok delivers it only now

    # The binding's token was stored after the removal (the user consented again since): it stays.
    assert post(*signed(removal("returner", create_time=removed_at))).status_code == 200
    assert statuses(account["id"]) == ["connected"]

    # A removal after the token was stored flips it; a reauth then brings it back on the same id ...
    late = removal("returner")
    assert post(*signed(late)).status_code == 200
    assert statuses(account["id"]) == ["reauth_required"]
    time.sleep(1.1)  # create_time has whole seconds; a real consent takes longer than this
    reauthorize(owner, account["id"], "tiktok", "returner")
    assert statuses(account["id"]) == ["connected"]
    # ... and TikTok's retry of that removal's delivery, signed anew, does not condemn the new token.
    assert post(*signed(late)).status_code == 200
    assert statuses(account["id"]) == ["connected"]
    assert Event.objects.filter(type="social_account.needs_reauth").count() == 1


@pytest.mark.parametrize("as_sent", [str, float], ids=["string", "float"])
def test_a_removal_whose_create_time_is_a_number_in_another_json_type_is_applied(owner, as_sent):
    # TikTok retries anything but a 200 for 72 hours: a create_time sent as "1764489600" was a 400 to every
    # delivery, and the removal was never applied (the binding failed its next post instead).
    account = connected_account(owner, "tiktok", "stringly")
    assert post(*signed(removal("stringly", create_time=as_sent(int(time.time()))))).status_code == 200
    assert statuses(account["id"]) == ["reauth_required"]


def test_a_revoked_binding_stays_disconnected(owner):
    account = connected_account(owner, "tiktok", "gone")
    assert owner.client.delete(f"/v1/social-accounts/{account['id']}").status_code == 200

    assert post(*signed(removal("gone"))).json() == {
        "received": True,
        "event": "authorization.removed",
        "applied": False,
    }
    assert statuses(account["id"]) == ["disconnected"]
    assert not Event.objects.filter(type="social_account.needs_reauth").exists()


def test_other_events_and_unknown_users_are_acknowledged_and_change_nothing(owner):
    account = connected_account(owner, "tiktok", "bystander")

    other_event = removal("bystander", event="video.publish.completed", content=json.dumps({"publish_id": "p"}))
    assert post(*signed(other_event)).json() == {"received": True, "event": "video.publish.completed", "applied": False}
    unknown = removal("bystander", user_openid="-000nobody")
    assert post(*signed(unknown)).json()["applied"] is False
    # PLATFORMS.md shows `content` as an object, TikTok's own docs as a serialized string: both are read.
    as_object = removal("bystander", content={"reason": 2})
    assert post(*signed(as_object)).json()["applied"] is True

    assert statuses(account["id"]) == ["reauth_required"]


def test_only_deliveries_signed_by_tiktok_for_this_app_are_applied(owner):
    account = connected_account(owner, "tiktok", "target")
    body, signature = signed(removal("target"))

    assert_error(post(body, None), 401, "INVALID_SIGNATURE")
    assert_error(post(body, "t=abc,s=def"), 401, "INVALID_SIGNATURE")
    # Garbled headers (a header value may carry Latin-1 bytes) are refused, not a 500.
    t, mac = signature.split(",")
    for garbled in (f"{t},s=\u00e9", "t=" + "9" * 5000 + f",{mac}", f"t=\u0661\u0662,{mac}", f"{t},{mac}\u00e9"):
        assert_error(post(body, garbled), 401, "INVALID_SIGNATURE")
    assert_error(post(*signed(removal("target"), secret="an-attackers-guess")), 401, "INVALID_SIGNATURE")
    tampered = body.replace(b"authorization.removed", b"authorization.removeD")
    assert_error(post(tampered, signature), 401, "INVALID_SIGNATURE")
    # A captured delivery replayed later: the signature is valid but too old (or from the future).
    assert_error(post(*signed(removal("target"), t=int(time.time()) - 301)), 401, "STALE_SIGNATURE")
    assert_error(post(*signed(removal("target"), t=int(time.time()) + 301)), 401, "STALE_SIGNATURE")
    # Signed, but not an event this app can apply.
    for payload, code in [
        (removal("target", client_key="another-app"), "WRONG_CLIENT"),
        (removal("target", create_time=10**20), "MALFORMED_REQUEST"),
        (removal("target", create_time="yesterday"), "MALFORMED_REQUEST"),
        (removal("target", user_openid=""), "MALFORMED_REQUEST"),
        (removal("target", content="{not json"), "MALFORMED_REQUEST"),
        (["not", "an", "object"], "MALFORMED_REQUEST"),
    ]:
        assert_error(post(*signed(payload)), 400, code)
    unsigned_json = b"{not json"
    t = int(time.time())
    mac = hmac.new(settings.LAYERS_TIKTOK_CLIENT_SECRET.encode(), f"{t}.".encode() + unsigned_json, hashlib.sha256)
    assert_error(post(unsigned_json, f"t={t},s={mac.hexdigest()}"), 400, "MALFORMED_REQUEST")
    wrong_method = Client().get(URL)
    assert_error(wrong_method, 405, "METHOD_NOT_ALLOWED")
    too_big = Client(raise_request_exception=False).post(
        URL, b" " * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1), content_type="application/json"
    )
    assert_error(too_big, 400, "MALFORMED_REQUEST")

    assert statuses(account["id"]) == ["connected"]
    assert not Event.objects.filter(type="social_account.needs_reauth").exists()


@pytest.mark.parametrize(
    "body",
    [
        b'{"event": "authorization.removed", "user_openid": "a\\u0000b", "create_time": 1700000000}',
        b'{"event": "authorization.removed", "user_openid": "a\\ud800", "create_time": 1700000000}',
        b'{"event": "authorization.removed\\u0000", "user_openid": "a", "create_time": 1700000000}',
        b'{"event": "authorization.removed", "user_openid": "a", "create_time": 1700000000, "content": "'
        + b"[" * 5000
        + b'"}',
        b"[" * 5000 + b"]" * 5000,
        b'{"a":' * 5000 + b"1" + b"}" * 5000,
    ],
    ids=["nul", "lone-surrogate", "nul-in-event", "deep-content", "deep-array", "deep-object"],
)
def test_a_signed_delivery_that_is_malformed_is_400_not_500(owner, body):
    # TikTok retries anything but a 200 for 72 hours: a 500 was a retried server error for each. A NUL
    # cannot reach PostgreSQL, a lone surrogate is no text, and "[[[[…" stops Python's decoder with a
    # RecursionError where every other bad JSON is a ValueError.
    account = connected_account(owner, "tiktok", "target")
    response = Client(raise_request_exception=False).post(
        URL, body, content_type="application/json", HTTP_TIKTOK_SIGNATURE=tiktok_signature(body)
    )
    assert_error(response, 400, "MALFORMED_REQUEST")
    assert statuses(account["id"]) == ["connected"]


def test_sandbox_deauthorize_control_validates_its_input():
    def control(platform, body):
        return Client().post(f"/sandbox/{platform}/_control/deauthorize", body, content_type="application/json")

    assert control("tiktok", {}).status_code == 422
    assert control("tiktok", {"username": "ok.name", "reason": 9}).status_code == 422
    assert control("tiktok", {"username": "ok.name", "reason": True}).status_code == 422
    # Instagram's side takes no TikTok reason (tests/accounts/test_instagram_deauthorization.py).
    assert control("instagram", {"username": "ok.name", "reason": 1}).status_code == 422
    assert control("tiktok", {"username": "nobody.here"}).json()["webhook"]["status"] == 200
