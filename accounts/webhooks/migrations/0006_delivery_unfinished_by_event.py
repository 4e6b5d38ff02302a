# The event purge (services.events_purge_expired) keeps an event while one of its deliveries is pending or
# being sent. Without an index on those few deliveries, each batch's check walked the event_id index of every
# delivery kept until it met an unfinished one (the newest, at its end): 0.1 to 0.45 s per batch of 2,000
# events at 300,000 deliveries, and the first purge after a year of events held a worker about 5 minutes.
# Built concurrently: deliveries are written all through the deploy. Not atomic; safe to run again if
# interrupted (AddIndexWithoutBlocking keeps an index found built).

from django.db import migrations, models

from config.migrationops import AddIndexWithoutBlocking


class Migration(migrations.Migration):
    atomic = False
    dependencies = [
        ("webhooks", "0005_endpoint_enabled_at"),
    ]

    operations = [
        AddIndexWithoutBlocking(
            model_name="webhookdelivery",
            index=models.Index(
                condition=models.Q(("status__in", ["pending", "sending"])),
                fields=["event"],
                name="whd_unfinished_event",
            ),
        ),
    ]
