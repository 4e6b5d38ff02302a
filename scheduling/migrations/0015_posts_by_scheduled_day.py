# The admin's "scheduled for" filter (ScheduledDayFilter) reads one day's or one month's posts: without an
# index on scheduled_for each choice counted and listed them by reading every post ever scheduled (posts are
# never purged), 0.5 to 0.75 s at 500,000 posts and growing. Built concurrently: posts are written all through
# the deploy. Not atomic; safe to run again if interrupted (AddIndexWithoutBlocking keeps an index found built).

from django.db import migrations, models

from config.migrationops import AddIndexWithoutBlocking


class Migration(migrations.Migration):
    atomic = False
    dependencies = [
        ("scheduling", "0014_attempts_by_platform"),
    ]

    operations = [
        AddIndexWithoutBlocking(
            model_name="scheduledpost",
            index=models.Index(fields=["scheduled_for"], name="sp_scheduled_for"),
        ),
    ]
