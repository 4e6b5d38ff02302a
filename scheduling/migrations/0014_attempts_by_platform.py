# "Platforms now" reads the publishing attempts by platform then time (0013's column): a platform's latest
# publish or refusal is the first entry of its own range of an index, and the last 15 minutes' counts read only
# those minutes' entries. Built concurrently: attempts are written all through the deploy. Partial on a known
# platform, so the attempts written before 0013 (null) are left out and the build reads the table once.
#
# 0012's indexes by time alone are then dropped, concurrently as well: nothing reads them any more (their
# latest walked every platform's attempts of the day), and every publish wrote one of them.
#
# Not atomic (concurrent builds and drops); safe to run again if interrupted: an index found built is kept
# (AddIndexWithoutBlocking), one already dropped is skipped (IF EXISTS).

from django.db import migrations, models

from config.migrationops import AddIndexWithoutBlocking, RemoveIndexWithoutBlocking


class Migration(migrations.Migration):
    atomic = False
    dependencies = [
        ("scheduling", "0013_scheduledpostattempt_platform"),
    ]

    operations = [
        AddIndexWithoutBlocking(
            model_name="scheduledpostattempt",
            index=models.Index(
                condition=models.Q(
                    ("error_code__in", ["PLATFORM_UNAVAILABLE", "RATE_LIMITED"]),
                    ("outcome__in", ["retry", "failed"]),
                    ("platform__isnull", False),
                ),
                fields=["platform", "finished_at"],
                name="spa_refused_by_platform",
            ),
        ),
        AddIndexWithoutBlocking(
            model_name="scheduledpostattempt",
            index=models.Index(
                condition=models.Q(("outcome", "published"), ("platform__isnull", False)),
                fields=["platform", "finished_at"],
                name="spa_published_by_platform",
            ),
        ),
        RemoveIndexWithoutBlocking(model_name="scheduledpostattempt", name="spa_refused_by_time"),
        RemoveIndexWithoutBlocking(model_name="scheduledpostattempt", name="spa_published_by_time"),
    ]
