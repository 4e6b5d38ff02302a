# The events already fanned out (those with a WebhookFanout marker) get their fanned_out_at from the marker,
# then the relay tick's partial index of the events still waiting for a fan-out is built, concurrently: events
# are written all through the deploy. Built after the marking, it holds only the few events left unmarked.
#
# The marking walks the markers in key order, MARK_BATCH at a time, each batch one short UPDATE (row locks
# only, its own transaction): on a big outbox it never holds the table. Events not yet placed in their
# organization's list (position null) are left to the tick: the release still serving places them now,
# several rows per statement, and two such statements on the same rows in another order could deadlock. So are
# the events that release fans out while this runs or afterwards: the tick marks, without fanning them out
# again, the unmarked events it finds a marker for (accounts.webhooks.services.events_fan_out_missed). An
# event without a marker stays unmarked, in the index, until it is fanned out or, past the retry window (the
# tick never reads further back), until the retention job purges it.
#
# Not atomic (the batches, the concurrent build); safe to run again if interrupted: a marked event is skipped,
# an index found built is kept (AddIndexWithoutBlocking).

from django.db import migrations, models
from django.db.models import OuterRef, Subquery

from config.migrationops import AddIndexWithoutBlocking

MARK_BATCH = 5000


def mark_fanned_out_events(apps, schema_editor):
    Event = apps.get_model("accounts", "Event")
    WebhookFanout = apps.get_model("webhooks", "WebhookFanout")
    marker_time = Subquery(WebhookFanout.objects.filter(pk=OuterRef("pk")).values("fanned_out_at")[:1])
    after = ""
    while True:
        ids = list(WebhookFanout.objects.filter(pk__gt=after).order_by("pk").values_list("pk", flat=True)[:MARK_BATCH])
        if not ids:
            return
        Event.objects.filter(pk__in=ids, fanned_out_at__isnull=True, position__isnull=False).update(
            fanned_out_at=marker_time
        )
        after = ids[-1]


class Migration(migrations.Migration):
    atomic = False
    dependencies = [
        ("accounts", "0014_event_fanned_out_at"),
        ("webhooks", "0004_window_first_attempt_database_default"),
    ]

    operations = [
        migrations.RunPython(mark_fanned_out_events, migrations.RunPython.noop),
        AddIndexWithoutBlocking(
            model_name="event",
            index=models.Index(
                condition=models.Q(("fanned_out_at__isnull", True)),
                fields=["organization", "created_at"],
                name="event_org_fanout_pending",
            ),
        ),
    ]
