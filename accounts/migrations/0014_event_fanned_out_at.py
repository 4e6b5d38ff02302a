# When an event's webhook fan-out committed (accounts.webhooks.services.event_fan_out): the relay tick finds
# the events still waiting for one by its absence, through a partial index (0015), instead of looking for
# events without a WebhookFanout marker. Null for every event written before, and for those the release still
# serving writes during the deploy: 0015 and the tick mark the ones that have a marker.
#
# Nullable, no default: PostgreSQL adds it without rewriting the table, an instant under the table's ACCESS
# EXCLUSIVE lock, taken under a lock timeout (AddFieldBriefly) so that the events every change writes never
# queue behind a long transaction. On its own, atomic: the column and its migration's record commit together.

from django.db import migrations, models

from config.migrationops import AddFieldBriefly


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0013_social_account_sync_not_before"),
    ]

    operations = [
        AddFieldBriefly(
            model_name="event",
            name="fanned_out_at",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
    ]
