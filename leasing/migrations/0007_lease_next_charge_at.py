# The renewal job used to read every lease ever made (released ones included) at every tick; it now reads
# only those whose next month has started, through lease_charge_due. The column has a default in the
# database, an instant before any lease: the release still running while this migrates inserts leases
# without it, and the job then reads such a lease once and moves it on. Existing leases are set from the
# ledger here (PostgreSQL); elsewhere (SQLite, the local demo) the first run of the job sets them.

import datetime

from django.db import migrations, models

EARLY = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)

# The start of each lease's next uncharged month: the same computation as billing.services' renewal job.
BACKFILL_SQL = """
UPDATE leasing_lease l
   SET next_charge_at = ((l.assigned_at AT TIME ZONE 'UTC') + make_interval(months => 1 + COALESCE(
           (SELECT max(e.period_index) FROM billing_ledgerentry e WHERE e.lease_id = l.id), -1)
       )) AT TIME ZONE 'UTC'
"""


def backfill(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKFILL_SQL)


class Migration(migrations.Migration):
    dependencies = [
        ("leasing", "0006_pool_account_refresh_claim"),
        ("billing", "0002_ledger_append_only"),
    ]

    operations = [
        migrations.AddField(
            model_name="lease",
            name="next_charge_at",
            field=models.DateTimeField(db_default=EARLY, default=EARLY, editable=False),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
        migrations.AddIndex(
            model_name="lease",
            index=models.Index(
                condition=models.Q(("released_at__isnull", True), ("next_charge_at__lt", models.F("released_at")), _connector="OR"),
                fields=["next_charge_at"],
                name="lease_charge_due",
            ),
        ),
    ]
