"""The locks a data deletion request takes on the events it scrubs (accounts.services._events_scrubbed: every event
of the erased accounts, in every organization, FOR UPDATE, oldest first), beside the other writers of many events
in one transaction. Two transactions locking the same rows in different orders deadlock: PostgreSQL ends one of
them after a second, and if it is the erasure, Meta's request is answered 500 and the person stays on file."""

import pytest
from django.db import connection, transaction

from accounts import services
from accounts.models import Event
from tests.accounts.oauth_helpers import connected_account
from tests.accounts.test_instagram_data_deletion_copies import delete_data_of
from tests.accounts.test_instagram_deauthorization import control
from tests.concurrency import on_its_own_connection, wait_until_waiting

pytestmark = pytest.mark.django_db(transaction=True)


def waiting_on_locks(count: int, timeout: float = 15) -> None:
    """Until `count` other connections of this database wait on a lock in a statement on the events table."""
    wait_until_waiting(Event._meta.db_table, timeout, count=count)


def test_the_erasure_and_the_event_sequencer_lock_the_events_in_the_same_order(owner):
    """The sequencer (GET /v1/events, the webhook tick) gives an organization's new events their positions in one
    UPDATE, which locks the rows in whatever order its plan reads them; the erasure locks the same events oldest
    first. An erasure holding the older event and waiting for the newer, while the sequencer holds the newer and
    waits for the older, is a deadlock."""
    account = connected_account(owner, "instagram", "ig.locked")
    control("ig.locked")  # Meta's deauthorize first, as Meta sends it: the needs_reauth event
    older, newer = Event.objects.filter(type__startswith="social_account.").order_by("created_at", "pk")
    assert older.data["id"] == newer.data["id"] == account["id"]
    # Both not placed yet (written a moment before), the older row's last version written last: a plan reading
    # the table in its physical order (a sequential scan) meets the newer event first.
    Event.objects.filter(pk=newer.pk).update(position=None)
    Event.objects.filter(pk=older.pk).update(position=None)

    errors: list[BaseException] = []
    answers: list = []
    erasure = sequencer = None
    # Another transaction's key-share lock on the newer event (an insert of a delivery or marker referencing it)
    # makes the erasure wait there holding the older one, as it does whenever the sequencer is a moment ahead.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SELECT 1 FROM {Event._meta.db_table} WHERE id = %s FOR KEY SHARE", [newer.pk])
        erasure = on_its_own_connection(lambda: answers.append(delete_data_of_answer("ig.locked")), errors)
        waiting_on_locks(1)

        def place():
            with connection.cursor() as own:
                own.execute("SET enable_indexscan = off")
                own.execute("SET enable_bitmapscan = off")
            services.events_sequence(organization_id=older.organization_id)

        sequencer = on_its_own_connection(place, errors)
        waiting_on_locks(2)
    erasure.join(30)
    sequencer.join(30)
    assert errors == [], errors
    assert answers == [200]
    placed = Event.objects.filter(organization_id=older.organization_id, position__isnull=True)
    assert not placed.filter(pk__in=[older.pk, newer.pk]).exists()
    assert Event.objects.get(pk=older.pk).data["handle"] == ""


def delete_data_of_answer(username: str) -> int:
    try:
        delete_data_of(username)
    except AssertionError:
        return 500
    return 200


def test_the_erasure_and_the_event_purge_lock_an_event_and_its_deliveries_in_the_same_order(
    owner, receivers, monkeypatch
):
    """The retention purge locked an expired event's deliveries, then deleted the event; the erasure locks the
    event, then rewrites its deliveries' bodies. An erasure that had locked an event the purge was deleting at
    that moment (an account connected a retention ago) waited for the purge's lock on a delivery while the
    purge waited for the erasure's on the event: a deadlock."""
    from datetime import timedelta

    from django.conf import settings
    from django.utils import timezone

    from accounts.webhooks import services as webhook_services
    from accounts.webhooks.models import WebhookDelivery
    from tests.concurrency import SecondQueuesBehindFirst
    from tests.webhooks.helpers import create_endpoint

    create_endpoint(owner, receivers().url(), events=["social_account.connected"])
    account = connected_account(owner, "instagram", "ig.expiring")
    (connected,) = Event.objects.filter(type="social_account.connected")
    (delivery,) = WebhookDelivery.objects.filter(event=connected)
    assert delivery.status == WebhookDelivery.Status.DELIVERED
    # Recorded a retention ago: the purge's to delete now.
    Event.objects.filter(pk=connected.pk).update(
        created_at=timezone.now() - settings.LAYERS_EVENT_RETENTION - timedelta(hours=1)
    )

    race = SecondQueuesBehindFirst(waits_on=f'FROM "{Event._meta.db_table}"')
    rewritten = webhook_services.deliveries_body_rewritten

    def after_the_events_are_locked(**kwargs):
        race.hold()  # the erasure has locked the event; the purge now runs until it waits for it
        return rewritten(**kwargs)

    monkeypatch.setattr(webhook_services, "deliveries_body_rewritten", after_the_events_are_locked)
    erased, purged = race.run(lambda: delete_data_of_answer("ig.expiring"), webhook_services.events_purge_expired)

    assert race.overlapped
    assert erased == 200
    # The purge went first or after: either way the event is gone or scrubbed, never left with the person in it.
    left = Event.objects.filter(pk=connected.pk).first()
    assert purged == 1 or (left is not None and left.data["handle"] == "")
    assert account["id"]
