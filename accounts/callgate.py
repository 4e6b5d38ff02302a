"""A bound on calls in flight to one outside receiver, and a cool-off for a receiver that stopped answering.

Webhook sends and managed-provider dispatches run on worker threads every organization shares, and each
call may wait for its whole timeout (15 s, 2 × 20 s). Unbounded, one organization's hanging receiver took
every thread and everyone else's webhooks and posts queued behind its timeouts. So a caller enters the
gate of its receiver (and, for webhooks, of its organization) before calling:
- at most `in_flight` holders at once: over that, the caller is refused ("busy") and defers its work for
  a few seconds — it neither waits on a thread nor counts an attempt;
- after `failures_to_trip` consecutive calls that got no answer (timeout, connection failure) the receiver is
  down until a cool-off ends ("down"): callers defer their work until then. When it ends, calls go again
  (at most `in_flight` of them); one more without an answer starts another cool-off, one answer (any HTTP
  status) ends the streak. A receiver replaced (a webhook endpoint given a new URL) is forgiven its streak and
  cool-off (`forgive`): they were about the one it replaced.

The state is a row per key in the database (CallGate), the source of truth every worker process shares:
`enter` runs inside the caller's transaction and locks the rows, so concurrent callers are counted exactly;
a slot carries a lease, so a worker that dies mid-call frees its slot when the lease ends. Lock order:
the caller's own row first (its delivery or post), then the gates in key order; `leave` locks only gates."""

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from accounts.models import CallGate

__all__ = ["BUSY_RETRY", "CallGate", "Limit", "Refused", "closed", "enter", "forgive", "free", "leave"]

# A refused ("busy") caller's work comes back after this (± jitter): slots free within one call's timeout.
BUSY_RETRY = timedelta(seconds=5)


@dataclass(frozen=True)
class Limit:
    key: str
    in_flight: int
    # None: this gate never goes down (an organization's gate: one of its endpoints being down must not stop
    # the others).
    failures_to_trip: int | None = None
    cool_off: timedelta = timedelta(0)


@dataclass(frozen=True)
class Refused:
    reason: str  # "busy", "down", or "held" (this holder is already in flight: a duplicate run)
    retry_at: datetime


def _jitter(when: datetime, spread: float = 0.2) -> datetime:
    # Deferred work spread out a little, so that it does not come back in one burst.
    return when + timedelta(seconds=random.uniform(0, spread * BUSY_RETRY.total_seconds()))  # noqa: S311


def _locked(key: str) -> CallGate:
    gate, _ = CallGate.objects.select_for_update().get_or_create(key=key)
    return gate


def enter(*, limits: list[Limit], holder: str, lease: timedelta, now: datetime | None = None) -> Refused | None:
    """Take a slot for `holder` at every gate of `limits`, or none: None when taken, otherwise why not and
    when to come back. Must run inside the caller's transaction (the gates stay locked until it ends, so
    the caller can defer its own row in the same transaction), and be followed by `leave` once the call
    is over, whatever happened."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("callgate.enter must run inside the caller's transaction")
    now = now or timezone.now()
    stamp = now.timestamp()
    gates = []
    for limit in sorted(limits, key=lambda limit: limit.key):
        gate = _locked(limit.key)
        live = {h: until for h, until in gate.slots.items() if until > stamp}
        if holder in live:
            return Refused("held", now)
        if limit.failures_to_trip and gate.down_until and gate.down_until > now:
            return Refused("down", _jitter(gate.down_until))
        if len(live) >= limit.in_flight:
            return Refused("busy", _jitter(now + BUSY_RETRY))
        gates.append((gate, live))
    for gate, live in gates:
        gate.slots = {**live, holder: stamp + lease.total_seconds()}
        gate.save(update_fields=["slots"])
    return None


def closed(gate: CallGate, limit: Limit, *, now: datetime) -> bool:
    """Whether `enter` would refuse a new holder at `gate` now (down, or `in_flight` holders already), as read
    without a lock: a hint for code that hands work out (the webhook relay tick) not to queue work that
    would only be deferred. It takes no slot; `enter` still decides when the work runs."""
    stamp = now.timestamp()
    if limit.failures_to_trip and gate.down_until and gate.down_until > now:
        return True
    return sum(1 for until in gate.slots.values() if until > stamp) >= limit.in_flight


def free(gate: CallGate | None, limit: Limit, *, now: datetime) -> int:
    """How many new holders `enter` would let in at `gate` now (0 while it is down), as read without a lock:
    `closed`'s hint as a number (None: no row yet, so no holder). It takes no slot."""
    if gate is None:
        return limit.in_flight
    if closed(gate, limit, now=now):
        return 0
    stamp = now.timestamp()
    return limit.in_flight - sum(1 for until in gate.slots.values() if until > stamp)


def leave(*, limits: list[Limit], holder: str, answered: bool | None) -> None:
    """Give back `holder`'s slots and record how the call went: `answered` True (any HTTP answer) ends a
    failure streak, False (no answer in time, no connection) extends it and may start a cool-off, None
    (no call was made) changes nothing. A holder without a slot (its lease ended) changes no slot."""
    now = timezone.now()
    stamp = now.timestamp()
    with transaction.atomic():
        for limit in sorted(limits, key=lambda limit: limit.key):
            gate = CallGate.objects.select_for_update().filter(key=limit.key).first()
            if gate is None:
                continue
            gate.slots = {h: until for h, until in gate.slots.items() if until > stamp and h != holder}
            if limit.failures_to_trip and answered is not None:
                if answered:
                    gate.failures, gate.down_until = 0, None
                else:
                    gate.failures += 1
                    if gate.failures >= limit.failures_to_trip:
                        gate.down_until = now + limit.cool_off
            gate.save(update_fields=["slots", "failures", "down_until"])


def forgive(*, key: str) -> None:
    """End the failure streak of `key`'s receiver, and its cool-off if one runs: the calls that went unanswered
    no longer say anything about where the next ones go (a webhook endpoint given a new URL). Its slots stay:
    the calls in flight still hold them, and each gives its own back (`leave`). Runs inside the caller's
    transaction, after the caller's own rows (the lock order of `enter`); no row yet, nothing to forgive."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("callgate.forgive must run inside the caller's transaction")
    CallGate.objects.filter(key=key).update(failures=0, down_until=None)
