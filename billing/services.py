"""State changes of billing: top-ups, adjustments, lease charges and the periodic renewal job.

Invariants (held here and by the database):
- every balance change is one appended LedgerEntry; the wallet's cached balance moves in the same
  transaction, by the same amount;
- every writer of an organization's ledger first locks that organization's Wallet row (several wallets:
  in id order, so writers never deadlock); the ledger of one organization is therefore written serially,
  and "what is already charged" read under that lock is exact;
- an entry's time is taken under that lock, after the ledger's newest entry (_entry_time): an organization's
  ledger order (time, then id) is the order its entries were committed in;
- a lease period is charged at most once: the unique constraint (lease, period_index) refuses a second row
  even from code that forgot the lock, and the bulk insert skips such rows (ON CONFLICT DO NOTHING) and
  moves the balance only by the rows it really inserted.

Insufficient funds: a charge is never refused, skipped or postponed. It is recorded even when it takes
the balance below zero; the wallet is then `past_due` (since `past_due_since`) until top-ups or
adjustments bring the balance back to ≥ 0; billing never loses what was used. Nothing refuses to lease more
accounts to a past-due organization: the request's fulfilment page shows ops its wallet with a warning, and
whether to assign anyway is their call (README, Billing)."""

import logging
from datetime import UTC, datetime, timedelta

from django.db import connection, transaction
from django.db.models import Max
from django.utils import timezone

from billing.models import LedgerEntry, RenewalProgress, Wallet
from config.api.errors import Validation
from config.api.fields import to_the_millisecond
from leasing.models import Lease
from leasing.periods import add_months, period_bounds

log = logging.getLogger(__name__)

MAX_ENTRY_CENTS = 100_000_000_00  # $100M: a typo guard far below bigint, not a business limit
DEFAULT_BATCH = 5000  # leases per transaction: ~0.5 s of wallet locks at most
# The step between an entry's time and the ledger's newest: a millisecond, the finest step of a time the API
# writes (config.api.fields.datetime_output). An entry is timed in whole milliseconds, so the `createdAt` a
# partner reads is the time stored and orders entries as the ledger does; a microsecond step was lost when
# the time was written, and two entries in order showed one time.
TICK = timedelta(milliseconds=1)


# --- Wallets --------------------------------------------------------------------------------------------


def wallets_open(organization_ids) -> None:
    """Give these organizations their wallet (balance 0) unless they have one. A new organization gets it at
    creation, so that finance finds it in the wallet list, where its first top-up is recorded, before any entry;
    every ledger writer still creates one that is missing (an organization of an earlier release, or made by a
    path that does not call this)."""
    Wallet.objects.bulk_create([Wallet(organization_id=pk) for pk in organization_ids], ignore_conflicts=True)


def _wallets_lock(organization_ids) -> dict[str, Wallet]:
    """Create the missing wallets, then lock them all, in id order. Must run inside a transaction."""
    ids = sorted(set(organization_ids))
    wallets_open(ids)
    return {w.pk: w for w in Wallet.objects.select_for_update().filter(pk__in=ids).order_by("pk")}


def _entry_time(organization_id: str) -> datetime:
    """The time of the entries appended now to the organization's ledger, whose wallet this transaction has
    locked.

    Partners page an organization's ledger newest first by time (selectors.LEDGER_ORDER), and the admin sums
    it in that order for the balance after each entry: an entry must sort after every entry committed before
    it. Read before the lock, the time of a writer that then waited for it would be older than the entries
    committed meanwhile: a partner who had read those would never see it (it sorts among rows already
    read), and the balance after each entry would show balances the wallet never had. Every writer holds
    the lock until it commits, so a time read under it is later than every committed entry's, on one clock;
    the web and the workers may run on hosts whose clocks disagree, so it is also kept after the ledger's
    newest entry (one step of ledger_org_newest). Billing periods are not read from it."""
    now = to_the_millisecond(timezone.now())
    newest = LedgerEntry.objects.filter(organization_id=organization_id).aggregate(newest=Max("created_at"))
    # A newest entry recorded before times were whole milliseconds may hold microseconds: cut before stepping.
    return now if newest["newest"] is None or newest["newest"] < now else to_the_millisecond(newest["newest"]) + TICK


def _move_balance(wallet: Wallet, delta: int, now: datetime) -> None:
    """Apply `delta` to the locked wallet's cached balance and its past-due flag."""
    wallet.balance_cents += delta
    if wallet.balance_cents < 0:
        wallet.past_due_since = wallet.past_due_since or now
    else:
        wallet.past_due_since = None
    wallet.updated_at = now
    wallet.save(update_fields=["balance_cents", "past_due_since", "updated_at"])


def _append(wallet: Wallet, entries: list[LedgerEntry], now: datetime) -> None:
    """Append entries of the locked wallet's organization and move its balance by their sum."""
    if not entries:
        return
    LedgerEntry.objects.bulk_create(entries)
    _move_balance(wallet, sum(e.amount_cents for e in entries), now)


def _check_cents(cents, *, positive: bool) -> None:
    if isinstance(cents, bool) or not isinstance(cents, int):
        raise Validation({"cents": ["Must be an integer number of cents."]})
    if positive and cents <= 0:
        raise Validation({"cents": ["A top-up must be positive."]})
    if cents == 0:
        raise Validation({"cents": ["An adjustment cannot be zero."]})
    if abs(cents) > MAX_ENTRY_CENTS:
        raise Validation({"cents": [f"At most {MAX_ENTRY_CENTS} cents per entry."]})


def _record(
    *, organization_id: str, kind: str, cents: int, reason: str, actor, reference: str, adjusted_lease_id=None
) -> LedgerEntry:
    with transaction.atomic():
        wallet = _wallets_lock([organization_id])[organization_id]
        if reference:
            # Under the wallet lock, so two submissions of one reference cannot both pass this check.
            first = LedgerEntry.objects.filter(organization_id=organization_id, reference=reference).first()
            if first is not None:
                if first.kind != kind or first.amount_cents != cents or first.adjusted_lease_id != adjusted_lease_id:
                    raise Validation({"reference": ["Already used for a different entry of this organization."]})
                first.already_recorded = True
                return first
        now = _entry_time(organization_id)
        entry = LedgerEntry(
            organization_id=organization_id,
            kind=kind,
            amount_cents=cents,
            reason=reason,
            actor=actor,
            reference=reference,
            adjusted_lease_id=adjusted_lease_id,
            created_at=now,
        )
        _append(wallet, [entry], now)
    log.info("wallet %s: %s %+d cents (%s)", organization_id, kind, cents, reason)
    return entry


def wallet_top_up(*, organization, cents: int, reason: str = "", actor=None, reference: str = "") -> LedgerEntry:
    """Credit `cents` (> 0) to the organization's wallet; clears `past_due` when the balance is ≥ 0 again.

    `actor` is the staff member (None for automation); `reference` (optional, e.g. a bank transfer id) makes
    the call idempotent: the same reference again returns the first entry. Raises Validation on a
    non-positive or absurd amount, or a reference already used for a different entry."""
    _check_cents(cents, positive=True)
    return _record(
        organization_id=organization.pk,
        kind=LedgerEntry.Kind.TOP_UP,
        cents=cents,
        reason=reason.strip(),
        actor=actor,
        reference=reference.strip(),
    )


def wallet_adjust(
    *, organization, cents: int, reason: str, actor=None, reference: str = "", lease: Lease | None = None
) -> LedgerEntry:
    """Record a signed correction (credit > 0, debit < 0) with a mandatory reason. The ledger is never
    edited: a wrong entry is corrected by an adjustment. `lease`: the leased account it is for (a refund of its
    month), which must be the organization's: the lease's page and the monthly billing per account show it.
    Raises Validation on zero, an absurd amount, an empty reason, a lease of another organization, or a
    reference already used for a different entry."""
    _check_cents(cents, positive=False)
    if not reason or not reason.strip():
        raise Validation({"reason": ["An adjustment needs a reason."]})
    # A lease's organization never changes: read before the wallet lock, it is the one that counts.
    if lease is not None and lease.organization_id != organization.pk:
        raise Validation({"lease": [f"That leased account is not leased to {organization.name}."]})
    return _record(
        organization_id=organization.pk,
        kind=LedgerEntry.Kind.ADJUSTMENT,
        cents=cents,
        reason=reason.strip(),
        actor=actor,
        reference=reference.strip(),
        adjusted_lease_id=lease.pk if lease is not None else None,
    )


# --- Lease charges, one lease ---------------------------------------------------------------------------


def _owed_indexes(lease: Lease, *, after: int, until: datetime) -> list[int]:
    """Periods after index `after` that are owed by `until`: period 0 always (billing begins on assignment),
    a later one once it has started (start ≤ until) and only if it started before the release."""
    anchor = lease.assigned_at.astimezone(UTC)
    owed = []
    index = after + 1
    while True:
        start = add_months(anchor, index)
        if index > 0 and (start > until or (lease.released_at is not None and start >= lease.released_at)):
            return owed
        owed.append(index)
        index += 1


def _charge_lease(*, lease_id: int, until: datetime) -> list[LedgerEntry]:
    """Charge every period of one lease owed by `until` that is not charged yet. `until` says which periods
    are owed; the entries' time is when they are recorded (_entry_time)."""
    with transaction.atomic():
        # Read the lease after taking the lock: its released_at is then the one that counts.
        organization_id = Lease.objects.filter(pk=lease_id).values_list("organization_id", flat=True).get()
        wallet = _wallets_lock([organization_id])[organization_id]
        now = _entry_time(organization_id)
        lease = Lease.objects.get(pk=lease_id)
        last = LedgerEntry.objects.filter(lease_id=lease_id).aggregate(last=Max("period_index"))["last"]
        anchor = lease.assigned_at.astimezone(UTC)
        entries = []
        for index in _owed_indexes(lease, after=-1 if last is None else last, until=until):
            start, end = period_bounds(anchor, index)
            entries.append(
                LedgerEntry(
                    organization_id=organization_id,
                    kind=LedgerEntry.Kind.LEASE_CHARGE,
                    amount_cents=-lease.monthly_price_cents,
                    lease_id=lease_id,
                    period_index=index,
                    period_start=start,
                    period_end=end,
                    created_at=now,
                )
            )
        _append(wallet, entries, now)
        charged_through = entries[-1].period_index if entries else last
        if (
            lease.released_at is not None
            and charged_through is not None
            and add_months(anchor, charged_through + 1) >= lease.released_at
        ):
            # Released, and its next month would start at or after the release: nothing more is ever owed.
            # The renewal job stops reading it (Lease.charges_settled).
            Lease.objects.filter(pk=lease_id, charges_settled=False).update(charges_settled=True)
    return entries


def lease_release_lock(*, organization_id: str) -> None:
    """Take the organization's wallet lock in a release's transaction, before the lease row. The renewal job
    takes wallets before reading leases, so it then waits for the release and reads its released_at: without
    this, a period that began while the release was committing could be charged after the release."""
    _wallets_lock([organization_id])


def lease_release_time(*, lease_id: int, now: datetime) -> datetime:
    """The `released_at` of a release made at `now`, in the release's transaction after lease_release_lock:
    `now` cut to the millisecond (as `releasedAt` is written), or, when the lease has a month charged that
    starts at that millisecond or later, one millisecond after that month's start.

    Why: a month is owed only if it started before the release, and the renewal job charges it from its first
    instant (start <= its clock). A job run 0.3 ms into a month charged it; a release 0.3 ms later, stored at
    the month's very start, answered a `paidThrough` a month later with a `releasedAt` that owes nothing of it
    (as does one whose worker's clock ran ahead). A charge is never taken back (the ledger is append-only), so
    the release is stored after what was charged, under the wallet lock, which every charge takes first."""
    released_at = to_the_millisecond(now)
    newest = LedgerEntry.objects.filter(lease_id=lease_id, period_index__gt=0).aggregate(start=Max("period_start"))[
        "start"
    ]
    if newest is not None and newest >= released_at:
        released_at = to_the_millisecond(newest) + TICK
    return released_at


def lease_billing_start(*, lease) -> None:
    """Charge period 0 (the month from `assigned_at`) of a lease just assigned; called inside the assignment's
    transaction, so the charge commits or rolls back with the lease. Idempotent: a lease whose period 0 is
    charged is left alone. Never refuses for lack of funds (the wallet may go past due)."""
    _charge_lease(lease_id=lease.pk, until=lease.assigned_at)


def lease_paid_through(*, lease, now: datetime | None = None) -> datetime:
    """The end of the latest charged period of the lease (`paidThrough` of a release).

    It first charges any period that already started (before `now` and before the release, if released)
    but that the renewal job has not reached yet, so the answer is final: the job never charges the lease
    later for a period that began while it was live. Call it once released_at is set (inside the release's
    transaction or after it)."""
    _charge_lease(lease_id=lease.pk, until=now or timezone.now())
    charges = LedgerEntry.objects.filter(lease_id=lease.pk).order_by("-period_index")
    return charges.values_list("period_end", flat=True).first()


# --- The renewal job --------------------------------------------------------------------------------------

# Period i of a lease starts at assigned_at + i months, computed on the UTC wall clock; PostgreSQL's
# `timestamp + interval 'n months'` clamps at month end exactly like leasing.periods.add_months
# (Jan 31 + 1 month = Feb 28/29, + 2 months = Mar 31): both count from the anchor, never chain.
# (tests/billing/test_charges.py checks the two agree on month ends and leap days.)

# A lease is due when its next uncharged period has started, and, if it was released, started before the
# release: a release that did not settle the period it fell in (the job had not reached it yet) is settled
# here, whichever way the lease was released. Released leases whose months are all settled (charges_settled,
# the history, which only grows) are never read: the pick goes through the partial index lease_charges_open.
# A released lease not marked yet is picked whether it owes or not, so that its batch marks it.
_DUE_BATCH_SQL = """
SELECT l.id, l.organization_id
  FROM leasing_lease l
 CROSS JOIN LATERAL (
       SELECT ((l.assigned_at AT TIME ZONE 'UTC') + make_interval(months => 1 + COALESCE(
                  (SELECT max(e.period_index) FROM billing_ledgerentry e WHERE e.lease_id = l.id), -1)
              )) AT TIME ZONE 'UTC' AS next_start
       ) n
 WHERE NOT l.charges_settled
   AND l.id > %(after)s
   AND ((n.next_start <= %(now)s AND (l.released_at IS NULL OR n.next_start < l.released_at))
        -- released and not marked settled (a release that did not settle): the batch settles or marks it
        OR l.released_at IS NOT NULL)
 ORDER BY l.id
 LIMIT %(limit)s
"""

# One statement per batch: compute every owed, uncharged period of the batch's leases (catch-up included),
# insert them, mark the batch's released leases whose months are now all charged as settled (only those
# rows are written: a live lease's row is never touched by a charge), and move each wallet by the sum of the
# rows really inserted (RETURNING, so a row skipped by ON CONFLICT never moves a balance). Each organization's
# rows are recorded at `recorded` (read once the wallets are locked) or just after its ledger's newest entry,
# whichever is later: _entry_time, per organization.
_CHARGE_BATCH_SQL = """
WITH leases AS (
    SELECT l.id, l.organization_id, l.monthly_price_cents, l.released_at,
           l.assigned_at AT TIME ZONE 'UTC' AS anchor,
           COALESCE((SELECT max(e.period_index) FROM billing_ledgerentry e WHERE e.lease_id = l.id), -1) AS last
      FROM leasing_lease l
     WHERE l.id = ANY(%(lease_ids)s)
), due AS (
    SELECT l.id AS lease_id, l.organization_id, l.monthly_price_cents, l.released_at, g.i AS period_index,
           (l.anchor + make_interval(months => g.i)) AT TIME ZONE 'UTC' AS period_start,
           (l.anchor + make_interval(months => g.i + 1)) AT TIME ZONE 'UTC' AS period_end
      FROM leases l
     CROSS JOIN LATERAL generate_series(
           l.last + 1,
           -- calendar months from the anchor's month to now's: an upper bound, made exact by `owed`
           ((EXTRACT(YEAR FROM %(now)s AT TIME ZONE 'UTC') - EXTRACT(YEAR FROM l.anchor)) * 12
            + EXTRACT(MONTH FROM %(now)s AT TIME ZONE 'UTC') - EXTRACT(MONTH FROM l.anchor))::int
     ) AS g(i)
), owed AS (
    SELECT * FROM due
     WHERE period_start <= %(now)s
       AND (period_index = 0 OR released_at IS NULL OR period_start < released_at)
), stamps AS (
    SELECT org AS organization_id,
           GREATEST(date_trunc('milliseconds', %(recorded)s::timestamptz),
                    date_trunc('milliseconds', (SELECT max(e.created_at) FROM billing_ledgerentry e
                                                 WHERE e.organization_id = org))
                    + interval '1 millisecond') AS recorded  -- GREATEST skips a NULL (no entry yet)
      FROM unnest(%(orgs)s::varchar[]) AS org
), inserted AS (
    INSERT INTO billing_ledgerentry (id, organization_id, kind, amount_cents, reason, reference, lease_id,
                                     period_index, period_start, period_end, created_at, actor_id)
    SELECT 'le_' || lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0')
                 || substr(md5(random()::text || o.lease_id::text || o.period_index::text), 1, 20),
           o.organization_id, 'lease_charge',
           -o.monthly_price_cents, '', '', o.lease_id, o.period_index, o.period_start, o.period_end, s.recorded,
           NULL
      FROM owed o
      JOIN stamps s ON s.organization_id = o.organization_id
     ORDER BY o.lease_id, o.period_index
        ON CONFLICT DO NOTHING
    RETURNING organization_id, amount_cents, created_at
), settled AS (
    -- owed holds every period charged now (by this statement, or by a run that committed before it).
    UPDATE leasing_lease t
       SET charges_settled = true
      FROM leases l
      LEFT JOIN (SELECT lease_id, max(period_index) AS upto FROM owed GROUP BY lease_id) o ON o.lease_id = l.id
     WHERE t.id = l.id
       AND l.released_at IS NOT NULL
       AND (l.anchor + make_interval(months => GREATEST(l.last, COALESCE(o.upto, -1)) + 1)) AT TIME ZONE 'UTC'
           >= l.released_at
), totals AS (
    SELECT organization_id, sum(amount_cents) AS delta, count(*) AS n, max(created_at) AS recorded
      FROM inserted
     GROUP BY organization_id
)
UPDATE billing_wallet w
   SET balance_cents = w.balance_cents + t.delta,
       past_due_since = CASE WHEN w.balance_cents + t.delta < 0 THEN COALESCE(w.past_due_since, t.recorded) END,
       updated_at = t.recorded
  FROM totals t
 WHERE w.organization_id = t.organization_id
RETURNING t.n
"""


_CREATE_WALLETS_SQL = """
INSERT INTO billing_wallet (organization_id, currency, balance_cents, past_due_since, updated_at)
SELECT org, 'USD', 0, NULL, %(recorded)s FROM unnest(%(orgs)s::varchar[]) AS org
    ON CONFLICT DO NOTHING
"""
_LOCK_WALLETS_SQL = """
SELECT organization_id FROM billing_wallet WHERE organization_id = ANY(%(orgs)s::varchar[])
 ORDER BY organization_id FOR UPDATE
"""


def _charge_due_bulk(*, now: datetime, batch_size: int) -> int:
    charged, after = 0, 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            # generate_series makes the planner expect ~100× the real rows; JIT-compiling for that estimate
            # costs more than running the statement.
            cursor.execute("SET LOCAL jit = off")
            cursor.execute(_DUE_BATCH_SQL, {"after": after, "now": now, "limit": batch_size})
            batch = cursor.fetchall()
            if not batch:
                return charged
            params = {
                "now": now,
                "recorded": timezone.now(),
                "lease_ids": [pk for pk, _ in batch],
                "orgs": sorted({org for _, org in batch}),
            }
            cursor.execute(_CREATE_WALLETS_SQL, params)
            cursor.execute(_LOCK_WALLETS_SQL, params)  # in id order, like every other ledger writer
            # The charges' time, read once the locks are held (_entry_time); `now` says which periods are due.
            params["recorded"] = timezone.now()
            # This statement starts after the lock, so it sees every charge committed before it (READ
            # COMMITTED): the batch charges what is still uncharged now, not what was when it was picked.
            cursor.execute(_CHARGE_BATCH_SQL, params)
            charged += sum(n for (n,) in cursor.fetchall())
        after = batch[-1][0]
        if len(batch) < batch_size:
            return charged


def charge_due_per_lease(*, now: datetime) -> int:
    """The same job one lease at a time, in Python: for databases without the bulk statement (SQLite dev).
    Released leases not settled yet are included, as in the bulk statement."""
    charged = 0
    for lease in Lease.objects.filter(charges_settled=False).order_by("pk").iterator():
        charged += len(_charge_lease(lease_id=lease.pk, until=now))
    return charged


def lease_charges_run(*, now: datetime | None = None, batch_size: int = DEFAULT_BATCH) -> int:
    """The periodic renewal job: charge every period of every lease that has started (before the lease's
    release, if it was released) and is not charged yet (several per lease when the job was down: catch-up),
    each exactly once. Safe to run twice or concurrently. Returns the number of charges recorded by this run."""
    now = now or timezone.now()
    if connection.vendor == "postgresql":
        charged = _charge_due_bulk(now=now, batch_size=batch_size)
    else:
        charged = charge_due_per_lease(now=now)
    _renewals_charged_through(now)
    if charged:
        log.info("lease renewals: %d period(s) charged", charged)
    return charged


def _renewals_charged_through(now: datetime) -> None:
    """Record that every lease month started by `now` is charged (RenewalProgress), once a run has finished:
    the monthly report tells finance a month that is over is not final until then. Only forward: a run
    that finishes after a later one (overlapping runs, a job run by hand for a past `now`) leaves it."""
    RenewalProgress.objects.bulk_create(
        [RenewalProgress(charged_through=now, recorded_at=timezone.now())], ignore_conflicts=True
    )
    RenewalProgress.objects.filter(pk=RenewalProgress.SINGLETON, charged_through__lt=now).update(
        charged_through=now, recorded_at=timezone.now()
    )
