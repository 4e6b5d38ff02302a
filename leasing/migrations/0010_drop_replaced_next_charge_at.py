# A database deployed at f57993d applied that commit's 0007_lease_next_charge_at, which 09a5c8c deleted and
# replaced by another 0007 (0007_lease_charges_settled). It kept the replaced migration's column
# leasing_lease.next_charge_at (NOT NULL, a constant default: the code never names it, and inserts get the
# default) and that column's partial index lease_charge_due, written on every insert and update of a lease.
# Dropped here, the index with its column: an instant under the table's ACCESS EXCLUSIVE lock, taken under a
# lock timeout, so that lease reads and writes never queue behind it for a long transaction (AlterTableBriefly).
# On every other database the column does not exist, and nothing is done or locked.
#
# PostgreSQL only: on SQLite (`make run`, a local demo) the column is harmless, its default being in the
# database too, and is left.

from django.db import migrations

from config.migrationops import AlterTableBriefly

DROP_WHERE_PRESENT = """
DO $$
BEGIN
    IF EXISTS (
        SELECT FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name = 'leasing_lease' AND column_name = 'next_charge_at'
    ) THEN
        ALTER TABLE "leasing_lease" DROP COLUMN IF EXISTS "next_charge_at";
    END IF;
END
$$
"""


class Migration(migrations.Migration):
    dependencies = [
        ("leasing", "0009_pool_account_refresh_not_before"),
    ]

    # Not in Django's state (no model field had it since 09a5c8c); undone, nothing: the column stays gone.
    operations = [AlterTableBriefly([DROP_WHERE_PRESENT])]
