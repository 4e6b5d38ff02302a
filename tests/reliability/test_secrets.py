"""Secrets at rest: every encryption key can be rotated (`rotate_token_keys` re-encrypts every stored
secret under the new key, after which the old one is removed and everything still works), and a raw dump
of the database holds no platform token, webhook secret, provider secret, MFA secret or API key."""

import io
import json
import os
import subprocess
import threading

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection

from accounts import key_rotation
from accounts.models import SocialAccount
from leasing import services as leasing
from leasing.models import PoolAccount
from scheduling.models import ScheduledPost
from tests.concurrency import run_in_threads
from tests.leasing.helpers import add_pool, get_request, request_accounts
from tests.reliability.secrets_world import build
from tests.scheduling.publish_helpers import run_dispatcher, sandbox_posts, schedule_now

pytestmark = pytest.mark.django_db(transaction=True)

OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()
ENCRYPTED_COLUMNS = {
    "accounts.SocialAccount.access_token_enc",
    "accounts.SocialAccount.refresh_token_enc",
    "leasing.PoolAccount.access_token_enc",
    "leasing.PoolAccount.refresh_token_enc",
    "scheduling.ManagedProvider.secret_enc",
    "webhooks.WebhookEndpoint.secret_enc",
    "webhooks.WebhookEndpoint.previous_secret_enc",
    "accounts.IdempotencyKey.response_body.secret",
    "mfa.Authenticator.data",
}
WAIT = 20  # seconds a thread waits for the other one's step before the test fails (never reached when it works)


def rotate() -> dict:
    out = io.StringIO()
    call_command("rotate_token_keys", "--json", stdout=out)
    return json.loads(out.getvalue())


def test_rotating_the_token_keys_re_encrypts_every_secret_and_the_old_key_can_then_be_removed(owner, settings, figures):
    # given every kind of stored secret, encrypted under the old key
    settings.LAYERS_TOKEN_KEYS = [OLD]
    world = build(owner, tag="rotation")
    before, stored_before = world.plaintexts(), world.stored()
    assert all(before.values()), before

    # when a new key is put first, the command rotates, and then the old key is removed
    settings.LAYERS_TOKEN_KEYS = [NEW, OLD]
    first = rotate()
    again = rotate()
    settings.LAYERS_TOKEN_KEYS = [NEW]
    after, stored_after = world.plaintexts(), world.stored()

    # then every secret reads the same with the new key alone, and none of the stored forms is the old one
    lost = sorted(name for name in before if after.get(name) != before[name])
    unchanged = sorted(name for name in stored_before if stored_after.get(name) == stored_before[name])
    settings.LAYERS_TOKEN_KEYS = [OLD]
    readable_with_old_key = sum(1 for value in world.plaintexts().values() if value)
    settings.LAYERS_TOKEN_KEYS = [NEW]
    figures(
        "key_rotation",
        cases=first["rotated"],
        faults_injected=None,
        losses=len(lost) + first["undecryptable"],
        columns=len(first["columns"]),
        valuesRotated=first["rotated"],
        secondRunRotated=again["rotated"],
        undecryptable=first["undecryptable"],
        secretsCheckedAfterRemovingTheOldKey=len(before),
        secretsLost=len(lost),
    )
    assert set(first["columns"]) >= ENCRYPTED_COLUMNS
    assert first["rotated"] == len(stored_before) and first["undecryptable"] == 0, first
    assert again["rotated"] == 0 and again["current"] == first["rotated"], again  # idempotent
    assert lost == [] and unchanged == []
    assert readable_with_old_key == 0  # nothing stored is under the old key any more
    # and the rotated token still publishes
    post = schedule_now(owner, world.account_ids[0], caption="after rotation")
    run_dispatcher()
    assert ScheduledPost.objects.get(pk=post["id"]).status == "published"
    assert len([p for p in sandbox_posts("tiktok", "rotation.tt") if p.caption == "after rotation"]) == 1


def test_a_key_removed_before_rotating_loses_its_secrets_and_the_command_says_so(owner, settings):
    # given secrets under a key that is then removed without a rotation
    settings.LAYERS_TOKEN_KEYS = [OLD]
    world = build(owner, tag="early")
    settings.LAYERS_TOKEN_KEYS = [NEW]

    report = rotate()

    # then the command reports them as undecryptable rather than crashing or rewriting them
    assert report["undecryptable"] == len(world.stored()) and report["rotated"] == 0, report


def test_an_assignment_committed_during_the_rotation_leaves_a_token_the_new_key_alone_reads(
    owner, settings, monkeypatch
):
    """The rotation walks the columns one after another, the leased accounts' before the pool's. An assignment
    committing in between moves the pool account's token onto a new leased account, into a column the run has
    already passed: it must land there under the new key, or removing the old key (step 4 of the README's
    procedure) loses it, and the partner's leased account, which they cannot reauthorize, stops posting."""
    # given a pool account and a lease request, with the old key, then the new key deployed first
    settings.LAYERS_TOKEN_KEYS = [OLD]
    add_pool(1)
    accepted = request_accounts(owner, 1)
    settings.LAYERS_TOKEN_KEYS = [NEW, OLD]
    leased_columns_done, assigned = threading.Event(), threading.Event()
    rotate_column = key_rotation._rotate_column

    def pause_before_the_pool_columns(model, field, **kwargs):
        if model is PoolAccount and not leased_columns_done.is_set():
            leased_columns_done.set()
            assert assigned.wait(WAIT), "the assignment did not finish"
        return rotate_column(model, field, **kwargs)

    monkeypatch.setattr(key_rotation, "_rotate_column", pause_before_the_pool_columns)

    def assign_meanwhile():
        assert leased_columns_done.wait(WAIT), "the rotation never reached the pool's columns"
        try:
            return leasing.lease_assign(request_id=accepted["requestId"], auto=True).status
        finally:
            assigned.set()

    # when the account is assigned while the rotation runs, and the old key is removed afterwards
    report, status = run_in_threads(key_rotation.rotate_all, assign_meanwhile)
    settings.LAYERS_TOKEN_KEYS = [NEW]

    # then the rotation lost nothing, and the leased account's token still reads and publishes
    assert status == "assigned" and report["undecryptable"] == 0, report
    [account_id] = get_request(owner, accepted["requestId"])["socialAccountIds"]
    leased = SocialAccount.objects.get(pk=account_id)
    assert leased.access_token and leased.refresh_token
    scheduled = schedule_now(owner, account_id, caption="leased during the rotation")
    run_dispatcher()
    assert ScheduledPost.objects.get(pk=scheduled["id"]).status == "published"


def test_a_released_token_goes_back_to_the_pool_under_the_first_key(owner, settings):
    """A release moves the leased account's token back onto its pool account: written as it was stored, it
    would keep the key it was written with, behind a rotation that has already passed the pool's columns (the
    order they are walked in is the models', which a new model or app changes), and be lost with that key."""
    # given an account leased under the old key, then the new key deployed first
    settings.LAYERS_TOKEN_KEYS = [OLD]
    (pool_id,) = add_pool(1)
    accepted = request_accounts(owner, 1)
    leasing.lease_assign(request_id=accepted["requestId"], auto=True)
    [account_id] = get_request(owner, accepted["requestId"])["socialAccountIds"]
    settings.LAYERS_TOKEN_KEYS = [NEW, OLD]

    # when the partner releases it
    assert owner.client.delete(f"/v1/leased-accounts/{account_id}").status_code == 200

    # then the pool account holds the token under the new key: the new key alone reads it
    settings.LAYERS_TOKEN_KEYS = [NEW]
    pool = PoolAccount.objects.get(pk=pool_id)
    assert pool.status == "available" and pool.access_token and pool.refresh_token


def pg_dump() -> bytes:
    db = connection.settings_dict
    return subprocess.run(
        [
            "pg_dump",
            "-h",
            db["HOST"] or "127.0.0.1",
            "-U",
            db["USER"] or "postgres",
            "--data-only",
            "--exclude-table=sandbox_*",  # the sandbox plays the platforms, which do hold the tokens
            db["NAME"],
        ],
        capture_output=True,
        check=True,
        env={**os.environ, "PGPASSWORD": db.get("PASSWORD") or ""},
    ).stdout


def test_a_raw_database_dump_contains_no_token_no_secret_and_no_api_key(owner, figures):
    # given every kind of secret the project stores
    world = build(owner, tag="dumped")
    secrets_ = {**world.plaintexts(), "API key": world.raw_api_key}
    assert all(secrets_.values()), secrets_

    dump = pg_dump()

    # then the rows are in the dump, encrypted, and no secret appears in it in clear
    found = sorted(name for name, value in secrets_.items() if value.encode() in dump)
    figures(
        "secrets_dump",
        cases=len(secrets_),
        faults_injected=None,
        losses=len(found),
        secretsChecked=len(secrets_),
        foundInClear=len(found),
        dumpBytes=len(dump),
    )
    assert world.account_ids[0].encode() in dump and world.endpoint_id.encode() in dump
    assert all(value.encode() in dump for value in world.stored().values() if not value.startswith("{"))
    assert found == [], found
