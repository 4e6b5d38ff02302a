# When staff last enabled an endpoint again (WebhookEndpoint.enabled_at): the fan-out sends it the events from
# then on, as it sends a new endpoint those from its creation on, so that an event whose fan-out was lost while
# it was off is not sent to it once the relay tick finds that event.
#
# Nullable, no default: PostgreSQL adds it without rewriting the table, under a lock timeout (AddFieldBriefly)
# so that the endpoint reads of every fan-out never queue behind a long transaction. The release still serving
# during the deploy enables endpoints without it: they receive those events as before.

from django.db import migrations, models

from config.migrationops import AddFieldBriefly


class Migration(migrations.Migration):
    dependencies = [
        ("webhooks", "0004_window_first_attempt_database_default"),
    ]

    operations = [
        AddFieldBriefly(
            model_name="webhookendpoint",
            name="enabled_at",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
    ]
