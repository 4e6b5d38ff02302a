"""Migration operations for tables that are written all the time (scheduled posts, leases).

A plain CREATE INDEX holds a lock that blocks every INSERT and UPDATE of the table for the whole build:
on the posts table, never purged, that stops scheduling and the dispatcher for as long as the index takes,
during the deploy. On PostgreSQL these build it CONCURRENTLY (writes go on; the migration must declare
`atomic = False`, since a concurrent build cannot run in a transaction); elsewhere (SQLite, the local demo)
a plain build, which is all that database has."""

from django.db import migrations


class AddIndexWithoutBlocking(migrations.AddIndex):
    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            schema_editor.add_index(model, self.index, **_concurrently(schema_editor))

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        model = from_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            schema_editor.remove_index(model, self.index, **_concurrently(schema_editor))


def _concurrently(schema_editor) -> dict:
    return {"concurrently": True} if schema_editor.connection.vendor == "postgresql" else {}
