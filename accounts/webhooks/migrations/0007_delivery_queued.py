# An event's fan-out asks whether its organization has a send queued and not started yet
# (services._sends_to_start) before it queues any: a partial index holding just those few rows. Built
# concurrently: deliveries are written all through the deploy. Not atomic; safe to run again if interrupted
# (AddIndexWithoutBlocking keeps an index found built).

from django.db import migrations, models

from config.migrationops import AddIndexWithoutBlocking


class Migration(migrations.Migration):
    atomic = False
    dependencies = [
        ("webhooks", "0006_delivery_unfinished_by_event"),
    ]

    operations = [
        AddIndexWithoutBlocking(
            model_name="webhookdelivery",
            index=models.Index(
                fields=["endpoint"],
                condition=models.Q(status="pending", queued_at__isnull=False),
                name="whd_queued",
            ),
        ),
    ]
