"""Restoring the database from a backup: the posts that went out after the backup are back `queued` (or
`publishing` with no mark), and the first dispatcher tick published them a second time. hold_after_restore,
run after the restore and before workers and beat start, fails them for ops to check on the platform, and
lists the TikTok accounts whose refresh token the restore took back to a dead one."""

import io
import json
import subprocess
from datetime import timedelta

import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from accounts.models import Event, SocialAccount
from accounts.tasks import social_accounts_health_tick
from config.api.errors import Conflict
from config.api.fields import datetime_output
from leasing.models import PoolAccount
from leasing.tasks import pool_accounts_refresh_tick
from scheduling import services
from scheduling.models import ScheduledPost, ScheduledPostAttempt
from tests.accounts.oauth_helpers import connected_account
from tests.leasing.helpers import add_pool
from tests.receivers import receiver
from tests.scheduling.publish_helpers import (
    iso,
    later,
    managed_provider,
    post,
    run_dispatcher,
    sandbox_posts,
    schedule_now,
)

pytestmark = pytest.mark.django_db(transaction=True)

PG = ["-h", "127.0.0.1", "-U", "postgres"]


def backup(path) -> None:
    """pg_dump --data-only of every table but the sandbox's: the sandbox plays TikTok and Instagram, which a
    restore of Layers' database does not take back."""
    name = connection.settings_dict["NAME"]
    subprocess.run(
        ["pg_dump", *PG, "-Fc", "--data-only", "-T", "sandbox_*", "-f", str(path), name],
        check=True,
        capture_output=True,
    )


def restore(path) -> None:
    name = connection.settings_dict["NAME"]
    tables = [t for t in connection.introspection.table_names() if not t.startswith("sandbox_")]
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " CASCADE")
    connection.close()
    subprocess.run(
        ["pg_restore", *PG, "--data-only", "--disable-triggers", "-d", name, str(path)], check=True, capture_output=True
    )


def hold(restored_to, *extra: str) -> dict:
    out = io.StringIO()
    call_command("hold_after_restore", "--restored-to", iso(restored_to), *extra, "--json", stdout=out)
    return json.loads(out.getvalue())


def refused(*args: str) -> str:
    out = io.StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("hold_after_restore", *args, "--json", stdout=out, stderr=io.StringIO())
    assert json.loads(out.getvalue()) == {"error": {"message": str(raised.value)}}
    return str(raised.value)


def statuses() -> dict[str, str]:
    return dict(ScheduledPost.objects.values_list("pk", "status"))


def test_a_restore_does_not_publish_again_the_posts_that_went_out_after_the_backup(owner, tmp_path):
    tiktok = connected_account(owner, "tiktok", "restore.tiktok")
    instagram = connected_account(owner, "instagram", "restore.instagram")
    posts = {
        "tiktok": schedule_now(owner, tiktok["id"]),
        "instagram": schedule_now(owner, instagram["id"], media_type="image"),
    }
    taken_at = timezone.now()
    backup(tmp_path / "layers.dump")
    run_dispatcher()
    for platform, scheduled in posts.items():
        assert post(owner, scheduled["id"])["status"] == "published"
        assert len(sandbox_posts(platform, f"restore.{platform}")) == 1

    restore(tmp_path / "layers.dump")
    report = hold(taken_at)
    run_dispatcher()

    ids = sorted(scheduled["id"] for scheduled in posts.values())
    assert report["heldCount"] == 2 and report["heldPosts"] == {owner.org.id: ids}, report
    assert report["restoredTo"] == datetime_output(taken_at) and report["dryRun"] is False
    for platform, scheduled in posts.items():
        assert len(sandbox_posts(platform, f"restore.{platform}")) == 1, platform  # not published a second time
        body = post(owner, scheduled["id"])
        assert body["status"] == "failed" and body["error"]["code"] == "PLATFORM_UNAVAILABLE", body
        stamp = iso(taken_at.replace(microsecond=0))
        assert f"restored from a backup taken at {stamp}" in body["error"]["message"]
        assert "may have been published" in body["error"]["message"]
        # As any failure: the partner hears of it, and support reads the attempt.
        failed = Event.objects.get(type="scheduled_post.failed", data__id=scheduled["id"])
        assert failed.data["error"] == body["error"]
        attempt = ScheduledPostAttempt.objects.get(post_id=scheduled["id"])
        assert (attempt.outcome, attempt.error_code, attempt.number, attempt.platform) == (
            "failed",
            "PLATFORM_UNAVAILABLE",
            None,  # no attempt of Layers': the post was queued
            None,  # no platform said anything
        )
        # A retry asks for the confirmation that it is not on the platform.
        with pytest.raises(Conflict) as unconfirmed:
            services.post_retry(post_id=scheduled["id"])
        assert unconfirmed.value.code == "POST_OUTCOME_UNKNOWN"
    services.post_retry(post_id=posts["instagram"]["id"], checked_on_platform=True)
    assert post(owner, posts["instagram"]["id"])["status"] == "queued"

    # Run twice: nothing new (the post staff retried is not held again), and the list of the first run.
    again = hold(taken_at)
    assert again["heldCount"] == 0 and again["heldPosts"] == {}
    assert again["alreadyHeldPosts"] == {owner.org.id: ids}
    assert post(owner, posts["instagram"]["id"])["status"] == "queued"


def test_posts_with_a_publish_id_and_managed_posts_are_left_to_the_platform_and_the_provider(owner, tmp_path, settings):
    settings.LAYERS_SANDBOX_PUBLISH_DELAY_SECONDS = 60  # TikTok processes the video for a minute
    tiktok = connected_account(owner, "tiktok", "restore.processing")
    instagram = connected_account(owner, "instagram", "restore.managed")
    processing = schedule_now(owner, tiktok["id"])
    run_dispatcher()
    assert ScheduledPost.objects.get(pk=processing["id"]).publish_id  # publishing, its publish id known
    with receiver() as (url, received):
        managed_provider(project=owner.project, name="Boost", endpoint_url=f"{url}/dispatch")
        managed = schedule_now(owner, instagram["id"], mode="managed")
        taken_at = timezone.now()
        backup(tmp_path / "layers.dump")
        with time_machine.travel(later(minutes=2)):
            run_dispatcher()
        assert post(owner, processing["id"])["status"] == "published"
        assert post(owner, managed["id"])["status"] == "published" and len(received) == 1

        restore(tmp_path / "layers.dump")
        report = hold(taken_at)
        assert report["heldCount"] == 0, report
        assert statuses() == {processing["id"]: "publishing", managed["id"]: "queued"}
        with time_machine.travel(later(minutes=3)):
            run_dispatcher()

    # The resolver asked TikTok about the publish id; the provider was sent the same Idempotency-Key.
    assert post(owner, processing["id"])["status"] == "published"
    assert len(sandbox_posts("tiktok", "restore.processing")) == 1
    assert post(owner, managed["id"])["status"] == "published"
    assert [r["headers"]["Idempotency-Key"] for r in received] == [managed["id"], managed["id"]]


@pytest.mark.django_db  # no other process reads the database: the test's transaction is enough
def test_a_dry_run_lists_the_posts_and_changes_nothing(owner):
    tiktok = connected_account(owner, "tiktok", "restore.dry")
    due = schedule_now(owner, tiktok["id"])
    claimed = schedule_now(owner, tiktok["id"])
    future = schedule_now(owner, tiktok["id"], when=later(hours=1))
    # The restore put `claimed` back as a worker had it at the backup's time: claimed a minute before, its
    # creating call marked, no publish id yet.
    taken_at = timezone.now() - timedelta(hours=1)
    marked_at = taken_at - timedelta(seconds=30)
    ScheduledPost.objects.filter(pk=claimed["id"]).update(
        status="publishing",
        attempts=1,
        due_at=taken_at - timedelta(minutes=1),
        claimed_until=taken_at + timedelta(minutes=4),
        publish_attempted_at=marked_at,
    )
    before = (statuses(), Event.objects.count(), ScheduledPostAttempt.objects.count())

    report = hold(taken_at, "--dry-run")

    assert report["dryRun"] is True
    assert report["heldPosts"] == {owner.org.id: sorted([due["id"], claimed["id"]])}
    assert (statuses(), Event.objects.count(), ScheduledPostAttempt.objects.count()) == before

    report = hold(taken_at)
    assert report["heldPosts"] == {owner.org.id: sorted([due["id"], claimed["id"]])}
    assert statuses() == {due["id"]: "failed", claimed["id"]: "failed", future["id"]: "queued"}
    held = ScheduledPost.objects.get(pk=claimed["id"])
    assert held.publish_attempted_at == marked_at and held.claimed_until is None  # its own mark, kept
    assert ScheduledPostAttempt.objects.get(post_id=claimed["id"]).number == 1  # the claim's attempt ended


def test_accounts_whose_refresh_token_was_rotated_after_the_backup_are_listed(owner, tmp_path):
    tiktok = connected_account(owner, "tiktok", "restore.rotated")
    connected_account(owner, "instagram", "restore.long")  # no refresh token to rotate
    [pool] = add_pool(1)
    taken_at = timezone.now()
    backup(tmp_path / "layers.dump")
    # A day goes by: the health check and the pool refresh renew the tokens, and TikTok rotates them.
    version = SocialAccount.objects.get(pk=tiktok["id"]).token_version
    with time_machine.travel(later(hours=20)):
        social_accounts_health_tick()
        pool_accounts_refresh_tick()
        assert SocialAccount.objects.get(pk=tiktok["id"]).token_version > version
        restore(tmp_path / "layers.dump")

        report = hold(taken_at)
        assert report["refreshTokenMayBeDead"] == {
            "socialAccounts": {owner.org.id: [tiktok["id"]]},
            "poolAccounts": [pool],
        }
        # What the list warns of: the restored refresh token is dead, and the account needs its customer.
        social_accounts_health_tick()
        pool_accounts_refresh_tick()
    assert owner.client.get(f"/v1/social-accounts/{tiktok['id']}").json()["status"] == "reauth_required"
    assert PoolAccount.objects.get(pk=pool).status == "retired"


@pytest.mark.django_db  # no other process reads the database: the test's transaction is enough
def test_accounts_not_due_for_their_refresh_are_not_listed(owner):
    connected_account(owner, "tiktok", "restore.fresh")  # a 24 h token, refreshed 6 h before it expires
    [pool] = add_pool(1)
    assert hold(timezone.now())["refreshTokenMayBeDead"] == {"socialAccounts": {}, "poolAccounts": []}
    PoolAccount.objects.filter(pk=pool).update(token_expires_at=later(hours=1))
    assert hold(timezone.now())["refreshTokenMayBeDead"]["poolAccounts"] == [pool]


@pytest.mark.django_db  # no other process reads the database: the test's transaction is enough
@pytest.mark.parametrize(
    "restored_to, words",
    [
        ("yesterday", "RFC 3339"),
        ("2026-11-29T03:00:00", "RFC 3339"),  # no timezone
        ("{future}", "in the future"),
        ("{old}", "31 days back"),
    ],
)
def test_a_time_that_cannot_be_the_backup_is_refused(db, restored_to, words):
    when = restored_to.format(future=iso(later(minutes=10)), old=iso(later(days=-31)))
    assert words in refused("--restored-to", when)


@pytest.mark.django_db  # no other process reads the database: the test's transaction is enough
def test_an_old_backup_is_held_with_force(owner):
    tiktok = connected_account(owner, "tiktok", "restore.old")
    due = schedule_now(owner, tiktok["id"])
    assert hold(later(days=-31), "--force")["heldPosts"] == {owner.org.id: [due["id"]]}


def test_it_refuses_while_workers_or_beat_ran_on_the_restored_database(owner):
    tiktok = connected_account(owner, "tiktok", "restore.early")
    due = schedule_now(owner, tiktok["id"])
    taken_at = timezone.now()
    with time_machine.travel(later(minutes=2)):
        run_dispatcher()  # workers started before the hold: the post is published after the backup's time
    other = schedule_now(owner, tiktok["id"])

    message = refused("--restored-to", iso(taken_at))
    assert "1 post(s) published" in message and "stop them" in message
    assert post(owner, other["id"])["status"] == "queued"  # nothing held
    # Forced: the posts still due are held all the same.
    assert hold(taken_at, "--force")["heldPosts"] == {owner.org.id: [other["id"]]}
    assert post(owner, due["id"])["status"] == "published"

    every = IntervalSchedule.objects.create(every=2, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="dispatch-due-posts", task="scheduling.tasks.dispatch_due_posts", interval=every)
    assert "beat started or ran" in refused("--restored-to", iso(timezone.now() - timedelta(minutes=5)))


@pytest.mark.django_db  # no other process reads the database: the test's transaction is enough
def test_the_human_report_names_organizations_posts_and_accounts(owner):
    tiktok = connected_account(owner, "tiktok", "restore.human")
    due = schedule_now(owner, tiktok["id"])
    SocialAccount.objects.filter(pk=tiktok["id"]).update(token_expires_at=later(hours=1))
    out = io.StringIO()
    call_command("hold_after_restore", "--restored-to", iso(timezone.now()), stdout=out)
    text = out.getvalue()
    assert "Held 1 post(s)" in text and f"Acme ({owner.org.id}): {due['id']}" in text
    assert f"{tiktok['id']} (@restore.human)" in text


def test_a_dry_run_does_not_list_a_post_whose_publish_id_is_known(owner):
    """The dry run is what ops read before deciding: it must list what the real run holds, and a post whose
    publish id is known is left to the resolver, never held."""
    tiktok = connected_account(owner, "tiktok", "restore.dry.pid")
    due = schedule_now(owner, tiktok["id"])
    processing = schedule_now(owner, tiktok["id"])
    taken_at = timezone.now() - timedelta(hours=1)
    ScheduledPost.objects.filter(pk=processing["id"]).update(
        status="publishing",
        attempts=1,
        due_at=taken_at - timedelta(minutes=1),
        publish_id="v_pub~1",
        publish_attempted_at=taken_at - timedelta(seconds=30),
    )

    dry = hold(taken_at, "--dry-run")
    real = hold(taken_at)

    assert dry["heldPosts"] == real["heldPosts"] == {owner.org.id: [due["id"]]}, (dry, real)


def test_every_due_post_is_held_however_many_batches_it_takes(owner):
    """More due posts than one batch: every one is held, not only the first batch's (the rest would be
    published a second time by the first dispatcher tick)."""

    tiktok = connected_account(owner, "tiktok", "restore.batches")
    ids = sorted(schedule_now(owner, tiktok["id"])["id"] for _ in range(5))
    taken_at = timezone.now() - timedelta(hours=1)

    held = services.posts_hold_after_restore(restored_to=taken_at, batch=2)

    assert sorted(pk for _, pk in held) == ids
    assert set(ScheduledPost.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"failed"}


def test_running_the_hold_again_later_is_not_taken_for_workers_having_run(owner):
    """ "Safe to run again": the attempts the first run recorded (no platform's answer) are not activity of a
    dispatcher, even when the second run comes minutes after the backup's time."""

    tiktok = connected_account(owner, "tiktok", "restore.again")
    due = schedule_now(owner, tiktok["id"])
    taken_at = timezone.now() - timedelta(minutes=30)

    first = hold(taken_at)
    with time_machine.travel(timezone.now() + timedelta(minutes=10)):
        second = hold(taken_at)

    assert first["heldPosts"] == {owner.org.id: [due["id"]]}
    assert second["heldCount"] == 0 and second["alreadyHeldPosts"] == {owner.org.id: [due["id"]]}


def test_a_queued_post_held_after_a_restore_records_an_attempt_that_starts_when_it_ends(owner):
    """A queued post was in no attempt: its held attempt has no number and no duration (as a staff retry's),
    not one running from when the post was due, hours before."""

    tiktok = connected_account(owner, "tiktok", "restore.attempt")
    due = schedule_now(owner, tiktok["id"])
    ScheduledPost.objects.filter(pk=due["id"]).update(due_at=timezone.now() - timedelta(hours=3))

    services.posts_hold_after_restore(restored_to=timezone.now() - timedelta(hours=1))

    attempt = ScheduledPostAttempt.objects.get(post_id=due["id"])
    assert attempt.number is None and attempt.started_at == attempt.finished_at, (
        attempt.started_at,
        attempt.finished_at,
    )
