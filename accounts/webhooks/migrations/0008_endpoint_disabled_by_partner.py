# A partner disables its own endpoint with PATCH /v1/webhook-endpoints/{id} {"enabled": false}: a reason of its
# own ("partner"), not "staff". Only the field's choices change: no SQL.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('webhooks', '0007_delivery_queued'),
    ]

    operations = [
        migrations.AlterField(
            model_name='webhookendpoint',
            name='disabled_reason',
            field=models.CharField(blank=True, choices=[('gone', 'The receiver answered 410 Gone'), ('staff', 'Disabled by Layers staff'), ('partner', 'Disabled by the partner (PATCH enabled=false)')], max_length=16),
        ),
    ]
