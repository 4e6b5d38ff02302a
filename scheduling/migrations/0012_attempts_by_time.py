# The admin's "Platforms now" (scheduling/platform_status.py) reads the publishing attempts of the last minutes:
# the calls refused for now and the publishes, each found by time through its own partial index instead of
# through the whole table (millions of rows). The two conditions are disjoint: an attempt enters one at most.

from django.db import migrations, models

from config.migrationops import AddIndexWithoutBlocking


class Migration(migrations.Migration):
    atomic = False  # the indexes are built concurrently: attempts are written all through the deploy
    dependencies = [
        ("scheduling", "0011_repair_onboarding_template"),
    ]

    operations = [
        AddIndexWithoutBlocking(
            model_name="scheduledpostattempt",
            index=models.Index(
                condition=models.Q(
                    ("error_code__in", ["PLATFORM_UNAVAILABLE", "RATE_LIMITED"]), ("outcome__in", ["retry", "failed"])
                ),
                fields=["finished_at"],
                name="spa_refused_by_time",
            ),
        ),
        AddIndexWithoutBlocking(
            model_name="scheduledpostattempt",
            index=models.Index(
                condition=models.Q(("outcome", "published")), fields=["finished_at"], name="spa_published_by_time"
            ),
        ),
    ]
