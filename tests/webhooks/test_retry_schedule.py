"""Retries follow the documented schedule (exponential backoff with jitter, up to 3 days from the first
attempt, then failed) and honour Retry-After. Time is driven with time-machine; the receiver is real."""

import json
from datetime import timedelta
from email.utils import format_datetime

import pytest
import time_machine
from django.utils import timezone

from accounts.webhooks import services, tasks
from tests.webhooks.helpers import create_endpoint, delivery_of, record
from tests.webhooks.receiver import parse_signature, signed_with

pytestmark = pytest.mark.django_db(transaction=True)

MINUTE, HOUR = 60, 3600
# The partner docs (apis.WEBHOOKS_GUIDE, README): attempts at about these offsets from the first one, ±10 %
# jitter on each wait, and a last attempt when the window closes at +72 h.
DOCUMENTED_OFFSETS = [
    1 * MINUTE,
    4 * MINUTE,
    13 * MINUTE,
    40 * MINUTE,
    2 * HOUR,
    6 * HOUR,
    18 * HOUR,
    30 * HOUR,
    42 * HOUR,
    54 * HOUR,
    66 * HOUR,
]
WINDOW = 72 * HOUR


def nominal_wait(attempt: int) -> int:
    """Documented: 1 minute after the first failure, ×3 each time, at most 12 hours."""
    return min(MINUTE * 3 ** (attempt - 1), 12 * HOUR)


def test_a_receiver_answering_500_gets_attempts_on_the_documented_schedule_then_the_delivery_fails(owner, receivers):
    receiver = receivers(respond=lambda r: (500, {}))
    endpoint = create_endpoint(owner, receiver.url())

    with time_machine.travel(timezone.now(), tick=False) as traveller:
        event = record(owner)
        delivery = delivery_of(event, endpoint)
        for _ in range(30):  # bound: the schedule has 13 attempts
            if delivery.status != "pending":
                break
            traveller.move_to(delivery.next_attempt_at)
            tasks.webhooks_tick()
            delivery.refresh_from_db()

    times = [parse_signature(r.headers["layers-signature"])[0] for r in receiver.requests]
    offsets = [t - times[0] for t in times]
    waits = [b - a for a, b in zip(times, times[1:], strict=False)]
    # every attempt: same event, same bytes, numbered, signed afresh
    assert [r.headers["layers-delivery-attempt"] for r in receiver.requests] == [
        str(n) for n in range(1, len(times) + 1)
    ]
    assert {r.headers["layers-event-id"] for r in receiver.requests} == {event.pk}
    assert {r.body for r in receiver.requests} == {receiver.requests[0].body}
    assert json.loads(receiver.requests[0].body)["id"] == event.pk
    assert all(signed_with(r, endpoint["secret"]) for r in receiver.requests)
    # each wait is the documented backoff ±10 % (the last one may be cut short by the 3-day window)
    for attempt, wait in enumerate(waits[:-1], start=1):
        assert 0.9 * nominal_wait(attempt) - 1 <= wait <= 1.1 * nominal_wait(attempt) + 1, (attempt, wait)
    assert waits[-1] <= 1.1 * nominal_wait(len(waits)) + 1
    # the approximate attempt times given to partners hold
    for documented, actual in zip(DOCUMENTED_OFFSETS, offsets[1:], strict=False):
        assert abs(actual - documented) <= 0.1 * documented + 5 * MINUTE, (documented, actual)
    # the last attempt is made when the window closes, 3 days after the first, and the delivery then fails
    assert offsets[-1] == WINDOW
    assert 12 <= len(times) <= 14
    assert delivery.status == "failed"
    assert delivery.failed_at - delivery.first_attempt_at == timedelta(seconds=WINDOW)
    assert delivery.attempts == len(times)
    assert [a.status_code for a in delivery.attempt_log.all()] == [500] * len(times)


def test_retry_after_in_seconds_postpones_the_next_attempt(owner, receivers):
    receiver = receivers(respond=lambda r: (503, {"Retry-After": "3600"}))
    endpoint = create_endpoint(owner, receiver.url())

    with time_machine.travel(timezone.now(), tick=False):
        delivery = delivery_of(record(owner), endpoint)

    assert delivery.next_attempt_at - delivery.last_attempt_at == timedelta(hours=1)
    assert len(receiver.requests) == 1


def test_retry_after_as_an_http_date_postpones_the_next_attempt(owner, receivers):
    retry_at = None
    receiver = receivers(respond=lambda r: (429, {"Retry-After": format_datetime(retry_at, usegmt=True)}))
    endpoint = create_endpoint(owner, receiver.url())
    start = (timezone.now() + timedelta(seconds=1)).replace(microsecond=0)
    retry_at = start + timedelta(hours=2)

    with time_machine.travel(start, tick=False) as traveller:
        delivery = delivery_of(record(owner), endpoint)
        assert delivery.next_attempt_at == retry_at
        traveller.move_to(retry_at - timedelta(seconds=1))
        tasks.webhooks_tick()
        assert len(receiver.requests) == 1
        traveller.move_to(retry_at)
        tasks.webhooks_tick()

    assert len(receiver.requests) == 2


def test_a_short_retry_after_never_brings_the_next_attempt_before_the_backoff(owner, receivers):
    receiver = receivers(respond=lambda r: (503, {"Retry-After": "1"}))
    endpoint = create_endpoint(owner, receiver.url())

    with time_machine.travel(timezone.now(), tick=False):
        delivery = delivery_of(record(owner), endpoint)

    assert delivery.next_attempt_at - delivery.last_attempt_at >= timedelta(seconds=0.9 * MINUTE)


@pytest.mark.parametrize("header", ["\xb2", "3\xb9"])  # "²", "3¹": latin-1 bytes that str.isdigit() accepts, int() not
def test_a_retry_after_of_non_ascii_digits_is_recorded_as_a_failed_attempt(owner, receivers, header):
    receiver = receivers(respond=lambda r: (503, {"Retry-After": header}))
    endpoint = create_endpoint(owner, receiver.url())

    delivery = delivery_of(record(owner), endpoint)

    assert len(receiver.requests) == 1
    assert delivery.status == "pending" and [a.status_code for a in delivery.attempt_log.all()] == [503]
    assert delivery.next_attempt_at - delivery.last_attempt_at >= timedelta(seconds=0.9 * MINUTE)


def test_an_unreadable_retry_after_falls_back_to_the_backoff(owner, receivers):
    receiver = receivers(respond=lambda r: (503, {"Retry-After": "soon-ish"}))
    endpoint = create_endpoint(owner, receiver.url())

    with time_machine.travel(timezone.now(), tick=False):
        delivery = delivery_of(record(owner), endpoint)

    wait = delivery.next_attempt_at - delivery.last_attempt_at
    assert timedelta(seconds=0.9 * MINUTE) <= wait <= timedelta(seconds=1.1 * MINUTE)


def test_an_endpoint_stored_with_an_undeliverable_url_fails_its_deliveries_after_the_window(owner, receivers):
    # An endpoint created before such URLs were refused: the relay must still record each attempt and give
    # up after 3 days, not leave the delivery `sending` and claim it again forever.
    from accounts.webhooks.models import WebhookEndpoint

    receiver = receivers()
    endpoint = create_endpoint(owner, receiver.url())
    WebhookEndpoint.objects.filter(pk=endpoint["id"]).update(url=receiver.url().rstrip("/") + "/hooks/a\tb")

    with time_machine.travel(timezone.now(), tick=False) as traveller:
        delivery = delivery_of(record(owner), endpoint)
        for _ in range(80):
            traveller.shift(timedelta(hours=1))
            tasks.webhooks_tick()
        delivery.refresh_from_db()

    assert delivery.status == "failed"
    assert receiver.requests == []
    assert 1 < delivery.attempts < 20 and all(a.status_code is None for a in delivery.attempt_log.all())


def test_after_a_staff_resend_the_retries_follow_the_schedule_again_from_one_minute(owner, receivers):
    # The partner's receiver was down for the whole 3-day window; they fix it and ask support to resend,
    # which promises a fresh 3-day window. The receiver has one more blip: the retry must come back in about
    # a minute, as documented, not in the 12 hours the 14th attempt of the first window would wait.
    receiver = receivers(respond=lambda r: (500, {}))
    endpoint = create_endpoint(owner, receiver.url())
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        delivery = delivery_of(record(owner), endpoint)
        for _ in range(30):  # run the first window out
            if delivery.status != "pending":
                break
            traveller.move_to(delivery.next_attempt_at)
            tasks.webhooks_tick()
            delivery.refresh_from_db()
        assert delivery.status == "failed"
        first_window = delivery.attempts

        traveller.shift(timedelta(days=1))
        resent_at = timezone.now()
        services.delivery_resend(delivery_id=delivery.pk)  # on commit: the first resent attempt (500 again)
        delivery.refresh_from_db()
        waits = [delivery.next_attempt_at - delivery.last_attempt_at]
        traveller.move_to(delivery.next_attempt_at)
        tasks.webhooks_tick()
        delivery.refresh_from_db()
        waits.append(delivery.next_attempt_at - delivery.last_attempt_at)

    assert delivery.status == "pending"
    assert delivery.give_up_at == resent_at + timedelta(seconds=WINDOW)  # the fresh window
    for attempt, wait in enumerate(waits, start=1):
        nominal = nominal_wait(attempt)
        assert 0.9 * nominal - 1 <= wait.total_seconds() <= 1.1 * nominal + 1, (attempt, wait)
    # Layers-Delivery-Attempt goes on counting every request of the delivery (the receiver's logs stay unique)
    assert [r.headers["layers-delivery-attempt"] for r in receiver.requests[first_window:]] == [
        str(first_window + 1),
        str(first_window + 2),
    ]
    assert [a.number for a in delivery.attempt_log.all()] == list(range(1, first_window + 3))


def test_a_retry_after_too_large_for_a_date_is_capped_like_any_long_one(owner, receivers):
    # "Retry-After: 99999999999999999999" is digits, as the header allows: it waits the 12-hour cap, as a
    # week would, and never becomes a date past year 9999 (an OverflowError left the attempt unrecorded).
    receiver = receivers(respond=lambda r: (503, {"Retry-After": "9" * 20}))
    endpoint = create_endpoint(owner, receiver.url())

    with time_machine.travel(timezone.now(), tick=False):
        delivery = delivery_of(record(owner), endpoint)

    assert delivery.status == "pending" and [a.status_code for a in delivery.attempt_log.all()] == [503]
    assert delivery.next_attempt_at - delivery.last_attempt_at == services.MAX_RETRY_AFTER
