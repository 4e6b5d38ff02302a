# Whose answer ended a publishing attempt ("tiktok", "instagram", "managed"), written by the publisher with the
# attempt: the admin's "Platforms now" (scheduling/platform_status.py) counts a platform's refusals and
# publishes by it, through indexes on (platform, finished_at) (0014), instead of joining every attempt to its
# post and account to tell its platform (a quiet platform's latest publish walked through the whole day's
# attempts of the others).
#
# Not filled in for the attempts already written, nor for those the release still serving writes during the
# deploy (it inserts without the column): the panel reads the last 15 minutes (its latest publish and refusal,
# 24 hours), so they drop out of it within a day, and until then a platform's count or latest may come out
# lower or older than it was.
#
# Nullable, no default: PostgreSQL adds it without rewriting the table, an instant under the table's ACCESS
# EXCLUSIVE lock, taken under a lock timeout (AddFieldBriefly) so that the attempts every publish writes never
# queue behind a long transaction. On its own, atomic: the column and its migration's record commit together.

from django.db import migrations, models

from config.migrationops import AddFieldBriefly


class Migration(migrations.Migration):
    dependencies = [
        ("scheduling", "0012_attempts_by_time"),
    ]

    operations = [
        AddFieldBriefly(
            model_name="scheduledpostattempt",
            name="platform",
            field=models.CharField(blank=True, editable=False, max_length=16, null=True),
        ),
    ]
