# Only an adjustment may name the leased account it is for (LedgerEntry.adjusted_lease): on a top-up or a charge
# it would count a payment, or a charge, as a refund of that account in the lease's page, the monthly billing per
# account and the partner's entries. Only wallet_adjust sets it today; the database now holds the rule itself.
#
# The ledger is written all the time and never purged (see 0004): the CHECK is added NOT VALID under a lock
# timeout (AlterTableBriefly: no scan while ACCESS EXCLUSIVE is held), then validated, which scans the ledger
# under SHARE UPDATE EXCLUSIVE, letting writes go on. `atomic = False` so that the validation does not run
# inside the transaction that took the ACCESS EXCLUSIVE lock. On SQLite (the local demo) no constraint is added,
# as in 0004: the service is the only writer there.

from django.db import migrations, models

from config.migrationops import AlterTableBriefly

NAME = "ledger_adjusted_lease_on_adjustments"
ADD_CONSTRAINT = (
    f'ALTER TABLE "billing_ledgerentry" ADD CONSTRAINT "{NAME}" '
    "CHECK (\"adjusted_lease_id\" IS NULL OR \"kind\" = 'adjustment') NOT VALID"
)
DROP_CONSTRAINT = f'ALTER TABLE "billing_ledgerentry" DROP CONSTRAINT IF EXISTS "{NAME}"'
VALIDATE_CONSTRAINT = f'ALTER TABLE "billing_ledgerentry" VALIDATE CONSTRAINT "{NAME}"'


def validate(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(VALIDATE_CONSTRAINT, params=None)


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("billing", "0004_ledger_adjusted_lease")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                AlterTableBriefly([ADD_CONSTRAINT], [DROP_CONSTRAINT]),
                migrations.RunPython(validate, migrations.RunPython.noop),
            ],
            state_operations=[
                migrations.AddConstraint(
                    model_name="ledgerentry",
                    constraint=models.CheckConstraint(
                        condition=models.Q(("adjusted_lease__isnull", True), ("kind", "adjustment"), _connector="OR"),
                        name=NAME,
                    ),
                ),
            ],
        ),
    ]
