"""Migration operations for tables that are written all the time (scheduled posts, leases, deliveries).

A plain CREATE INDEX holds a lock that blocks every INSERT and UPDATE of the table for the whole build:
on the posts table, never purged, that stops scheduling and the dispatcher for as long as the index takes,
during the deploy. On PostgreSQL AddIndexWithoutBlocking builds it CONCURRENTLY (writes go on; the
migration must declare `atomic = False`, since a concurrent build cannot run in a transaction); elsewhere
(SQLite, the local demo) a plain build, which is all that database has; RemoveIndexWithoutBlocking drops
one the same way. An ALTER TABLE, instant as it may be, waits for its lock behind the table's open
transactions and holds every later read and write behind it: AlterTableBriefly runs it under a lock timeout,
and AddFieldBriefly a new column's."""

import time
from functools import partial

from django.db import OperationalError, migrations, transaction


class AddIndexWithoutBlocking(migrations.AddIndex):
    """Builds the index unless a valid one of its name is there already (IF NOT EXISTS, which PostgreSQL
    and SQLite both take): a database deployed at 09a5c8c has lease_charges_open, built by that commit's
    leasing 0007 before 1d07921 moved the build to 0008, and stopped the deploy ("already exists"). An
    index found is taken as it is (names are unique across the project's migrations: it is this index,
    built by an earlier version of them); a failed build left behind is built again (`_drop_if_invalid`)."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            _build(schema_editor, model, self.index)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        model = from_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            _drop(schema_editor, model, self.index)


class RemoveIndexWithoutBlocking(migrations.RemoveIndex):
    """RemoveIndex on a table written all the time. A plain DROP INDEX takes the table's ACCESS EXCLUSIVE
    lock: waiting for it behind a transaction of the release still serving, it holds every later read and
    write of the table behind it. On PostgreSQL it is dropped CONCURRENTLY (IF EXISTS: a migration run again
    after an interruption goes on), which waits for those transactions without blocking anyone; the migration
    declares `atomic = False`. Elsewhere a plain drop. Backwards, built again as AddIndexWithoutBlocking does."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        model = from_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            index = from_state.models[app_label, self.model_name_lower].get_index_by_name(self.name)
            _drop(schema_editor, model, index)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            _build(schema_editor, model, to_state.models[app_label, self.model_name_lower].get_index_by_name(self.name))


def _build(schema_editor, model, index) -> None:
    concurrently = _concurrently(schema_editor)
    if concurrently:
        _drop_if_invalid(schema_editor, model, index)
    template = schema_editor.sql_create_index_concurrently if concurrently else schema_editor.sql_create_index
    sql = template.replace("%(name)s", "IF NOT EXISTS %(name)s", 1)
    schema_editor.execute(index.create_sql(model, schema_editor, sql=sql), params=None)


def _drop(schema_editor, model, index) -> None:
    # DROP INDEX [CONCURRENTLY] IF EXISTS on PostgreSQL; SQLite's plain DROP INDEX needs the index.
    schema_editor.remove_index(model, index, **({"concurrently": True} if _concurrently(schema_editor) else {}))


def _concurrently(schema_editor) -> bool:
    return schema_editor.connection.vendor == "postgresql"


def _drop_if_invalid(schema_editor, model, index) -> None:
    """A concurrent build that failed (a lock timeout, a deploy stopped half-way) leaves its index behind,
    INVALID: no query uses it, yet IF NOT EXISTS would take it for built, for good. Such an index is
    dropped first, so that it is built again (PostgreSQL's advice for a failed concurrent build)."""
    if schema_editor.collect_sql:  # sqlmigrate: print the build, read nothing
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", [schema_editor.quote_name(index.name)]
        )
        row = cursor.fetchone()
    if row is not None and not row[0]:
        schema_editor.remove_index(model, index, concurrently=True)


class AlterTableBriefly(migrations.RunSQL):
    """RunSQL for an ALTER TABLE that is instant once it has its lock, on a table written all the time;
    on PostgreSQL only (a no-op elsewhere: the migration using it says why that is enough).

    ALTER TABLE takes the table's ACCESS EXCLUSIVE lock. Waiting for it, behind a transaction open on the
    table (a request of the release still serving, a long report), it makes every later read and write of
    the table queue behind it: the API would stop for as long as that transaction lasts. With a lock_timeout
    it gives up after `lock_timeout`, lets the queue through, and tries again, `attempts` times in all; then
    the migration fails, having changed nothing, and `migrate` is run again later."""

    def __init__(self, sql, reverse_sql=migrations.RunSQL.noop, *, lock_timeout="2s", attempts=5, pause=1.0):
        super().__init__(sql, reverse_sql)
        self.lock_timeout, self.attempts, self.pause = lock_timeout, attempts, pause

    def deconstruct(self):
        name, args, kwargs = super().deconstruct()
        return name, args, {**kwargs, "lock_timeout": self.lock_timeout, "attempts": self.attempts, "pause": self.pause}

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        self._briefly(schema_editor, partial(super().database_forwards, app_label, schema_editor, from_state, to_state))

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if self.reverse_sql == migrations.RunSQL.noop:
            return  # nothing to undo: no lock to take either
        self._briefly(
            schema_editor, partial(super().database_backwards, app_label, schema_editor, from_state, to_state)
        )

    def describe(self):
        return f"ALTER TABLE under a {self.lock_timeout} lock timeout, {self.attempts} attempts (PostgreSQL only)"

    def _briefly(self, schema_editor, run) -> None:
        if schema_editor.connection.vendor != "postgresql":
            return
        _under_lock_timeout(schema_editor, run, self.lock_timeout, self.attempts, self.pause)


class _FieldBriefly:
    """A field operation whose ALTER TABLE runs under a lock timeout on PostgreSQL (AddFieldBriefly,
    AlterFieldBriefly); elsewhere the plain operation."""

    lock_timeout, attempts, pause = "2s", 5, 1.0

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        self._briefly(schema_editor, partial(super().database_forwards, app_label, schema_editor, from_state, to_state))

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        self._briefly(
            schema_editor, partial(super().database_backwards, app_label, schema_editor, from_state, to_state)
        )

    def _briefly(self, schema_editor, run) -> None:
        if schema_editor.connection.vendor != "postgresql":
            run()
            return
        _under_lock_timeout(schema_editor, run, self.lock_timeout, self.attempts, self.pause)


class AddFieldBriefly(_FieldBriefly, migrations.AddField):
    """AddField on a table written all the time, for a column PostgreSQL adds without rewriting the table
    (nullable, or a constant database default): its ALTER TABLE runs under a lock timeout and tries again,
    as AlterTableBriefly's does, instead of holding every read and write of the table queued behind a long
    transaction of the release still serving. Elsewhere (SQLite, the local demo) a plain AddField."""


class AlterFieldBriefly(_FieldBriefly, migrations.AlterField):
    """AlterField on a table written all the time, for a change PostgreSQL makes in its catalog alone (a
    column's database default: SET DEFAULT rewrites no row), under a lock timeout as AddFieldBriefly. Elsewhere
    (SQLite, the local demo) a plain AlterField."""


def _under_lock_timeout(schema_editor, run, lock_timeout: str, attempts: int, pause: float) -> None:
    """Run `run` (an ALTER TABLE) on PostgreSQL under `lock_timeout`, `attempts` times at most, `pause`
    seconds apart; the last lock timeout is raised."""
    connection = schema_editor.connection
    if schema_editor.collect_sql:  # sqlmigrate
        schema_editor.execute(f"SET LOCAL lock_timeout = '{lock_timeout}'")
        run()
        return
    for attempt in range(1, attempts + 1):
        try:
            # Its own transaction, or in an atomic migration a savepoint: an attempt that timed out is rolled
            # back (its SET LOCAL with it) and the migration's transaction goes on.
            with transaction.atomic(using=connection.alias):
                with connection.cursor() as cursor:
                    cursor.execute("SELECT set_config('lock_timeout', %s, true)", [lock_timeout])
                run()
            return
        except OperationalError as exc:
            if getattr(exc.__cause__, "sqlstate", None) != LOCK_NOT_AVAILABLE or attempt == attempts:
                raise
        time.sleep(pause)


LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE for a lock_timeout
