"""A database deployed at an older commit of main migrates to head and ends with the schema a fresh one has.
Each test rebuilds here what an earlier commit left in the database, runs head's migrations as a deploy
does, and leaves the test database at head (migrated back, whatever happened) for the tests after it."""

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
