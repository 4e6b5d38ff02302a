"""A backlogged webhooks queue (a worker busy with slow receivers): the sends the relay tick queues wait in
the broker for minutes. An attempt is what the receiver gets: one still waiting in the queue is not an
attempt — it must not be numbered, logged as "relay stopped mid-attempt", escalate the backoff or run the
3-day window — and a backlog must not fill up with copies of the same send."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from accounts.webhooks import tasks
from tests.webhooks.helpers import create_endpoint, delivery_of, record

pytestmark = pytest.mark.django_db(transaction=True)

RELAY_TASKS = (tasks.webhook_deliver, tasks.webhook_send)


class Backlog:
    """The webhooks queue while its worker is behind: what is queued waits here until `catch_up()`."""

    def __init__(self, monkeypatch):
        self.messages: list[tuple] = []
        for task in RELAY_TASKS:
            monkeypatch.setattr(task, "delay", lambda *args, _task=task: self.messages.append((_task, args)))
        self._monkeypatch = monkeypatch

    def catch_up(self) -> list:
        """The worker is back: it runs every waiting message, oldest first."""
        self._monkeypatch.undo()
        messages, self.messages = self.messages, []
        return [task.apply(args=args).result for task, args in messages]


def test_a_send_waiting_in_a_backlogged_queue_past_a_lease_is_sent_once_as_attempt_1(owner, receivers, monkeypatch):
    receiver = receivers(respond=lambda r: (500, {}))
    endpoint = create_endpoint(owner, receiver.url())
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        backlog = Backlog(monkeypatch)
        delivery = delivery_of(record(owner), endpoint)  # its on-commit send waits in the backlog too
        for _ in range(30):  # the beat sends a tick every 15 s: 7.5 minutes behind, longer than a lease
            traveller.shift(timedelta(seconds=15))
            tasks.webhooks_tick()
        delivery.refresh_from_db()
        assert (delivery.status, delivery.attempts, delivery.attempt_log.count()) == ("pending", 0, 0)
        assert delivery.give_up_at is None  # the 3-day window has not started: nothing was sent

        backlog.catch_up()
        delivery.refresh_from_db()

    (request,) = receiver.requests
    assert request.headers["layers-delivery-attempt"] == "1"
    assert delivery.attempts == 1
    (attempt,) = delivery.attempt_log.all()
    assert (attempt.number, attempt.status_code, attempt.error) == (1, 500, "HTTP 500")
    # documented: the first retry comes about 1 minute after the first failed attempt, ±10 %
    assert timedelta(seconds=53) <= delivery.next_attempt_at - delivery.last_attempt_at <= timedelta(seconds=67)
    assert delivery.give_up_at == delivery.first_attempt_at + timedelta(days=3)


def test_ticks_do_not_fill_a_backlogged_queue_with_copies_of_one_send(owner, receivers, monkeypatch):
    endpoint = create_endpoint(owner, receivers().url())
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        backlog = Backlog(monkeypatch)
        delivery = delivery_of(record(owner), endpoint)
        on_commit = len(backlog.messages)
        for _ in range(30):  # 7.5 minutes of ticks while the worker is behind
            traveller.shift(timedelta(seconds=15))
            tasks.webhooks_tick()

        # queued again only once a lease (5 min) has passed since the fan-out queued it: a message the broker
        # lost is not waited on longer
        assert len(backlog.messages) - on_commit == 1, backlog.messages
        outcomes = backlog.catch_up()
        delivery.refresh_from_db()

    assert sorted(outcomes) == ["delivered", "skipped"]
    assert (delivery.status, delivery.attempts) == ("delivered", 1)
