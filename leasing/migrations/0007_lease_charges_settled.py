# The renewal job used to read every lease ever made (released ones included) at every tick; it now reads
# only those not settled (live leases, and released ones with a month still to charge), through
# lease_charges_open. Released leases whose months are all charged are marked here from the ledger
# (PostgreSQL); elsewhere (SQLite, the local demo) the job's first run marks them. A lease the release still
# running during the deploy writes gets the column's default (not settled): the job reads it and marks it.

from django.db import migrations, models

# Released, and the month after the last charged one starts at or after the release: nothing more is owed.
BACKFILL_SQL = """
UPDATE leasing_lease l
   SET charges_settled = true
 WHERE l.released_at IS NOT NULL
   AND ((l.assigned_at AT TIME ZONE 'UTC') + make_interval(months => 1 + COALESCE(
           (SELECT max(e.period_index) FROM billing_ledgerentry e WHERE e.lease_id = l.id), -1)
       )) AT TIME ZONE 'UTC' >= l.released_at
"""


def backfill(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKFILL_SQL)


class Migration(migrations.Migration):
    # Each step commits on its own: the column (instant, a constant default), then the backfill (one UPDATE
    # of the released leases, row locks only); the index follows in 0008, built concurrently. In one
    # transaction, the lock the new column takes would block every read and write of leases until the
    # backfill was done.
    atomic = False
    dependencies = [
        ("leasing", "0006_pool_account_refresh_claim"),
        ("billing", "0002_ledger_append_only"),
    ]

    operations = [
        migrations.AddField(
            model_name="lease",
            name="charges_settled",
            field=models.BooleanField(db_default=False, default=False, editable=False),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
