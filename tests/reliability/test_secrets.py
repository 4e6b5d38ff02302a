"""Secrets at rest: every encryption key can be rotated (`rotate_token_keys` re-encrypts every stored
secret under the new key, after which the old one is removed and everything still works), and a raw dump
of the database holds no platform token, webhook secret, provider secret, MFA secret or API key."""

import io
import json
import os
import subprocess

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection

from scheduling.models import ScheduledPost
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
