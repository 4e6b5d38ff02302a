"""What `manage.py bench_billing` measures: the monthly renewal job (billing.services.lease_charges_run) over
many due leases, next to the floor, a single `INSERT … SELECT` writing the same charges.

Every round runs on fresh copies of one seeded database (`CREATE DATABASE … TEMPLATE`), so the job and the
floor start from exactly the same rows, the same statistics and the same cold shared buffers:

- the floor: one statement that finds the due leases (live, next period started) and inserts one charge
  each. It is the least the database has to do: no batching, no wallet locks, no wallet balances, no
  catch-up of several missed months;
- the job, first run: what the Celery beat task does, in this process, committed;
- the job, second run at the same instant: it must charge nothing (a period is charged once), and should
  cost a fraction of the first run, because it only reads.

After the job the run checks what finance would: one new charge per due lease, no lease charged twice for a
period, and every wallet's cached balance equal to the sum of its ledger. On the last round's copy it then
times what finance opens at the end of the month: the monthly report's page (totals, chart, first page of
rows) and its CSV (every line, as the admin streams it), for the month with the most charges."""

import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from statistics import median

from django.db import connection, transaction
from django.db.models import Count, Sum
from django.db.models.functions import TruncMonth
from django.utils import timezone

from accounts.models import PlatformIdentity, SocialAccount
from billing import reports
from billing import services as billing_services
from billing.models import LedgerEntry, Wallet
from config.bench import harness
from leasing.models import Lease, LeaseRequest, PoolAccount
from leasing.periods import add_months, period_bounds

PRICES = (4900, 7900, 12900)  # cents a month, taken in turn
SPREAD_MINUTES = 20 * 24 * 60  # anchors spread over 20 days (month ends included, whatever today is)

# The floor. The id expression is the job's own (a charge row is the same row either way).
FLOOR_SQL = """
INSERT INTO billing_ledgerentry (id, organization_id, kind, amount_cents, reason, reference, lease_id,
                                 period_index, period_start, period_end, created_at, actor_id)
SELECT 'le_' || lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0')
             || substr(md5(random()::text || l.id::text || (c.last + 1)::text), 1, 20),
       l.organization_id, 'lease_charge', -l.monthly_price_cents, '', '', l.id, c.last + 1,
       ((l.assigned_at AT TIME ZONE 'UTC') + make_interval(months => c.last + 1)) AT TIME ZONE 'UTC',
       ((l.assigned_at AT TIME ZONE 'UTC') + make_interval(months => c.last + 2)) AT TIME ZONE 'UTC',
       %(now)s, NULL
  FROM leasing_lease l
  JOIN (SELECT lease_id, max(period_index) AS last FROM billing_ledgerentry
         WHERE lease_id IS NOT NULL GROUP BY lease_id) c ON c.lease_id = l.id
 WHERE l.released_at IS NULL
   AND ((l.assigned_at AT TIME ZONE 'UTC') + make_interval(months => c.last + 1)) AT TIME ZONE 'UTC' <= %(now)s
"""


@dataclass
class Seeded:
    organizations: int
    leases: int
    now: datetime
    seconds: float


@dataclass
class Round:
    number: int
    order: str
    floor_seconds: float
    floor_rows: int
    first_seconds: float
    first_charged: int
    second_seconds: float
    second_charged: int
    problems: list[str] = field(default_factory=list)


@dataclass
class FinanceReport:
    month: str
    charges: int
    page_seconds: float
    page_rows: int
    csv_seconds: float
    csv_rows: int


# --- Data ----------------------------------------------------------------------------------------------


def seed(*, organizations: int, leases: int, batch: int = 5000) -> Seeded:
    """`leases` live leases spread over `organizations`, each one month and up to 20 days old: period 0 is
    charged (as at assignment), period 1 has started and is due, period 2 has not. Every organization has a
    wallet whose balance is its ledger (a top-up, then the period-0 charges), some of them going past due
    on renewal. The rows are the ones lease assignment writes; tokens are left out (billing never reads
    them)."""
    from accounts import services as account_services

    started = time.monotonic()
    now = timezone.now().replace(microsecond=0)
    tenants = []
    for n in range(organizations):
        org = account_services.organization_create(name=f"Billing bench {n:04d}")
        tenants.append((org, account_services.project_create(organization=org, name="leased accounts")))
    requests = LeaseRequest.objects.bulk_create(
        [
            LeaseRequest(
                organization=org,
                project=project,
                count=1,
                vertical="fitness",
                language="en-US",
                status=LeaseRequest.Status.ASSIGNED,
            )
            for org, project in tenants
        ]
    )
    for start in range(0, leases, batch):
        with transaction.atomic():
            _seed_leases(range(start, min(leases, start + batch)), tenants=tenants, requests=requests, now=now)
    with transaction.atomic():
        charged = {
            row["organization_id"]: row["total"]
            for row in LedgerEntry.objects.values("organization_id").annotate(total=Sum("amount_cents"))
        }
        # Top-ups of 1.5 months for most, 0.9 months for every fifth organization (past due after renewal).
        entries, wallets = [], []
        for n, (org, _project) in enumerate(tenants):
            used = -charged.get(org.pk, 0)
            top_up = max(100, used * (9 if n % 5 == 0 else 15) // 10)
            entries.append(
                LedgerEntry(organization=org, kind=LedgerEntry.Kind.TOP_UP, amount_cents=top_up, created_at=now)
            )
            wallets.append(Wallet(organization=org, balance_cents=top_up - used, updated_at=now))
        LedgerEntry.objects.bulk_create(entries)
        # Each organization's wallet was opened at $0.00 with it (organization_create): set its balance.
        Wallet.objects.bulk_create(
            wallets,
            update_conflicts=True,
            unique_fields=["organization"],
            update_fields=["balance_cents", "updated_at"],
        )
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")  # like a database autovacuum has caught up with (and the same for all)
    return Seeded(organizations=organizations, leases=leases, now=now, seconds=time.monotonic() - started)


def _seed_leases(numbers: range, *, tenants, requests, now: datetime) -> None:
    pools, identities, accounts, rows, charges = [], [], [], [], []
    for n in numbers:
        org, project = tenants[n % len(tenants)]
        handle = f"bench_lease_{n:06d}"
        price = PRICES[n % len(PRICES)]
        pools.append(
            PoolAccount(
                handle=handle,
                platform_user_id=f"open_{n:06d}",
                vertical="fitness",
                monthly_price_cents=price,
                status=PoolAccount.Status.LEASED,
            )
        )
        identities.append(
            PlatformIdentity(organization=org, platform="tiktok", platform_user_id=f"open_{n:06d}", handle=handle)
        )
    PoolAccount.objects.bulk_create(pools)
    PlatformIdentity.objects.bulk_create(identities)
    for n, identity in zip(numbers, identities, strict=True):
        org, project = tenants[n % len(tenants)]
        accounts.append(
            SocialAccount(
                organization=org,
                project=project,
                identity=identity,
                platform="tiktok",
                kind=SocialAccount.Kind.LEASED,
            )
        )
    SocialAccount.objects.bulk_create(accounts)
    for n, pool, account in zip(numbers, pools, accounts, strict=True):
        org, project = tenants[n % len(tenants)]
        anchor = add_months(now, -1) - timedelta(minutes=1 + n * 7919 % SPREAD_MINUTES)
        rows.append(
            Lease(
                organization=org,
                project=project,
                request=requests[n % len(tenants)],
                pool_account=pool,
                social_account=account,
                monthly_price_cents=pool.monthly_price_cents,
                handle=pool.handle,
                assigned_at=anchor,
            )
        )
    Lease.objects.bulk_create(rows)
    for lease in rows:
        start, end = period_bounds(lease.assigned_at, 0)
        charges.append(
            LedgerEntry(
                organization_id=lease.organization_id,
                kind=LedgerEntry.Kind.LEASE_CHARGE,
                amount_cents=-lease.monthly_price_cents,
                lease=lease,
                period_index=0,
                period_start=start,
                period_end=end,
                created_at=lease.assigned_at,
            )
        )
    LedgerEntry.objects.bulk_create(charges)


# --- Measurements ----------------------------------------------------------------------------------------


def run_floor(database: str, *, now: datetime) -> tuple[float, int]:
    """Seconds and rows of the floor statement on `database`, commit included."""
    with harness.connect(database) as conn:
        started = time.monotonic()
        with conn.transaction():
            rows = conn.execute(FLOOR_SQL, {"now": now}).rowcount
        return time.monotonic() - started, rows


def run_job(*, now: datetime, batch_size: int) -> tuple[float, int]:
    """Seconds and charges of one run of the renewal job on Django's current database."""
    connection.ensure_connection()  # connecting is not the job's work (the worker's connection persists)
    started = time.monotonic()
    charged = billing_services.lease_charges_run(now=now, batch_size=batch_size)
    return time.monotonic() - started, charged


def check_job(*, leases: int, charged: int) -> list[str]:
    """What finance would check after the run; an empty list when everything holds."""
    problems = []
    if charged != leases:
        problems.append(f"the job charged {charged} periods for {leases} due leases")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM leasing_lease l WHERE NOT EXISTS (SELECT 1 FROM billing_ledgerentry e "
            "WHERE e.lease_id = l.id AND e.period_index = 1)"
        )
        (missing,) = cursor.fetchone()
        cursor.execute(
            "SELECT count(*) FROM billing_wallet w WHERE w.balance_cents <> "
            "(SELECT coalesce(sum(e.amount_cents), 0) FROM billing_ledgerentry e "
            " WHERE e.organization_id = w.organization_id)"
        )
        (drifted,) = cursor.fetchone()
        cursor.execute("SELECT count(*) FROM billing_ledgerentry WHERE period_index > 1")
        (ahead,) = cursor.fetchone()
    if missing:
        problems.append(f"{missing} leases have no charge for their due period")
    if drifted:
        problems.append(f"{drifted} wallets' balances differ from their ledgers")
    if ahead:
        problems.append(f"{ahead} charges for periods that have not started")
    return problems


def time_finance_report() -> FinanceReport:
    """The monthly report of the month with the most charges (the later of two with as many: the same month on
    every run over the same data, not the one the database happens to return first), on Django's current
    database: its page, then every row of its CSV."""
    month, charges = (
        LedgerEntry.objects.filter(kind=LedgerEntry.Kind.LEASE_CHARGE)
        .annotate(month=TruncMonth("period_start", tzinfo=UTC))
        .values("month")
        .annotate(n=Count("id"))
        .order_by("-n", "-month")
        .values_list("month", "n")
        .first()
    )
    started = time.monotonic()
    page = reports.monthly_report(month=month.date())
    page_seconds = time.monotonic() - started
    started = time.monotonic()
    csv_rows = sum(1 for _line in reports.csv_lines(month=month.date())) - 1  # without the header
    return FinanceReport(
        month=f"{month:%Y-%m}",
        charges=charges,
        page_seconds=page_seconds,
        page_rows=len(page.table),
        csv_seconds=time.monotonic() - started,
        csv_rows=csv_rows,
    )


def measure(*, template: str, seeded: Seeded, rounds: int, batch_size: int, out) -> tuple[list[Round], FinanceReport]:
    """`rounds` rounds, each on two fresh copies of `template` (one for the floor, one for the job). The
    order alternates (floor first, then job first), so neither always runs on the warmer machine."""
    results = []
    for number in range(1, rounds + 1):
        floor_db, job_db = f"{template}_f{number}", f"{template}_j{number}"
        harness.clone_database(template, floor_db)
        harness.clone_database(template, job_db)
        try:
            order = "floor, job" if number % 2 else "job, floor"
            figures = {}
            for step in order.split(", "):
                if step == "floor":
                    figures["floor"] = run_floor(floor_db, now=seeded.now)
                    continue
                with harness.use_database(job_db):
                    figures["first"] = run_job(now=seeded.now, batch_size=batch_size)
                    figures["second"] = run_job(now=seeded.now, batch_size=batch_size)
                    problems = check_job(leases=seeded.leases, charged=figures["first"][1])
                    if number == rounds:
                        finance = time_finance_report()
            floor_seconds, floor_rows = figures["floor"]
            if floor_rows != seeded.leases:
                problems.append(f"the floor inserted {floor_rows} rows for {seeded.leases} due leases")
            if figures["second"][1]:
                problems.append(f"the second run charged {figures['second'][1]} periods again")
            result = Round(
                number=number,
                order=order,
                floor_seconds=floor_seconds,
                floor_rows=floor_rows,
                first_seconds=figures["first"][0],
                first_charged=figures["first"][1],
                second_seconds=figures["second"][0],
                second_charged=figures["second"][1],
                problems=problems,
            )
            out(
                f"  round {number} ({order}): floor {floor_seconds:.2f} s, job {result.first_seconds:.2f} s "
                f"({result.first_charged} charged), second run {result.second_seconds:.3f} s "
                f"({result.second_charged} charged)" + ("" if not problems else f" — PROBLEMS: {problems}")
            )
            results.append(result)
        finally:
            harness.drop_database(floor_db)
            harness.drop_database(job_db)
    out(
        f"  finance report of {finance.month} ({finance.charges} charges): page {finance.page_seconds:.2f} s "
        f"({finance.page_rows} rows shown), CSV {finance.csv_seconds:.2f} s ({finance.csv_rows} rows)"
    )
    return results, finance


def summary(results: list[Round]) -> dict:
    floor = median(r.floor_seconds for r in results)
    first = median(r.first_seconds for r in results)
    second = median(r.second_seconds for r in results)
    return {
        "floor_seconds": floor,
        "first_seconds": first,
        "second_seconds": second,
        "job_vs_floor": first / floor,
        "second_vs_first": second / first,
        "problems": [p for r in results for p in r.problems],
    }


def as_dicts(results: list[Round]) -> list[dict]:
    return [asdict(r) for r in results]
