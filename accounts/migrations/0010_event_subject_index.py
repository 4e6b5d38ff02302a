# Support search the events about a post, an account or a lease request by its id (the admin's event list):
# this index finds them by the id in their payload instead of reading every event. Built concurrently:
# events are written all through the deploy (every change of every partner), and the table is never small.

from django.db import migrations, models

import accounts.models
from config.migrationops import AddIndexWithoutBlocking


class Migration(migrations.Migration):
    atomic = False  # the index is built concurrently: events are written all through the deploy
    dependencies = [
        ("accounts", "0009_call_gate"),
    ]

    operations = [
        AddIndexWithoutBlocking(
            model_name="event",
            index=models.Index(accounts.models.EventSubjectId("data"), name="event_subject"),
        ),
    ]
