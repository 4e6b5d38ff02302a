"""Migration operations for tables that are written all the time (scheduled posts, leases).

A plain CREATE INDEX holds a lock that blocks every INSERT and UPDATE of the table for the whole build:
on the posts table, never purged, that stops scheduling and the dispatcher for as long as the index takes,
during the deploy. On PostgreSQL these build it CONCURRENTLY (writes go on; the migration must declare
`atomic = False`, since a concurrent build cannot run in a transaction); elsewhere (SQLite, the local demo)
a plain build, which is all that database has."""

from django.db import migrations


class AddIndexWithoutBlocking(migrations.AddIndex):
    """Builds the index unless a valid one of its name is there already (IF NOT EXISTS, which PostgreSQL
    and SQLite both take): a database deployed at 09a5c8c has lease_charges_open, built by that commit's
    leasing 0007 before 1d07921 moved the build to 0008, and stopped the deploy ("already exists"). An
    index found is taken as it is (names are unique across the project's migrations: it is this index,
    built by an earlier version of them); a failed build left behind is built again (`_drop_if_invalid`)."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            concurrently = _concurrently(schema_editor)
            if concurrently:
                _drop_if_invalid(schema_editor, model, self.index)
            template = schema_editor.sql_create_index_concurrently if concurrently else schema_editor.sql_create_index
            sql = template.replace("%(name)s", "IF NOT EXISTS %(name)s", 1)
            schema_editor.execute(self.index.create_sql(model, schema_editor, sql=sql), params=None)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        model = from_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            # DROP INDEX [CONCURRENTLY] IF EXISTS on PostgreSQL; SQLite's plain DROP INDEX needs the index.
            schema_editor.remove_index(
                model, self.index, **({"concurrently": True} if _concurrently(schema_editor) else {})
            )


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
