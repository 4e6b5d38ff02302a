# The dispatcher's claim reads each organization's soonest due posts on its own (services.posts_claim_due), so
# that one organization's burst cannot fill the window every other organization's posts had to be in. Partial
# (queued posts only), so it stays as small as the queue. Built concurrently: posts are written all through the
# deploy. Not atomic; safe to run again if interrupted (AddIndexWithoutBlocking keeps an index found built).

from django.db import migrations, models

from config.migrationops import AddIndexWithoutBlocking


class Migration(migrations.Migration):
    atomic = False
    dependencies = [
        ("scheduling", "0015_posts_by_scheduled_day"),
    ]

    operations = [
        AddIndexWithoutBlocking(
            model_name="scheduledpost",
            index=models.Index(
                fields=["organization", "due_at"],
                condition=models.Q(status="queued"),
                name="sp_org_due_queued",
            ),
        ),
    ]
