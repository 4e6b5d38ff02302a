# The leased account an adjustment is for (LedgerEntry.adjusted_lease): finance names it when a month of a leased
# account is refunded, and the lease's page and the monthly billing per account show it.
#
# The ledger is written all the time (every charge, top-up and adjustment) and never purged, so nothing here holds
# its writes for longer than a lock timeout:
# - the column is nullable, without a default: added under a lock timeout (AddFieldBriefly), no row rewritten, no
#   trigger fired (the append-only trigger is on UPDATE and DELETE of rows), and the previous release's inserts
#   leave it null;
# - its foreign key is added NOT VALID under a lock timeout (AlterTableBriefly: no scan of the ledger while the
#   lock is held), then validated, which scans the ledger under a lock that lets writes go on (SHARE UPDATE
#   EXCLUSIVE on the ledger, ROW SHARE on leases);
# - its partial index is built concurrently (AddIndexWithoutBlocking), hence `atomic = False`.
# On SQLite (the local demo) the column is added plainly and no constraint is: as in scheduling 0009, nothing runs
# there while it migrates, and the ORM's PROTECT does the rest.

import django.db.models.deletion
from django.db import migrations, models

from config.migrationops import AddFieldBriefly, AddIndexWithoutBlocking, AlterTableBriefly

ADD_CONSTRAINT = (
    'ALTER TABLE "billing_ledgerentry" ADD CONSTRAINT "ledger_adjusted_lease_fk" FOREIGN KEY ("adjusted_lease_id") '
    'REFERENCES "leasing_lease" ("id") DEFERRABLE INITIALLY DEFERRED NOT VALID'
)
DROP_CONSTRAINT = 'ALTER TABLE "billing_ledgerentry" DROP CONSTRAINT IF EXISTS "ledger_adjusted_lease_fk"'
VALIDATE_CONSTRAINT = 'ALTER TABLE "billing_ledgerentry" VALIDATE CONSTRAINT "ledger_adjusted_lease_fk"'


def validate(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(VALIDATE_CONSTRAINT, params=None)


HELP_TEXT = (
    "The lease an adjustment is for (a refund of a leased account): shown on the lease's page and in the monthly "
    "billing per account."
)


def field(*, db_constraint: bool):
    return models.ForeignKey(
        blank=True,
        db_constraint=db_constraint,
        db_index=False,
        help_text=HELP_TEXT,
        null=True,
        on_delete=django.db.models.deletion.PROTECT,
        related_name="adjustments",
        to="leasing.lease",
        verbose_name="for the leased account",
    )


class Migration(migrations.Migration):
    atomic = False
    dependencies = [
        ("billing", "0003_renewal_progress"),
        ("leasing", "0011_pool_account_token_lifetime"),
    ]

    operations = [
        AddFieldBriefly(model_name="ledgerentry", name="adjusted_lease", field=field(db_constraint=False)),
        migrations.SeparateDatabaseAndState(
            database_operations=[
                AlterTableBriefly([ADD_CONSTRAINT], [DROP_CONSTRAINT]),
                migrations.RunPython(validate, migrations.RunPython.noop),
            ],
            state_operations=[
                migrations.AlterField(model_name="ledgerentry", name="adjusted_lease", field=field(db_constraint=True)),
            ],
        ),
        AddIndexWithoutBlocking(
            model_name="ledgerentry",
            index=models.Index(
                condition=models.Q(("adjusted_lease__isnull", False)),
                fields=["adjusted_lease", "created_at"],
                name="ledger_adjusted_lease",
            ),
        ),
    ]
