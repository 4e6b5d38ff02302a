# window_first_attempt's database default, on every database. cd4dd6f added it by editing 0002 after 0002
# had been applied: a database deployed at 9e56cee … 140e599 kept the column NOT NULL with no default, and a
# release older than the column (a rollback to before 9e56cee) could not insert a delivery: every fan-out
# failed (IntegrityError). Where 0002 already set it, there is nothing to do and nothing is locked: the ALTER
# runs only when the default is missing. When it runs, it takes the busy deliveries table's ACCESS EXCLUSIVE
# lock for an instant, under a lock timeout, so that it never holds the fan-out and the relay queued behind a
# long transaction (AlterTableBriefly).
#
# PostgreSQL only: SQLite (`make run`, a local demo) serves no release during a deploy, and has no ALTER
# COLUMN (it would rebuild the table).

from django.db import migrations

from config.migrationops import AlterTableBriefly

SET_DEFAULT_WHERE_MISSING = """
DO $$
BEGIN
    IF EXISTS (
        SELECT FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name = 'webhooks_webhookdelivery'
           AND column_name = 'window_first_attempt' AND column_default IS NULL
    ) THEN
        ALTER TABLE "webhooks_webhookdelivery" ALTER COLUMN "window_first_attempt" SET DEFAULT 1;
    END IF;
END
$$
"""


class Migration(migrations.Migration):
    dependencies = [
        ("webhooks", "0003_delivery_queued_at"),
    ]

    # The default is 0002's (the model's db_default): nothing for Django's state to learn; undone, nothing.
    operations = [AlterTableBriefly([SET_DEFAULT_WHERE_MISSING])]
