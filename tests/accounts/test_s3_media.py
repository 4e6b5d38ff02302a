"""The media storage production runs: the avatars of connected and leased accounts in an S3-compatible bucket
(LAYERS_S3_BUCKET, django-storages' S3 backend), which every other test replaces with a local directory. Here
boto3 talks real HTTP to moto's S3 server on loopback, configured as config/settings/base.py configures a
bucket, and the avatars are read back as partners and ops meet them: the object in the bucket, the URL the
API hands out as `avatarUrl` fetched without credentials, what a reconnect, a disconnect or a release does to
it, and a bucket that refuses the copy."""

import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

import boto3
import httpx
import pytest
import time_machine
from django.db import connections
from django.utils import timezone

from accounts import services, tasks
from accounts.models import SocialAccount
from accounts.platforms.sandbox import avatars
from config.settings.base import s3_media_storage
from leasing import services as leasing
from tests.accounts.oauth_helpers import RETURN_URL, connect, connected_account, reauthorize, status
from tests.config.settings_env import load_settings
from tests.leasing.helpers import add_pool, get_request, request_accounts

pytestmark = pytest.mark.django_db(transaction=True)

CDN = "media.layers.test"


@pytest.fixture(scope="module")
def s3_endpoint():
    """moto's S3 on a free loopback port, for this module's tests (each makes a bucket of its own)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@dataclass
class Bucket:
    name: str
    endpoint: str
    s3: object  # a boto3 S3 client with ops' view of the bucket

    def keys(self, prefix: str = "") -> list[str]:
        return [o["Key"] for o in self.s3.list_objects_v2(Bucket=self.name, Prefix=prefix).get("Contents", [])]

    def origin_url(self, url: str) -> str:
        """Where a CDN serving the bucket on its own domain reads the object behind `url`."""
        return f"{self.endpoint}/{self.name}{urlsplit(url).path}"


# Credentials as production passes them (boto3's AWS_* variables), and nothing else of this machine's: no config
# file, no instance metadata.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "layers-media",
    "AWS_SECRET_ACCESS_KEY": "layers-media-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture
def s3_credentials(monkeypatch):
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def use_bucket(settings, bucket: Bucket, *, cdn: str | None = None) -> None:
    """STORAGES as base.py builds it for LAYERS_S3_BUCKET / LAYERS_S3_ENDPOINT_URL / LAYERS_CDN_DOMAIN."""
    settings.STORAGES = {
        **settings.STORAGES,
        "default": s3_media_storage(bucket.name, endpoint_url=bucket.endpoint, custom_domain=cdn),
    }


def make_bucket(s3_endpoint: str, *, public: bool = True) -> Bucket:
    name = f"layers-media-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket=name)
    if public:
        # README, Media: the URLs handed out are unsigned, so the objects must be publicly readable.
        s3.put_bucket_policy(
            Bucket=name,
            Policy=(
                '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", '
                f'"Action": "s3:GetObject", "Resource": "arn:aws:s3:::{name}/*"}}]}}'
            ),
        )
    return Bucket(name=name, endpoint=s3_endpoint, s3=s3)


@pytest.fixture
def bucket(s3_endpoint, s3_credentials, settings) -> Bucket:
    made = make_bucket(s3_endpoint)
    use_bucket(settings, made)
    return made


def fetch(url: str) -> httpx.Response:
    """GET as a partner's app or browser does: no credentials."""
    return httpx.get(url, timeout=10)


@pytest.mark.parametrize("platform", ["tiktok", "instagram"])
def test_a_connected_accounts_avatar_is_stored_in_the_bucket_and_its_url_serves_it(owner, bucket, platform):
    account = connected_account(owner, platform, "s3.creator")

    url = account["avatarUrl"]
    (key,) = bucket.keys()
    assert key.startswith(f"avatars/{account['id']}/") and key.endswith(".png")
    # The object's own URL at the endpoint: unsigned (no query string that would expire in the partner's hands).
    assert url == f"{bucket.endpoint}/{bucket.name}/{key}"
    stored = bucket.s3.get_object(Bucket=bucket.name, Key=key)
    assert stored["ContentType"] == "image/png"
    assert stored["Body"].read() == avatars.png("s3.creator")
    # Public through the bucket's policy (README), not through an ACL on the object: buckets made since 2023
    # refuse ACLs (Object Ownership "bucket owner enforced"), and an upload asking for one would fail there.
    grants = bucket.s3.get_object_acl(Bucket=bucket.name, Key=key)["Grants"]
    assert [grant["Permission"] for grant in grants] == ["FULL_CONTROL"]

    served = fetch(url)
    assert served.status_code == 200
    assert served.headers["content-type"] == "image/png"
    assert served.content == avatars.png("s3.creator")
    # Nothing asks for a cache lifetime: a CDN in front keeps it for its default (README, Media).
    assert "cache-control" not in served.headers

    listed = owner.client.get(f"/v1/projects/{owner.project.id}/social-accounts").json()["data"]
    assert [a["avatarUrl"] for a in listed] == [url]


def test_with_a_cdn_domain_the_avatar_url_is_on_it_and_its_path_is_the_objects(
    owner, s3_endpoint, s3_credentials, settings
):
    bucket = make_bucket(s3_endpoint)
    use_bucket(settings, bucket, cdn=CDN)

    account = connected_account(owner, "tiktok", "s3.cdn")

    url = account["avatarUrl"]
    (key,) = bucket.keys()
    assert url == f"https://{CDN}/{key}"
    # What the CDN fetches from the bucket for that URL is the picture.
    served = fetch(bucket.origin_url(url))
    assert served.status_code == 200 and served.content == avatars.png("s3.cdn")
    assert served.headers["content-type"] == "image/png"


def test_a_reconnect_keeps_the_avatar_and_a_copy_made_again_reuses_the_object(owner, bucket):
    account = connected_account(owner, "tiktok", "s3.again")
    url = account["avatarUrl"]
    (key,) = bucket.keys()

    # The customer consents again (a reauth): the account keeps its copy (the avatar is not refreshed).
    assert reauthorize(owner, account["id"], "tiktok", "s3.again").status_code == 302
    assert owner.client.get(f"/v1/social-accounts/{account['id']}").json()["avatarUrl"] == url
    assert bucket.keys() == [key]

    # A copy made again (the provisioning tick repairing an account whose copy it took for lost): the same
    # picture is the same object and the same URL, not a second object beside it.
    SocialAccount.objects.filter(pk=account["id"]).update(avatar_url="")
    assert services.social_account_rehost_avatar(account_id=account["id"]) == url
    assert bucket.keys() == [key]
    assert fetch(url).content == avatars.png("s3.again")


def test_a_disconnect_deletes_the_avatar_from_the_bucket(owner, bucket):
    kept = connected_account(owner, "tiktok", "s3.stays", project=owner.projects[1])
    account = connected_account(owner, "tiktok", "s3.leaver")
    url = account["avatarUrl"]
    assert fetch(url).status_code == 200

    assert owner.client.delete(f"/v1/social-accounts/{account['id']}").status_code == 200

    assert bucket.keys(f"avatars/{account['id']}/") == []
    assert fetch(url).status_code == 404
    assert owner.client.get(f"/v1/social-accounts/{account['id']}").json()["avatarUrl"] is None
    # Only that account's: another account's copy stays.
    assert fetch(kept["avatarUrl"]).status_code == 200


def lease(owner, project=None) -> str:
    accepted = request_accounts(owner, 1, project=project)
    leasing.lease_assign(request_id=accepted["requestId"], auto=True)
    (account_id,) = get_request(owner, accepted["requestId"], project=project)["socialAccountIds"]
    return account_id


def test_a_leased_accounts_avatar_is_in_the_bucket_until_the_release_and_the_next_lease_has_its_own(owner, bucket):
    add_pool(1)
    account_id = lease(owner)
    url = owner.client.get(f"/v1/social-accounts/{account_id}").json()["avatarUrl"]
    (key,) = bucket.keys()
    assert url == f"{bucket.endpoint}/{bucket.name}/{key}" and key.startswith(f"avatars/{account_id}/")
    served = fetch(url)
    assert served.status_code == 200 and served.headers["content-type"] == "image/png"
    assert served.content.startswith(b"\x89PNG")

    assert owner.client.delete(f"/v1/leased-accounts/{account_id}").status_code == 200

    assert bucket.keys() == [] and fetch(url).status_code == 404
    again = lease(owner, project=owner.projects[1])
    second = owner.client.get(f"/v1/social-accounts/{again}").json()["avatarUrl"]
    assert second != url and fetch(second).content == served.content
    assert bucket.keys() == [f"avatars/{again}/{second.rsplit('/', 1)[1]}"]


def avatar_lines(caplog) -> list:
    return [r for r in caplog.records if "post-connect step avatar failed" in r.getMessage()]


@pytest.fixture
def wrong_credentials(monkeypatch):
    """The bucket checks credentials (moto accepts any unless told to), and ours are not its."""
    from moto import settings as moto_settings
    from moto.core.authorization import ActionAuthenticatorMixin

    monkeypatch.setattr(moto_settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    monkeypatch.setattr(ActionAuthenticatorMixin, "request_count", 0)


@pytest.mark.parametrize(
    ("refusal", "said"),
    [("missing bucket", "NoSuchBucket"), ("wrong credentials", "(403) when calling the HeadObject operation")],
)
def test_a_bucket_refusing_the_copy_fails_the_avatar_step_only_and_the_tick_copies_it_later(
    owner, s3_endpoint, s3_credentials, settings, caplog, request, refusal, said
):
    bucket = make_bucket(s3_endpoint)
    if refusal == "missing bucket":
        bucket.s3.delete_bucket_policy(Bucket=bucket.name)
        bucket.s3.delete_bucket(Bucket=bucket.name)
    else:
        request.getfixturevalue("wrong_credentials")
    use_bucket(settings, bucket)
    caplog.set_level(logging.INFO)

    state, callback = connect(owner, "tiktok", "s3.refused")

    # The customer is sent back to the partner and the account is connected, with its layers; no avatar yet.
    assert callback.status_code == 302 and callback["Location"] == RETURN_URL
    account_id = status(owner, state)["socialAccountId"]
    account = owner.client.get(f"/v1/social-accounts/{account_id}")
    assert account.status_code == 200
    assert account.json()["status"] == "connected" and len(account.json()["layers"]) == 4
    assert account.json()["avatarUrl"] is None
    # The task tried it 7 times (its 6 retries over about an hour), each logged as a warning naming the
    # account; storage refusing is unexpected, so its traceback came on the first run and the last.
    lines = avatar_lines(caplog)
    assert len(lines) == 7 and all(line.levelname == "WARNING" for line in lines)
    assert all(account_id in line.getMessage() and said in line.getMessage() for line in lines), lines[0].getMessage()
    assert [bool(line.exc_info) for line in lines] == [True, False, False, False, False, False, True]
    assert "layers-media-secret" not in caplog.text

    # The bucket is back: the provisioning tick queues the copy again (up to a day after the connect).
    if refusal == "missing bucket":
        bucket = make_bucket(s3_endpoint)
        use_bucket(settings, bucket)
    else:
        from moto import settings as moto_settings

        moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")  # (the fixture's undo restores it too)
    with time_machine.travel(timezone.now() + timedelta(minutes=11)):
        assert tasks.social_accounts_provision_tick.apply().result == 1
    url = owner.client.get(f"/v1/social-accounts/{account_id}").json()["avatarUrl"]
    assert url and url.startswith(f"{bucket.endpoint}/{bucket.name}/avatars/{account_id}/")
    assert fetch(url).content == avatars.png("s3.refused")


def deletion_lines(caplog, account_id: str) -> list:
    return [r for r in caplog.records if r.levelno >= logging.WARNING and account_id in r.getMessage()]


def test_a_disconnect_the_bucket_refuses_to_clean_up_answers_200_retries_then_tells_ops_what_is_left(
    owner, bucket, caplog, request
):
    # Before, ops read "Error calling social_account_revoke.<locals>.<lambda> in on_commit()" and the bucket's
    # refusal: not whose picture was still served to anyone at its URL, nor where to delete it; and a refusal
    # for a moment (an outage, credentials being rotated) was never tried again.
    account = connected_account(owner, "tiktok", "s3.stuck")
    url = account["avatarUrl"]
    request.getfixturevalue("wrong_credentials")
    caplog.set_level(logging.INFO)

    response = owner.client.delete(f"/v1/social-accounts/{account['id']}")

    assert response.status_code == 200 and response.json()["status"] == "disconnected"
    assert owner.client.get(f"/v1/social-accounts/{account['id']}").json()["avatarUrl"] is None
    # Tried 7 times (6 retries, 30 s doubling: about half an hour), each a warning without traceback; then one
    # error, with it, naming the folder still served.
    *retries, last = deletion_lines(caplog, account["id"])
    assert len(retries) == 6 and all(line.levelname == "WARNING" and not line.exc_info for line in retries)
    assert all("InvalidAccessKeyId" in line.getMessage() for line in retries), retries[0].getMessage()
    assert [line.getMessage().rsplit("trying again in ", 1)[1] for line in retries] == [
        "30 s",
        "60 s",
        "120 s",
        "240 s",
        "480 s",
        "900 s",
    ]
    assert last.levelname == "ERROR" and last.exc_info
    assert f"delete avatars/{account['id']}/" in last.getMessage() and "InvalidAccessKeyId" in last.getMessage()
    assert "layers-media-secret" not in caplog.text

    # The object is still there, served, until ops delete it (README, Media).
    from moto import settings as moto_settings

    moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")  # (the fixture's undo restores it too)
    assert bucket.keys(f"avatars/{account['id']}/") and fetch(url).status_code == 200


class FixedWhileWaiting(logging.Handler):
    """Ops give the bucket its credentials back while the deletion waits for its retry: at the task's
    `after`-th "trying again" line (the task logs it just before it waits)."""

    def __init__(self, after: int):
        super().__init__(logging.WARNING)
        self.after, self.seen = after, 0

    def emit(self, record):
        if "trying again in" in record.getMessage():
            self.seen += 1
            if self.seen == self.after:
                from moto import settings as moto_settings

                moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")  # (the fixture's undo restores it)


def test_a_deletion_the_bucket_refused_for_a_while_is_done_by_a_retry(owner, bucket, caplog, request):
    account = connected_account(owner, "tiktok", "s3.later")
    url = account["avatarUrl"]
    kept = connected_account(owner, "tiktok", "s3.kept", project=owner.projects[1])
    request.getfixturevalue("wrong_credentials")
    caplog.set_level(logging.INFO)
    fixed = FixedWhileWaiting(after=2)
    logging.getLogger("accounts.tasks").addHandler(fixed)
    try:
        assert owner.client.delete(f"/v1/social-accounts/{account['id']}").status_code == 200
    finally:
        logging.getLogger("accounts.tasks").removeHandler(fixed)

    # Refused twice, done by the second retry: the picture is gone, no error for ops, the other account's stays.
    assert [line.levelname for line in deletion_lines(caplog, account["id"])] == ["WARNING", "WARNING"]
    assert bucket.keys(f"avatars/{account['id']}/") == [] and fetch(url).status_code == 404
    assert fetch(kept["avatarUrl"]).status_code == 200
    # Deleting again (a message delivered twice) deletes nothing and fails nothing.
    assert tasks.social_account_avatars_delete.apply(args=[account["id"]]).result == 0


def test_the_deletion_task_leaves_the_avatar_of_an_account_that_still_shows_it(owner, bucket):
    # A message sent by hand or from another environment: a live account's avatarUrl points at its copy.
    account = connected_account(owner, "tiktok", "s3.live")

    assert tasks.social_account_avatars_delete.apply(args=[account["id"]]).result == 0

    assert fetch(account["avatarUrl"]).status_code == 200


def test_a_disconnect_while_the_broker_refuses_the_deletion_deletes_the_avatar_at_once(
    owner, bucket, monkeypatch, caplog
):
    from tests.outages import broker_down

    account = connected_account(owner, "tiktok", "s3.nobroker")
    url = account["avatarUrl"]
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(tasks.social_account_avatars_delete, "delay", broker_down)

    assert owner.client.delete(f"/v1/social-accounts/{account['id']}").status_code == 200

    # No tick would find it later: the request deleted it itself.
    assert bucket.keys(f"avatars/{account['id']}/") == [] and fetch(url).status_code == 404
    assert [line.levelname for line in deletion_lines(caplog, account["id"])] == ["WARNING"]


@pytest.fixture
def silent_endpoint():
    """An S3 endpoint that accepts connections and never answers: a hung proxy or load balancer in front of the
    bucket, or a bucket host that has stopped serving with its socket still open. Each request sent to it waits
    for an answer that never comes."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    held, stop = [], threading.Event()

    def accept():
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])  # read nothing, answer nothing
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    listener.close()
    for held_connection in held:
        held_connection.close()


# What a web or worker process starting with these variables talks to the bucket with: the timeouts and the
# attempts are the settings' (short here, so that the test runs in seconds).
SHORT_S3_WAITS = {"LAYERS_S3_CONNECT_TIMEOUT": "1", "LAYERS_S3_READ_TIMEOUT": "0.5", "LAYERS_S3_MAX_ATTEMPTS": "2"}


def use_bucket_as_started(settings, monkeypatch, bucket_name: str, endpoint: str) -> None:
    """STORAGES as config/settings/base.py builds it from the environment of a process starting with
    LAYERS_S3_BUCKET, LAYERS_S3_ENDPOINT_URL and SHORT_S3_WAITS."""
    env = {"LAYERS_S3_BUCKET": bucket_name, "LAYERS_S3_ENDPOINT_URL": endpoint, **SHORT_S3_WAITS, **CREDENTIALS}
    started = load_settings("dev", monkeypatch, **env)
    for name, value in CREDENTIALS.items():  # load_settings clears the AWS_* variables it did not set
        monkeypatch.setenv(name, value)
    settings.STORAGES = {**settings.STORAGES, "default": started.STORAGES["default"]}


# Only a guard, so that the test fails instead of hanging: with boto3's defaults (60 s to connect, 60 s for each
# answer, 5 attempts per call) the first call to a silent bucket alone takes 5 minutes. With SHORT_S3_WAITS
# everything below is over within a few seconds.
GUARD_SECONDS = 120


def within_guard(call):
    """`call()` on a thread of its own (as a web or worker thread runs it); its result, or the test fails if it
    is still waiting after GUARD_SECONDS."""
    outcome = {}

    def run():
        try:
            outcome["result"] = call()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the test's thread
            outcome["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(GUARD_SECONDS)
    assert not thread.is_alive(), f"still waiting on the bucket after {GUARD_SECONDS} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def test_a_bucket_that_never_answers_fails_the_avatar_copy_within_the_s3_timeouts_and_the_account_connects(
    owner, silent_endpoint, s3_credentials, settings, monkeypatch, caplog
):
    # Before, nothing bounded a call to the bucket but boto3's defaults: the avatar copy of every account
    # connected or leased while the bucket hung held a worker thread 10 minutes per try (two calls of 5 minutes).
    use_bucket_as_started(settings, monkeypatch, "layers-media-silent", silent_endpoint)
    caplog.set_level(logging.INFO)

    state, callback = within_guard(lambda: connect(owner, "tiktok", "s3.silent"))

    # The customer is back at the partner's app and the account is connected, with no avatar yet.
    assert callback.status_code == 302 and callback["Location"] == RETURN_URL
    account_id = status(owner, state)["socialAccountId"]
    account = owner.client.get(f"/v1/social-accounts/{account_id}").json()
    assert account["status"] == "connected" and len(account["layers"]) == 4
    assert account["avatarUrl"] is None
    # Each try ended with a timeout, a typed error naming the endpoint, and the task retried as for a bucket
    # that refuses (its retries, then the provisioning tick).
    lines = avatar_lines(caplog)
    assert len(lines) == 7 and all(line.levelname == "WARNING" for line in lines)
    assert all(account_id in line.getMessage() for line in lines)
    assert all("ReadTimeoutError: Read timeout on endpoint URL" in line.getMessage() for line in lines), lines[0]
    assert "layers-media-secret" not in caplog.text


def test_a_disconnect_while_the_bucket_never_answers_answers_200_and_tells_ops_what_is_left(
    owner, bucket, silent_endpoint, settings, monkeypatch, caplog
):
    # Before, the partner's DELETE itself waited on the bucket (the deletion ran once the disconnect committed):
    # 5 minutes, long past any client's or proxy's patience, for a disconnect that was already done. (In
    # production the deletion is now a task of its own; the tests run tasks in the request.)
    account = connected_account(owner, "tiktok", "s3.hung")
    url = account["avatarUrl"]
    use_bucket_as_started(settings, monkeypatch, bucket.name, silent_endpoint)
    caplog.set_level(logging.INFO)

    response = within_guard(lambda: owner.client.delete(f"/v1/social-accounts/{account['id']}"))

    assert response.status_code == 200 and response.json()["status"] == "disconnected"
    assert owner.client.get(f"/v1/social-accounts/{account['id']}").json()["avatarUrl"] is None
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and account["id"] in r.getMessage()]
    assert errors, [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert f"delete avatars/{account['id']}/" in errors[-1].getMessage()
    assert "ReadTimeoutError" in errors[-1].getMessage()
    # The picture is still in the bucket and served, until the deletion is done (README, Media).
    assert bucket.keys(f"avatars/{account['id']}/") and fetch(url).status_code == 200
