# The metrics sync reads only posts published within LAYERS_METRICS_SYNC_WINDOW (and the post id follow-up
# within 7 days): this index finds them by time instead of through every published post.

from django.db import migrations, models

from config.migrationops import AddIndexWithoutBlocking


class Migration(migrations.Migration):
    atomic = False  # the index is built concurrently: posts are written all through the deploy
    dependencies = [
        ("scheduling", "0006_column_defaults_in_the_database"),
    ]

    operations = [
        AddIndexWithoutBlocking(
            model_name="scheduledpost",
            index=models.Index(
                condition=models.Q(("mode", "publish"), ("status", "published")),
                fields=["published_at"],
                name="sp_published_recent",
            ),
        ),
    ]
