"""What the dispatcher's claim costs the database on every tick (every 2 s), as it runs it: measured with
EXPLAIN (ANALYZE, BUFFERS) inside the claim's own transaction, so a setting it makes there counts."""

import json
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from accounts.models import Organization
from scheduling import services
from scheduling.models import ScheduledPost
from tests.factories import make_account
from tests.scheduling.publish_helpers import a_burst, schedule_now, sent_awaiting_check


@contextmanager
def explained_claims():
    """Each statement of the claim that reads posts, explained where it runs (same transaction, same
    settings) just before it runs: [(plan, buffers read or hit)]."""
    plans = []

    def explain(execute, sql, params, many, context):
        if not many and sql.lstrip().upper().startswith(("WITH", "SELECT")) and ScheduledPost._meta.db_table in sql:
            # The raw driver cursor: explaining through Django's would come back through this wrapper.
            raw = context["cursor"].cursor
            raw.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", params)
            plan = raw.fetchone()[0]
            plan = plan if isinstance(plan, list) else json.loads(plan)
            top = plan[0]["Plan"]
            plans.append((plan, top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0)))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(explain):
        yield plans


def posts_read(node: dict) -> int:
    """Rows of the posts table a plan's scans went through (the rows they returned and those their filters
    removed, on every loop)."""
    read = 0
    if node.get("Relation Name") == ScheduledPost._meta.db_table:
        read = (node["Actual Rows"] + node.get("Rows Removed by Filter", 0)) * node["Actual Loops"]
    return read + sum(posts_read(child) for child in node.get("Plans", []))


def churned_organizations(count: int) -> None:
    """Partners long gone: their rows stay (wallets, ledgers), with nothing queued."""
    Organization.objects.bulk_create(Organization(name=f"churned {n}") for n in range(count))


def test_a_tick_with_little_due_reads_the_same_few_pages_however_many_organizations_there_are(owner):
    """The claim read each organization's due posts on its own, one index probe per row of the organizations
    table: with 10,000 organizations (mostly churned) an idle tick took 35-56 ms every 2 s (0.15 ms before),
    and one with a backlog 250-470 ms. While every due post fits the claim's window (the usual case), the
    window alone decides, whatever the number of organizations."""
    post = schedule_now(owner, make_account(owner).pk)["id"]

    def claimed_and_pages():
        # Rolled back: the same post is claimed again with the organizations added. Measured against the same
        # claim before them, not a fixed count: earlier tests' rolled-back posts leave dead index entries the
        # claim walks past (a hundred pages or more in the full suite, a few alone), the same both times.
        with transaction.atomic():
            with explained_claims() as plans:
                claimed = services.posts_claim_due(limit=20)
            transaction.set_rollback(True)
        assert plans, "the claim read no post"
        return claimed, sum(buffers for _, buffers in plans)

    claimed_before, pages_before = claimed_and_pages()
    churned_organizations(3000)
    claimed, pages = claimed_and_pages()

    assert claimed_before == claimed == [post]
    assert pages - pages_before < 50, (pages_before, pages)


def test_a_claim_with_a_backlog_is_not_compiled_for_the_organizations_it_estimates(owner, sibling):
    """The per-organization read's estimate grows with the organizations table (a row each): past about 2,000
    organizations PostgreSQL's default jit_above_cost was reached, and each claim spent 250-300 ms compiling
    it for 20-50 ms of work, every tick of a backlog."""
    start = timezone.now() - timedelta(minutes=1)
    account = make_account(owner)
    # More than the window of a claim of 5 (100): each organization is read.
    a_burst(owner, account.pk, start=start, count=120)
    single = schedule_now(sibling, make_account(sibling).pk, when=start + timedelta(seconds=1))["id"]
    with connection.cursor() as cursor:
        cursor.execute("SET jit_above_cost = 0")  # as a large organizations table makes the estimate
    try:
        with explained_claims() as plans:
            claimed = services.posts_claim_due(limit=5)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET jit_above_cost")

    assert single in claimed and len(claimed) == 5
    assert plans and not [plan for plan, _ in plans if "JIT" in plan[0]], "the claim was JIT-compiled"


def test_past_the_window_each_organization_still_gets_its_turns_in_due_order(owner, sibling, outsider, monkeypatch):
    """The per-organization read stops at the turn no organization's post can be claimed beyond: what it
    claims is what sharing out every due post would, down to the last turn the claim reaches."""
    start = timezone.now() - timedelta(minutes=1)
    posts = []
    for offset, (tenant, count) in enumerate(((owner, 1), (sibling, 1), (outsider, 10))):
        account = make_account(tenant)
        posts.append(
            [
                schedule_now(tenant, account.pk, when=start + timedelta(seconds=n, milliseconds=offset))["id"]
                for n in range(count)
            ]
        )
    monkeypatch.setattr(services, "FAIR_CLAIM_WINDOW_BATCHES", 1)  # 12 due, a window of 5

    claimed = services.posts_claim_due(limit=5)

    assert claimed == [posts[0][0], posts[1][0], *posts[2][:3]]


@pytest.mark.django_db(transaction=True)
def test_past_the_window_three_dispatchers_at_once_claim_each_post_once(owner, sibling, monkeypatch):
    from tests.concurrency import run_in_threads

    for tenant in (owner, sibling):
        account = make_account(tenant)
        for _ in range(30):
            schedule_now(tenant, account.pk)
    monkeypatch.setattr(services, "FAIR_CLAIM_WINDOW_BATCHES", 1)

    def dispatcher() -> list[str]:
        claimed = []
        while ids := services.posts_claim_due(limit=4):
            claimed.extend(ids)
        return claimed

    claimed = run_in_threads(dispatcher, dispatcher, dispatcher)

    everything = [post for posts in claimed for post in posts]
    while ids := services.posts_claim_due(limit=4):  # what a dispatcher that found every candidate held left
        everything.extend(ids)
    assert len(everything) == 60 == len(set(everything))
    assert ScheduledPost.objects.filter(status="publishing", attempts=1).count() == 60


def test_an_idle_status_check_tick_reads_one_index_probe(owner):
    """The status checks take turns between organizations too; with nothing to check (most ticks) the claim
    is the one count it was before, after the count of checks in flight that bounds it
    (services.posts_checks_in_flight): two index probes."""
    post = sent_awaiting_check(a_burst(owner, make_account(owner).pk, start=timezone.now(), count=0))[0]
    ScheduledPost.objects.filter(pk=post.pk).update(next_check_at=timezone.now() + timedelta(minutes=2))
    churned_organizations(3000)

    with explained_claims() as plans:
        claimed = services.posts_claim_for_resolution()

    assert claimed == []
    assert len(plans) == 2 and sum(buffers for _, buffers in plans) < 100, [buffers for _, buffers in plans]


def test_checks_due_are_locked_one_probe_each_however_few_the_planner_expects(owner, sibling):
    """next_check_at is set on publishing posts only, so the planner expects about one post of a big table to
    have a check due, however many do. Joined back to the table in the statement that shared them out, the
    claimed posts were each found by probing the whole due range again: 118 ms and 140,000 buffers for 300
    checks due, growing with their square. They are locked through their ids, the due range read once."""
    start = timezone.now() - timedelta(minutes=1)
    history = a_burst(owner, make_account(owner).pk, start=start, count=12000)
    ScheduledPost.objects.filter(pk__in=[p.pk for p in history]).update(status="published", published_at=start)
    due = sent_awaiting_check(a_burst(owner, make_account(owner).pk, start=start, count=99))
    due += sent_awaiting_check(a_burst(sibling, make_account(sibling).pk, start=start + timedelta(seconds=1), count=0))
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {ScheduledPost._meta.db_table}")

    with explained_claims() as plans:
        claimed = services.posts_claim_for_resolution()

    assert sorted(claimed) == sorted(p.pk for p in due) and claimed[1] == due[-1].pk  # the sibling's, second
    read = [posts_read(plan[0]["Plan"]) for plan, _ in plans]
    assert sum(read) < 5 * len(due), read  # 10,000 (101 × 101) joined back
