"""A database deployed at an older commit of main migrates to head and ends with the schema a fresh one has.
Each test rebuilds here what an earlier commit left in the database, runs head's migrations as a deploy
does, and leaves the test database at head (migrated back, whatever happened) for the tests after it."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)


def _migrate(targets) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)


def _migrate_to_head() -> None:
    call_command("migrate", verbosity=0)


def _execute(*statements: str) -> None:
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def _schema(table: str) -> tuple[list, list]:
    """The table's columns (type, nullable, database default) and its indexes' definitions."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns "
            "WHERE table_name = %s ORDER BY column_name",
            [table],
        )
        columns = cursor.fetchall()
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s ORDER BY indexname", [table])
        return columns, cursor.fetchall()


def _index_valid(name: str) -> bool | None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", [f'"{name}"'])
        row = cursor.fetchone()
    return None if row is None else row[0]


# --- 09a5c8c: leasing 0007 built lease_charges_open itself; 1d07921 moved it to 0008 -----------------------

LEASE_CHARGES_OPEN_AT_09A5C8C = (
    'CREATE INDEX "lease_charges_open" ON "leasing_lease" ("id") WHERE NOT "charges_settled"'  # its sqlmigrate
)


def _back_to_leasing_0007_without_the_index() -> None:
    _migrate([("leasing", "0007_lease_charges_settled")])
    _execute('DROP INDEX IF EXISTS "lease_charges_open"')


def test_a_database_deployed_at_09a5c8c_migrates_to_head():
    fresh = _schema("leasing_lease")
    # given the database as 09a5c8c left it: leasing 0007 applied, and the index it built then
    _back_to_leasing_0007_without_the_index()
    try:
        _execute(LEASE_CHARGES_OPEN_AT_09A5C8C)

        # when head's migrate runs (0008 builds the same index), then it goes through to the end
        _migrate_to_head()

        assert _schema("leasing_lease") == fresh
        assert _index_valid("lease_charges_open") is True
    finally:
        _back_to_leasing_0007_without_the_index()
        _migrate_to_head()


def test_an_index_build_interrupted_in_an_earlier_deploy_is_built_again():
    """A concurrent build that fails (a lock timeout, a deploy interrupted) leaves its index behind, INVALID:
    never used by a query, yet it exists. The next `migrate` must build it, not take it for built."""
    from django.db import OperationalError

    from tests.concurrency import held_open

    fresh = _schema("leasing_lease")
    # given 0008's build interrupted: it waited for a transaction of the release still serving, and gave up
    _back_to_leasing_0007_without_the_index()
    try:
        with held_open(lambda: _execute("UPDATE leasing_lease SET id = id")):
            with pytest.raises(OperationalError, match="lock timeout"):
                _execute(
                    "SET lock_timeout = '200ms'",
                    LEASE_CHARGES_OPEN_AT_09A5C8C.replace("CREATE INDEX", "CREATE INDEX CONCURRENTLY"),
                )
            _execute("RESET lock_timeout")
        assert _index_valid("lease_charges_open") is False

        # when migrate runs again
        _migrate_to_head()

        # then the index is there, valid, as on a fresh database
        assert _index_valid("lease_charges_open") is True
        assert _schema("leasing_lease") == fresh
    finally:
        _back_to_leasing_0007_without_the_index()
        _migrate_to_head()


def test_the_index_migrations_go_back_and_forth():
    # unapplying 0008 drops its index, applying it again builds it
    fresh = _schema("leasing_lease")
    try:
        _migrate([("leasing", "0007_lease_charges_settled")])
        assert _index_valid("lease_charges_open") is None
        _migrate([("leasing", "0008_lease_charges_open_index")])
        assert _schema("leasing_lease") == fresh
    finally:
        _migrate_to_head()


# --- 9e56cee … 140e599: webhooks 0002 applied before cd4dd6f edited it to add the database default -------------


def test_a_database_deployed_before_the_delivery_window_got_its_default_gets_it():
    """window_first_attempt had no database default where 0002 was applied before cd4dd6f added one to that
    same file: a release older than the column (the previous one during a deploy, or a rollback) could not
    insert a delivery, and every fan-out failed (NOT NULL)."""
    fresh = _schema("webhooks_webhookdelivery")
    # given the database as 9e56cee … 140e599 left it
    _migrate([("webhooks", "0002_delivery_retry_window_start")])
    try:
        _execute('ALTER TABLE "webhooks_webhookdelivery" ALTER COLUMN "window_first_attempt" DROP DEFAULT')

        # when head's migrate runs
        _migrate_to_head()

        # then the column has its default again: the schema of a fresh database
        assert _schema("webhooks_webhookdelivery") == fresh
    finally:
        _execute('ALTER TABLE "webhooks_webhookdelivery" ALTER COLUMN "window_first_attempt" SET DEFAULT 1')
        _migrate_to_head()


# --- f57993d: an earlier leasing 0007 (0007_lease_next_charge_at), deleted and its number reused by 09a5c8c --

# What f57993d's 0007 left (its sqlmigrate): a column nothing reads any more, and its index, written by every
# insert and update of a lease.
LEASING_0007_AT_F57993D = (
    """ALTER TABLE "leasing_lease" ADD COLUMN "next_charge_at" timestamp with time zone
       DEFAULT '2000-01-01T00:00:00+00:00'::timestamptz NOT NULL""",
    """CREATE INDEX "lease_charge_due" ON "leasing_lease" ("next_charge_at")
       WHERE ("released_at" IS NULL OR "next_charge_at" < ("released_at"))""",
    "INSERT INTO django_migrations (app, name, applied) VALUES ('leasing', '0007_lease_next_charge_at', now())",
)


def test_a_database_deployed_at_f57993d_loses_the_replaced_migrations_column():
    fresh = _schema("leasing_lease")
    # given the database as f57993d left it: leasing up to 0006, then that commit's 0007
    _migrate([("leasing", "0006_pool_account_refresh_claim")])
    try:
        _execute(*LEASING_0007_AT_F57993D)

        # when head's migrate runs
        _migrate_to_head()

        # then the lease table is as on a fresh database: no next_charge_at, no lease_charge_due
        assert _schema("leasing_lease") == fresh
    finally:
        _execute(
            'ALTER TABLE "leasing_lease" DROP COLUMN IF EXISTS "next_charge_at"',
            "DELETE FROM django_migrations WHERE app = 'leasing' AND name = '0007_lease_next_charge_at'",
        )
        _migrate_to_head()


# --- before accounts 0014: the relay tick found the events to fan out by their missing WebhookFanout marker ----


def _event_at_0013(org_id: str, event_id: str, *, position, fanned_out_at=None) -> None:
    """An event as the release before fanned_out_at wrote it, with its marker if it was fanned out then."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO accounts_event (id, organization_id, type, data, created_at, position) "
            "VALUES (%s, %s, 'social_account.connected', '{}', now(), %s)",
            [event_id, org_id, position],
        )
        if fanned_out_at is not None:
            cursor.execute(
                "INSERT INTO webhooks_webhookfanout (event_id, fanned_out_at, deliveries) VALUES (%s, %s, 0)",
                [event_id, fanned_out_at],
            )


def test_the_events_fanned_out_before_fanned_out_at_existed_are_marked_by_the_migration(monkeypatch):
    """Otherwise the tick would take every event of the last 3 days for one to check, and the index of those
    waiting for a fan-out would hold the whole table."""
    from importlib import import_module

    from django.utils import timezone

    from accounts.models import Event

    fresh = _schema("accounts_event")
    monkeypatch.setattr(import_module("accounts.migrations.0015_event_fanout_pending"), "MARK_BATCH", 2)
    when = timezone.now().replace(microsecond=0)
    # given a database at accounts 0013, with events fanned out or not, placed in their list or not yet
    _migrate([("accounts", "0013_social_account_sync_not_before")])
    try:
        # As the release of that time wrote it: today's model has columns (accounts 0020) its table lacks.
        org_id = "org_0013"
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO accounts_organization (id, name, created_at) VALUES (%s, 'Acme', now())", [org_id]
            )
        for n in (1, 2, 3):
            _event_at_0013(org_id, f"evt_done{n}", position=n, fanned_out_at=when - timedelta(minutes=n))
        _event_at_0013(org_id, "evt_missed", position=4)  # its fan-out never committed
        _event_at_0013(org_id, "evt_unplaced", position=None, fanned_out_at=when)  # the release places it now

        # when head's migrate runs
        _migrate_to_head()

        # then the events fanned out carry their marker's time, in every batch; the others are the tick's
        marked = dict(Event.objects.values_list("pk", "fanned_out_at"))
        assert marked == {
            "evt_done1": when - timedelta(minutes=1),
            "evt_done2": when - timedelta(minutes=2),
            "evt_done3": when - timedelta(minutes=3),
            "evt_missed": None,
            "evt_unplaced": None,
        }
        assert _schema("accounts_event") == fresh
        assert _index_valid("event_org_fanout_pending") is True
    finally:
        _migrate_to_head()


def test_an_alter_table_gives_way_to_the_release_still_serving_instead_of_queuing_its_writes():
    """ALTER TABLE waits for its lock behind every transaction open on the table, and every later read and
    write queues behind it: one slow request of the release still serving would stop them all. The fixes
    above run under a lock timeout: while that request stays open the ALTER gives up, again and again, and
    the table's other writes go on; once it has committed, the ALTER goes through."""
    from django.db import OperationalError
    from django.db import connection as main_connection
    from django.db.migrations.state import ProjectState

    from config.migrationops import AlterTableBriefly
    from tests.concurrency import schema_change_beside_writers

    alter = AlterTableBriefly(
        ['ALTER TABLE "lock_probe" ALTER COLUMN "n" SET DEFAULT 1'], lock_timeout="200ms", attempts=3, pause=0.1
    )

    def run_alter():
        with main_connection.schema_editor(atomic=False) as editor:
            alter.database_forwards("leasing", editor, ProjectState(), ProjectState())

    _execute('CREATE TABLE "lock_probe" ("n" integer)')
    try:
        errors = schema_change_beside_writers(
            run_alter,
            held=lambda: _execute('INSERT INTO "lock_probe" VALUES (0)'),  # a request, mid-transaction
            waits_on="ALTER TABLE",
            # another request writes the table meanwhile: it is not held behind the ALTER (3 s would be)
            write=lambda cursor: cursor.execute('INSERT INTO "lock_probe" VALUES (1)'),
            gives_up_while_held=True,
        )
        assert len(errors) == 1 and isinstance(errors[0], OperationalError), errors  # gave up after 3 tries
        assert "lock timeout" in str(errors[0])

        run_alter()  # the request has committed: it goes through
        with main_connection.cursor() as cursor:
            cursor.execute("SELECT column_default FROM information_schema.columns WHERE table_name = 'lock_probe'")
            assert cursor.fetchone() == ("1",)
    finally:
        _execute('DROP TABLE IF EXISTS "lock_probe"')
