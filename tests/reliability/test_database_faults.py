"""PostgreSQL connections dropped under real worker processes (pg_terminate_backend on the worker's own
application_name: what a database restart, a failover or a cut connection does to it), at the worst
moments: while the platform is answering a publish call, and in the middle of a monthly charge run.
Afterwards the normal recovery runs (the resolver once the claim lease expired; the periodic charge job
again). Every post ends published exactly once, every lease period charged exactly once."""

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import transaction
from django.db.models import Count, Sum
from django.utils import timezone

from accounts.platforms.sandbox.models import Stall
from billing import services as billing
from billing.models import LedgerEntry, Wallet
from leasing.periods import period_index_at
from scheduling.models import ScheduledPost
from scheduling.tasks import dispatch_due_posts
from tests.accounts.oauth_helpers import connected_account
from tests.billing.factories import lease_assign
from tests.conftest import make_tenant
from tests.reliability.outcomes import tally
from tests.reliability.processes import backends, django_env, kill, manage, start, stop, terminate_backends, wait_for
from tests.scheduling.publish_helpers import schedule_now
from tests.scheduling.test_crash import stall

pytestmark = pytest.mark.django_db(transaction=True)

PUBLISHER = "layers-faulty-publisher"
BILLER = "layers-faulty-biller"
FINAL = (ScheduledPost.Status.PUBLISHED, ScheduledPost.Status.FAILED)


def stalls_taken() -> int:
    """Stalled platform answers so far: each one is a publisher waiting on the platform right now."""
    return Stall.objects.filter(remaining=0).count()


def orphaned(post_ids) -> int:
    """Posts a publisher claimed but never sent (it lost its connection before the point of no return):
    nobody works on them until their claim lease runs out."""
    return ScheduledPost.objects.filter(
        pk__in=post_ids, status=ScheduledPost.Status.PUBLISHING, publish_id="", publish_attempted_at__isnull=True
    ).count()


def in_flight(post_ids) -> dict:
    rows = ScheduledPost.objects.filter(pk__in=post_ids).exclude(status__in=FINAL)
    return dict(
        Counter(
            (row.status, "publish id stored" if row.publish_id else "no publish id", bool(row.publish_attempted_at))
            for row in rows
        )
    )


def test_posts_are_published_exactly_once_when_the_publishers_database_connection_drops_mid_publish(
    owner, live, figures, tmp_path
):
    # given three TikTok and three Instagram accounts with 24 posts due now, each with its own caption
    accounts = [connected_account(owner, "tiktok", f"dbdrop.tt{i}") for i in range(3)]
    accounts += [connected_account(owner, "instagram", f"dbdrop.ig{i}") for i in range(3)]
    post_ids = [
        schedule_now(
            owner, a["id"], media_type="video" if i % 2 == 0 else "image", caption=f"dbdrop {a['handle']} #{i}"
        )["id"]
        for i in range(4)
        for a in accounts
    ]
    # and the platform answering eight calls late, one call each (a stall is consumed by one call):
    # - TikTok's creator_info of the first post, before the point of no return (nothing posted yet);
    # - TikTok's init, after the platform created the post, before the publisher could store its id;
    # - Instagram's media_publish, after the media exists, before the publisher could record it.
    plan = {("tiktok", "/creator_info/"): 1, ("tiktok", "/init/"): 4, ("instagram", "/media_publish"): 3}
    for (platform, path), count in plan.items():
        for _ in range(count):
            stall(platform, path, seconds=1.2)
    planned = sum(plan.values())

    # when a real publisher process works through them and, each time the platform holds its call, its
    # database connection is dropped
    env = django_env(application_name=PUBLISHER, LAYERS_PUBLIC_URL=live, LAYERS_PLATFORM_TRANSPORT="http")
    proc = start(manage("dispatch_posts", "--interval", "0.2"), env=env, log=tmp_path / "publisher.log")
    dropped = 0
    try:
        seen = 0

        def next_stall() -> int:
            taken = stalls_taken()
            return taken if taken > seen or proc.poll() is not None else 0

        while seen < planned:
            taken = wait_for(next_stall, timeout=60, what="the next stalled platform call", interval=0.02)
            assert proc.poll() is None, (tmp_path / "publisher.log").read_text()[-3000:]
            dropped += terminate_backends(PUBLISHER)
            seen = taken
        # then the publisher keeps going on fresh connections until only the posts it never sent are left
        try:
            wait_for(
                lambda: (
                    ScheduledPost.objects.filter(pk__in=post_ids, status__in=FINAL).count() + orphaned(post_ids)
                    == len(post_ids)
                ),
                timeout=60,
            )
        except AssertionError:
            raise AssertionError(f"posts neither settled nor orphaned: {in_flight(post_ids)}") from None
        survived = proc.poll() is None
    finally:
        stop(proc)
    left_for_the_resolver = orphaned(post_ids)

    # and the normal recovery runs: once the claim lease has expired, the tick's resolver finds those posts
    with time_machine.travel(timezone.now() + timedelta(minutes=6)):
        for _ in range(4):
            dispatch_due_posts()

    out = tally(post_ids)
    figures(
        "db_drop_publish",
        cases=out.posts,
        faults_injected=dropped,
        losses=out.losses,
        **out.as_figures(),
        dropsBeforeThePlatformCall=plan[("tiktok", "/creator_info/")],
        dropsAfterThePlatformAnswered=plan[("tiktok", "/init/")] + plan[("instagram", "/media_publish")],
        settledByTheResolverAfterTheClaimLease=left_for_the_resolver,
    )
    assert dropped == planned  # every stalled call had its publisher's connection dropped under it
    assert survived, (tmp_path / "publisher.log").read_text()[-3000:]
    assert left_for_the_resolver == plan[("tiktok", "/creator_info/")]
    # every post published exactly once: no duplicate, none lost, none failed, none stuck
    assert out.published_once == len(post_ids), out
    assert out.losses == 0, out


CHARGE_RUN = (
    "from datetime import datetime; from billing.services import lease_charges_run; "
    "print(lease_charges_run(now=datetime.fromisoformat('{now}'), batch_size=10))"
)


def charged(lease_ids) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {pk: [] for pk in lease_ids}
    for lease_id, index in (
        LedgerEntry.objects.filter(lease_id__in=lease_ids)
        .order_by("period_index")
        .values_list("lease_id", "period_index")
    ):
        out[lease_id].append(index)
    return out


def test_each_lease_period_is_charged_exactly_once_when_the_charge_jobs_connection_drops_mid_run(figures, tmp_path):
    # given four organizations with 40 leases each, assigned through January 2025 (first month charged);
    # created organization after organization, so a charge run (batches in lease order) reaches them in turn
    tenants = [make_tenant(f"Billing org {i}") for i in range(4)]
    leases = [
        lease_assign(tenant, price_cents=1000 + j, at=datetime(2025, 1, 1 + j % 28, j % 24, tzinfo=UTC))
        for tenant in tenants
        for j in range(40)
    ]
    lease_ids = [lease.pk for lease in leases]
    by_id = {lease.pk: lease for lease in leases}
    rounds = [
        (datetime(2025, 3, 15, tzinfo=UTC), tenants[3]),
        (datetime(2025, 5, 15, tzinfo=UTC), tenants[2]),
        (datetime(2025, 7, 15, tzinfo=UTC), tenants[1]),
    ]
    dropped, partial_runs, exit_codes = 0, 0, []
    for now, held in rounds:
        expected_now = sum(period_index_at(lease.assigned_at, now) + 1 for lease in leases)
        before = LedgerEntry.objects.filter(kind="lease_charge").count()
        # when the periodic charge job runs in its own process, and its connection is dropped while it is in
        # the middle of a batch (held there by a finance top-up holding one organization's wallet)
        with transaction.atomic():
            Wallet.objects.select_for_update().get(pk=held.org.pk)
            proc = start(
                manage("shell", "-c", CHARGE_RUN.format(now=now.isoformat())),
                env=django_env(application_name=BILLER),
                log=tmp_path / "biller.log",
            )
            try:
                wait_for(
                    lambda proc=proc: backends(BILLER, waiting_on_lock=True) or proc.poll() is not None,
                    timeout=60,
                    what="the charge run waiting inside a batch",
                )
                assert proc.poll() is None, (tmp_path / "biller.log").read_text()[-3000:]
                dropped += terminate_backends(BILLER, waiting_on_lock=True)
                proc.wait(timeout=30)
            finally:
                kill(proc)
        exit_codes.append(proc.returncode)
        # the run stopped half-way: the batches it committed stay, the interrupted one left nothing
        recorded = LedgerEntry.objects.filter(kind="lease_charge").count()
        if before < recorded < expected_now:
            partial_runs += 1
        # then the next periodic run charges what is still due, each period once; a further run finds nothing
        billing.lease_charges_run(now=now)
        assert billing.lease_charges_run(now=now) == 0
        for lease_id, indexes in charged(lease_ids).items():
            lease = by_id[lease_id]
            assert indexes == list(range(period_index_at(lease.assigned_at, now) + 1)), (lease_id, indexes)

    final_now = rounds[-1][0]
    expected = sum(period_index_at(lease.assigned_at, final_now) + 1 for lease in leases)
    recorded = LedgerEntry.objects.filter(kind="lease_charge").count()
    double = (
        LedgerEntry.objects.filter(kind="lease_charge")
        .values("lease_id", "period_index")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count()
    )
    missing = sum(
        period_index_at(lease.assigned_at, final_now) + 1 - len(indexes)
        for lease, indexes in zip(leases, charged(lease_ids).values(), strict=True)
    )
    sums = dict(
        LedgerEntry.objects.values("organization_id")
        .annotate(s=Sum("amount_cents"))
        .values_list("organization_id", "s")
    )
    drifted = sum(1 for w in Wallet.objects.all() if w.balance_cents != sums.get(w.pk, 0))
    figures(
        "db_drop_charges",
        cases=expected,
        faults_injected=dropped,
        losses=double + missing + drifted,
        leases=len(leases),
        chargeRuns=len(rounds),
        runsCutHalfWay=partial_runs,
        chargesExpected=expected,
        chargesRecorded=recorded,
        doubleCharges=double,
        missingCharges=missing,
        walletsOffTheirLedger=drifted,
    )
    assert dropped == len(rounds) and partial_runs == len(rounds)
    assert all(code not in (0, None) for code in exit_codes), exit_codes  # each run died with its connection
    assert recorded == expected and double == 0 and missing == 0
    assert drifted == 0


# --- Idle connections dropped while the database stays up ---------------------------------------------
# A PostgreSQL restart or failover, or a proxy killing idle connections, drops the connections web and worker
# threads keep between requests and tasks (CONN_MAX_AGE). Django used them again without a check: the first
# request or task of each thread failed on it (a 500; a claimed post left to the resolver for 5 minutes) even
# though the database was back. Connections are now checked before their first use after a request or task.

IDLE_WEB, IDLE_WORKER = "layers-idle-web", "layers-idle-worker"


def _status_of_a_partner_call(port: int, key: str) -> int:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/projects", headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=20) as answer:
            return answer.status
    except urllib.error.HTTPError as refused:
        return refused.code
    except urllib.error.URLError:
        return 0  # not listening yet


def test_partner_calls_after_the_database_dropped_the_idle_web_connections_all_succeed(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from tests.reliability.processes import free_port

    tenant = make_tenant("Idle web")
    port = free_port()
    # The web process as `make run` starts it: its gunicorn configuration, the settings keeping connections.
    argv = [
        *manage()[:1],
        "-m",
        "gunicorn",
        "config.wsgi",
        "-c",
        "config/gunicorn_conf.py",
        "--bind",
        f"127.0.0.1:{port}",
    ]
    env = django_env(application_name=IDLE_WEB, settings_module="config.settings.dev")
    web = start(argv, env=env, log=tmp_path / "gunicorn.log")
    try:
        wait_for(lambda: _status_of_a_partner_call(port, tenant.raw_key) == 200, what="gunicorn", timeout=60)
        with ThreadPoolExecutor(32) as callers:
            calls = range(64)
            assert set(callers.map(lambda _: _status_of_a_partner_call(port, tenant.raw_key), calls)) == {200}
            held = backends(IDLE_WEB)
            assert held > 1 and terminate_backends(IDLE_WEB) == held  # the connections kept between requests
            after = list(callers.map(lambda _: _status_of_a_partner_call(port, tenant.raw_key), calls))
    finally:
        stop(web)
    assert after.count(200) == len(after), f"{len(after) - after.count(200)} of {len(after)} calls failed"


# The tests' settings run tasks eagerly; these messages go to the real worker through the real broker.
@pytest.mark.filterwarnings("ignore::celery.exceptions.AlwaysEagerIgnored")
def test_a_post_handed_to_a_worker_whose_idle_connection_was_dropped_is_sent_at_once(owner, tmp_path):
    from config.celery import app
    from scheduling import services
    from tests.reliability.processes import RedisServer

    account = connected_account(owner, "tiktok", "idle.worker")
    broker = RedisServer(tmp_path)
    broker.start()

    def send(name: str, *args) -> None:
        with app.connection_for_write(broker.url) as conn:
            app.send_task(name, args=list(args), connection=conn, queue="celery")

    env = django_env(
        application_name=IDLE_WORKER, settings_module="config.settings.dev", CELERY_BROKER_URL=broker.url,
        LAYERS_PLATFORM_TRANSPORT="wsgi",
    )  # fmt: skip
    argv = [*manage()[:1], "-m", "celery", "-A", "config", "worker", "--pool", "threads", "--concurrency", "1"]
    argv += ["-Q", "celery", "-n", f"idle@{tmp_path.name}", "-l", "info"]
    log = tmp_path / "worker.log"
    worker = start(argv, env=env, log=log)
    try:
        send("accounts.tasks.purge_idempotency_keys")  # the worker's thread opens its connection, and keeps it
        wait_for(lambda: backends(IDLE_WORKER) == 1 and "succeeded" in log.read_text(), timeout=60, what="a task")
        assert terminate_backends(IDLE_WORKER) == 1  # dropped while idle; the database itself stays up
        post_id = schedule_now(owner, account["id"], when=timezone.now())["id"]
        assert services.posts_claim_due() == [post_id]
        send("scheduling.tasks.publish_posts", [post_id])
        wait_for(
            lambda: ScheduledPost.objects.get(pk=post_id).publish_id or "publish_posts" in log.read_text(),
            timeout=30,
            what="the publish task",
        )
        wait_for(lambda: ScheduledPost.objects.get(pk=post_id).publish_id, timeout=5, what="the post sent")
    finally:
        stop(worker)
        broker.kill()
