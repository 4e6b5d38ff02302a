# The publishing attempts of a post (support reads them on the post's page).
#
# A new table, created empty: its index is built with it. Its foreign key is not: adding a constraint that
# references scheduling_scheduledpost takes a lock on the posts table that conflicts with every write, and
# waiting for it behind a transaction of the release still serving would hold every later write of posts
# (scheduling, the dispatcher) behind it. The table is created without the constraint, which is then added
# under a lock timeout (AlterTableBriefly: it gives way and tries again). On SQLite (the local demo) the
# constraint is not added: nothing runs there while it migrates, and Django's ORM applies the cascade itself.

import django.db.models.deletion
from django.db import migrations, models

from config.migrationops import AlterTableBriefly

ADD_CONSTRAINT = (
    'ALTER TABLE "scheduling_scheduledpostattempt" ADD CONSTRAINT "spa_post_fk" FOREIGN KEY ("post_id") '
    'REFERENCES "scheduling_scheduledpost" ("id") DEFERRABLE INITIALLY DEFERRED'
)
DROP_CONSTRAINT = 'ALTER TABLE "scheduling_scheduledpostattempt" DROP CONSTRAINT IF EXISTS "spa_post_fk"'


class Migration(migrations.Migration):
    dependencies = [
        ("scheduling", "0008_scheduledpost_requeues"),
    ]

    operations = [
        migrations.CreateModel(
            name="ScheduledPostAttempt",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("number", models.PositiveSmallIntegerField(blank=True, null=True)),
                ("started_at", models.DateTimeField()),
                ("finished_at", models.DateTimeField()),
                (
                    "outcome",
                    models.CharField(
                        choices=[
                            ("published", "published"),
                            ("failed", "failed"),
                            ("retry", "retry later"),
                            ("requeued", "requeued: stopped before the platform"),
                            ("staff_retry", "queued again by staff"),
                        ],
                        max_length=16,
                    ),
                ),
                ("error_code", models.CharField(blank=True, max_length=32)),
                ("message", models.CharField(blank=True, max_length=500)),
                ("publish_id", models.CharField(blank=True, max_length=128)),
                (
                    "post",
                    models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="attempt_log",
                        to="scheduling.scheduledpost",
                    ),
                ),
            ],
            options={
                "verbose_name": "publishing attempt",
                "ordering": ["id"],
                "indexes": [models.Index(fields=["post", "id"], name="spa_post_attempts")],
            },
        ),
        migrations.SeparateDatabaseAndState(
            database_operations=[AlterTableBriefly([ADD_CONSTRAINT], [DROP_CONSTRAINT])],
            state_operations=[
                migrations.AlterField(
                    model_name="scheduledpostattempt",
                    name="post",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="attempt_log",
                        to="scheduling.scheduledpost",
                    ),
                ),
            ],
        ),
    ]
