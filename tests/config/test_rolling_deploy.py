"""Columns added to existing tables after the first release carry a default in the database itself: while
`migrate` runs, the release still serving inserts rows without the new column, and PostgreSQL would refuse
them (a 500 on scheduling or on lease assignment for the whole deploy)."""

import pytest
from django.db import connection

pytestmark = pytest.mark.django_db

# Known columns added to tables of an earlier migration: the list read from the migrations below must hold
# them (were it to come out empty, the check would pass on nothing).
KNOWN_ADDED_LATER = {
    ("scheduling_scheduledpost", "prepared_publish_id"),
    ("leasing_lease", "handle"),
    ("leasing_poolaccount", "refresh_claimed_until"),
    ("leasing_lease", "charges_settled"),
    ("webhooks_webhookdelivery", "window_first_attempt"),
    ("webhooks_webhookdelivery", "queued_at"),
    ("scheduling_scheduledpost", "requeues"),
    ("accounts_event", "fanned_out_at"),
    ("scheduling_scheduledpostattempt", "platform"),
    ("accounts_oauthsession", "platform_message"),
    ("scheduling_scheduledpost", "cancel_reason"),
}


def _operations_on_existing_tables():
    """(app, migration, operation) for every operation of our apps' migrations on a model created by an
    earlier migration: read from the migrations, so what is added tomorrow is checked without anyone
    remembering to list it."""
    from django.apps import apps
    from django.conf import settings
    from django.db import migrations
    from django.db.migrations.loader import MigrationLoader

    ours = {  # the project's apps: under its folder, not in the virtualenv's site-packages beneath it
        config.label
        for config in apps.get_app_configs()
        if config.path.startswith(str(settings.BASE_DIR)) and "site-packages" not in config.path
    }
    loader = MigrationLoader(None, ignore_no_migrations=True)
    created_in: dict[tuple[str, str], str] = {}
    for app, name in sorted(loader.disk_migrations):  # numbered names: an app's migrations in order
        if app not in ours:
            continue
        migration = loader.disk_migrations[(app, name)]
        for operation in migration.operations:
            if isinstance(operation, migrations.CreateModel):
                created_in[(app, operation.name_lower)] = name
            elif created_in.get((app, getattr(operation, "model_name_lower", None))) not in (None, name):
                yield app, migration, operation


def _columns_added_to_existing_tables() -> list[tuple[str, str]]:
    from django.apps import apps
    from django.db import migrations

    added = []
    for app, _, operation in _operations_on_existing_tables():
        if isinstance(operation, migrations.AddField):
            model = apps.get_model(app, operation.model_name)
            added.append((model._meta.db_table, model._meta.get_field(operation.name).column))
    return added


ADDED_LATER = _columns_added_to_existing_tables()


def test_the_columns_added_later_are_read_from_the_migrations():
    assert set(ADDED_LATER) >= KNOWN_ADDED_LATER


@pytest.mark.parametrize("table, column", ADDED_LATER)
def test_a_column_added_later_lets_the_previous_release_insert(table, column):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT is_nullable, column_default FROM information_schema.columns WHERE table_name = %s "
            "AND column_name = %s",
            [table, column],
        )
        nullable, default = cursor.fetchone()
    assert nullable == "YES" or default is not None, f"{table}.{column}: NOT NULL with no default"


# Indexes added after the first release to tables that are written all the time: (app, migration before,
# migration adding it, table, index).
INDEXES_ADDED_LATER = [
    ("scheduling", "0006", "0007", "scheduling_scheduledpost", "sp_published_recent"),
    ("leasing", "0007", "0008", "leasing_lease", "lease_charges_open"),
    ("accounts", "0009", "0010", "accounts_event", "event_subject"),
    ("accounts", "0014", "0015", "accounts_event", "event_org_fanout_pending"),
    ("scheduling", "0013", "0014", "scheduling_scheduledpostattempt", "spa_published_by_platform"),
    ("scheduling", "0018", "0019", "scheduling_scheduledpost", "sp_project_status_newest"),
    ("scheduling", "0018", "0019", "scheduling_scheduledpost", "sp_account_newest"),
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("app, before, adding, table, index", INDEXES_ADDED_LATER)
def test_an_index_added_later_is_built_while_the_table_takes_writes(app, before, adding, table, index):
    """The release still serving keeps writing while `migrate` runs. A plain CREATE INDEX waits for the
    transactions already writing the table, and every write that comes after queues behind it: scheduling
    (or lease assignment) stops until the build is done. Built concurrently, new writes go on."""
    _migrate_beside_the_old_release(app, before, adding, table, waits_on="CREATE INDEX")
    with connection.cursor() as cursor:
        cursor.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = %s::regclass", [index])
        assert cursor.fetchone() == (True,)


# Columns added after the first release to tables that are written all the time: (app, migration before,
# migration adding it, table).
COLUMNS_ADDED_TO_BUSY_TABLES = [
    ("accounts", "0013", "0014", "accounts_event"),
    ("scheduling", "0012", "0013", "scheduling_scheduledpostattempt"),
    # Why a post was canceled: the posts table, which the scheduling and the dispatcher write all the time.
    ("scheduling", "0017", "0018", "scheduling_scheduledpost"),
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("app, before, adding, table", COLUMNS_ADDED_TO_BUSY_TABLES)
def test_a_column_added_later_to_a_busy_table_gives_way_to_its_writes(app, before, adding, table):
    """ADD COLUMN, instant once it has the table's lock, waits for that lock behind every transaction open on
    the table, and every later read and write of the table queues behind it: every change of every partner
    writes an event. Under a lock timeout it gives way, and goes through once that transaction has ended."""
    _migrate_beside_the_old_release(app, before, adding, table, waits_on="ADD COLUMN")


# Database defaults set later on columns of tables written all the time: (app, migration before, migration
# setting it, table).
DEFAULTS_SET_ON_BUSY_TABLES = [
    ("accounts", "0016", "0017", "accounts_idempotencykey"),
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("app, before, setting, table", DEFAULTS_SET_ON_BUSY_TABLES)
def test_a_default_set_later_on_a_busy_table_gives_way_to_its_writes(app, before, setting, table):
    """SET DEFAULT rewrites no row but takes the table's ACCESS EXCLUSIVE lock, as ADD COLUMN does: every keyed
    POST claims its Idempotency-Key in this table. Under a lock timeout it gives way to the release still
    serving, and goes through once that transaction has ended."""
    _migrate_beside_the_old_release(app, before, setting, table, waits_on="SET DEFAULT")


# Tables created after the first release with a foreign key to a table written all the time: (app, migration
# before, migration creating it, the referenced table).
TABLES_REFERENCING_BUSY_TABLES = [
    ("scheduling", "0008", "0009", "scheduling_scheduledpost"),
    # The ledger's new foreign key to leases (an adjustment's leased account), added to an existing table.
    ("billing", "0003", "0004", "leasing_lease"),
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("app, before, creating, referenced", TABLES_REFERENCING_BUSY_TABLES)
def test_a_new_table_referencing_a_busy_one_is_created_while_that_table_takes_writes(app, before, creating, referenced):
    """Adding a foreign key locks the table it references against writes. Waiting for that lock behind a
    transaction of the release still serving, it held every later write of that table (new posts, the
    dispatcher) behind it. Added under a lock timeout, it gives way, and goes through once that transaction
    has ended."""
    _migrate_beside_the_old_release(app, before, creating, referenced, waits_on="FOREIGN KEY")


# Plain index builds (and leasing 0003's drop) on existing tables that shipped before AddIndexWithoutBlocking
# existed (each held the table's writes for its build, once, on tables small then).
SHIPPED_BLOCKING_INDEXES = {
    ("accounts", "0003_identity_platform_user_index"),
    ("accounts", "0004_event_position"),
    ("leasing", "0003_lease_list_pages_on_account"),
}


def test_every_index_added_later_to_an_existing_table_is_built_without_blocking_writes():
    from django.db import migrations

    from config.migrationops import AddIndexWithoutBlocking

    blocking = [
        f"{app}.{migration.name}: {operation.index.name}"
        for app, migration, operation in _operations_on_existing_tables()
        if isinstance(operation, migrations.AddIndex)
        and not isinstance(operation, AddIndexWithoutBlocking)
        and (app, migration.name) not in SHIPPED_BLOCKING_INDEXES
    ]
    # (A concurrent build in an atomic migration needs no check here: the test database is not even built.)
    assert blocking == [], "use config.migrationops.AddIndexWithoutBlocking"


def test_every_index_dropped_later_from_an_existing_table_is_dropped_without_blocking_writes():
    """A plain DROP INDEX takes the table's ACCESS EXCLUSIVE lock: queued behind a transaction of the release
    still serving, it holds every later read and write of the table behind it (of the publishing attempts:
    every publish stops)."""
    from django.db import migrations

    from config.migrationops import RemoveIndexWithoutBlocking

    removals = [
        (app, migration, operation)
        for app, migration, operation in _operations_on_existing_tables()
        if isinstance(operation, migrations.RemoveIndex)
    ]
    assert removals  # were the lookup to come out empty, the check below would pass on nothing
    blocking = [
        f"{app}.{migration.name}: {operation.name}"
        for app, migration, operation in removals
        if not (isinstance(operation, RemoveIndexWithoutBlocking) and not migration.atomic)
        and (app, migration.name) not in SHIPPED_BLOCKING_INDEXES
    ]
    assert blocking == [], "use config.migrationops.RemoveIndexWithoutBlocking, in a migration with atomic = False"


def _migrate_beside_the_old_release(app: str, before: str, adding: str, table: str, *, waits_on: str) -> None:
    """Migrate `app` from `before` to `adding` while requests of the release still serving write `table`: one
    held mid-transaction, another arriving meanwhile (schema_change_beside_writers); neither may fail. The
    database is migrated to the latest state again afterwards."""
    from django.core.management import call_command

    from tests.concurrency import schema_change_beside_writers

    call_command("migrate", app, before, verbosity=0)
    try:
        errors = schema_change_beside_writers(
            lambda: call_command("migrate", app, adding, verbosity=0),
            held=lambda: _write(table),  # a request of the old release, mid-transaction
            waits_on=waits_on,
            write=lambda cursor: _write(table, cursor=cursor),  # another request of the old release, meanwhile
        )
        assert errors == [], errors
    finally:
        call_command("migrate", verbosity=0)


def _write(table: str, cursor=None) -> None:
    """An UPDATE of every row: takes the table's write lock as any insert or update does."""
    from django.db import connection

    if cursor is None:
        with connection.cursor() as own:
            own.execute(f"UPDATE {table} SET id = id")
    else:
        cursor.execute(f"UPDATE {table} SET id = id")


def test_every_model_change_ships_with_its_migration():
    """A model changed without its migration works in the tests (the test database is built from the
    migrations, so the change is not there either) and then fails in production on the first query naming
    the missing column — or, for a changed default or constraint, silently does not apply."""
    from django.core.management import call_command

    try:
        call_command("makemigrations", "--check", "--dry-run", verbosity=0)
    except SystemExit as exit_:  # --check exits 1 when a migration would be written
        pytest.fail(f"models changed without a migration (makemigrations --check exited {exit_.code})")
