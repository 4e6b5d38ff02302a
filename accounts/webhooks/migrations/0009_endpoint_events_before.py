# The event types an endpoint had before a partner's PATCH changed them (WebhookEndpoint.events_before): an event
# goes by the list of when it was recorded, however late its fan-out runs.
#
# Nullable, no default: PostgreSQL adds it without rewriting the table, under a lock timeout (AddFieldBriefly).
# The release still serving during the deploy changes events without it: those changes go by the fan-out's time,
# as they did.

from django.db import migrations, models

from config.migrationops import AddFieldBriefly


class Migration(migrations.Migration):
    dependencies = [
        ("webhooks", "0008_endpoint_disabled_by_partner"),
    ]

    operations = [
        AddFieldBriefly(
            model_name="webhookendpoint",
            name="events_before",
            field=models.JSONField(blank=True, editable=False, null=True),
        ),
    ]
