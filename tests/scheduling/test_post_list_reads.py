"""GET /v1/projects/{id}/scheduled-posts filtered by status or account, on a project with a long history: a
dashboard asking for the project's few failed posts, or one small account's, reads about a page of posts,
not every post of the project (nor every failed post of every organization), on the first page as on one far
down the list. Read from EXPLAIN ANALYZE of the statement the list runs; no timing is asserted (the figures
at 200,000 posts are in BENCHMARKS.md, "Filtered lists of posts")."""

import json
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from scheduling.bench.post_list_plans import posts_read
from scheduling.models import ScheduledPost
from tests.factories import make_account
from tests.scheduling.publish_helpers import schedule_now

POSTS = 6000
LIMIT = 10
START = timezone.now() - timedelta(days=30)


def history(tenant, accounts: list, *, count: int = POSTS) -> list[ScheduledPost]:
    """`count` posts of `tenant`'s project, mostly published: 1 in 40 failed, 1 in 60 canceled. The second
    account has 1 in 11 of them, of each status, the first the rest; evenly over time, two posts a second
    (ties for the cursor)."""
    template = ScheduledPost.objects.get(pk=schedule_now(tenant, accounts[0].pk)["id"])
    template.delete()

    def status(n: int) -> str:
        return "failed" if n % 40 == 7 else "canceled" if n % 60 == 3 else "published"

    return ScheduledPost.objects.bulk_create(
        (
            ScheduledPost(
                organization_id=template.organization_id,
                project_id=template.project_id,
                container_id=template.container_id,
                social_account_id=accounts[1 if n % 11 == 5 else 0].pk,
                mode="publish",
                placement=template.placement,
                status=status(n),
                scheduled_for=START + timedelta(seconds=n // 2),
                due_at=START + timedelta(seconds=n // 2),
                created_at=START + timedelta(seconds=n // 2),
                published_at=START + timedelta(seconds=n // 2) if status(n) == "published" else None,
            )
            for n in range(count)
        ),
        batch_size=2000,
    )


@pytest.fixture
def long_history(owner, outsider):
    """The owner's project with its history (a big account and a small one), beside another organization's,
    the table analyzed as autovacuum would: (posts, big account id, small account id)."""
    big, small = make_account(owner), make_account(owner)
    posts = history(owner, [big, small])
    history(outsider, [make_account(outsider), make_account(outsider)], count=POSTS // 3)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {ScheduledPost._meta.db_table}")
    return posts, big.pk, small.pk


def pages(client, project_id: str, filters: dict, *, limit: int) -> list[tuple[list[str], int]]:
    """Every page of the list with `filters`, following nextCursor: (ids, rows of the posts table read)."""
    url = f"/v1/projects/{project_id}/scheduled-posts"
    served, cursor, reads = [], None, []

    def explain(execute, sql, params, many, context):
        if sql.lstrip().upper().startswith("SELECT") and f'FROM "{ScheduledPost._meta.db_table}"' in sql:
            raw = context["cursor"].cursor  # the driver's: Django's would come back through this wrapper
            raw.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", params)
            plan = raw.fetchone()[0]
            reads.append(posts_read((plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"]))
        return execute(sql, params, many, context)

    while True:
        reads.clear()
        with connection.execute_wrapper(explain):
            response = client.get(url, {**filters, "limit": limit, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.content[:300]
        assert len(reads) == 1, reads
        served.append(([row["id"] for row in response.json()["data"]], reads[0]))
        if (cursor := response.json()["nextCursor"]) is None:
            return served


@contextmanager
def read_in_the_lists_order():
    """Only plans that read the posts in the list's order through an index: no sort of what an index found
    (nor a table scan). Whether such a path exists, and what it reads, does not depend on how many rows the
    test has; which plan the planner prefers on a few thousand rows does (reading an account's few hundred
    posts and sorting them is cheaper there, and at production volume is not)."""
    with transaction.atomic(), connection.cursor() as cursor:
        for setting in ("enable_sort", "enable_seqscan", "enable_bitmapscan", "enable_incremental_sort"):
            cursor.execute(f"SET LOCAL {setting} = off")
        yield
        transaction.set_rollback(True)  # the settings end with this savepoint


def expected(posts: list[ScheduledPost], filters: dict) -> list[str]:
    fields = {"socialAccountId": "social_account_id", "status": "status"}
    rows = [p for p in posts if all(getattr(p, fields[name]) == value for name, value in filters.items())]
    return [p.pk for p in sorted(rows, key=lambda p: (p.created_at, p.pk), reverse=True)]


@pytest.mark.parametrize(
    "status, account",
    [
        ("failed", None),
        ("canceled", None),
        ("published", None),
        (None, "small"),
        (None, "big"),
        ("failed", "small"),
        ("failed", "big"),
        ("published", "small"),
        (None, None),
    ],
)
def test_every_page_of_a_filtered_list_is_read_from_its_own_range_in_the_lists_order(
    owner, long_history, status, account
):
    """A dashboard's `?status=failed` on a project whose posts are mostly published walked the project's
    posts newest first, filtering, until it had a page of failed ones (every post of the project for the last
    page), or read every failed post of every organization and sorted them; `?socialAccountId=` of a small
    account the same. Each filter is now read in the list's order from its own range, and a cursor starts
    the read where it points instead of going through every row newer than it."""
    posts, big, small = long_history
    filters = {
        **({"status": status} if status else {}),
        **({"socialAccountId": {"big": big, "small": small}[account]} if account else {}),
    }
    want = expected(posts, filters)
    # The common ones by larger pages, to keep the test short; the rarest by smaller ones, to have several.
    limit = 200 if len(want) >= 1000 else LIMIT if len(want) > 2 * LIMIT else 3
    assert len(want) > limit  # two pages at least: the cursor is exercised

    with read_in_the_lists_order():
        served = pages(owner.client, owner.project.id, filters, limit=limit)

    # Newest first, (created_at, id) ties included, each post once: the cursor neither skips nor repeats.
    assert [pk for ids, _ in served for pk in ids] == want
    reads = [read for _, read in served]
    if status and account:
        # Both filters: the narrower of the status's range of the project and the account's, filtered by the
        # other (or, as the planner may prefer, the account's posts of that status, sorted). Never the project.
        of_status = sum(1 for p in posts if p.status == status)
        of_account = sum(1 for p in posts if p.social_account_id == filters["socialAccountId"])
        assert max(reads) <= min(of_status, of_account), reads
    else:
        # About a page, a page deep in the list as the first: limit + 1 rows (the extra one says there is
        # more), those of the cursor's own second it served already (two posts a second here), and, for a
        # status most posts have, the few others the planner may skip reading the project's range instead.
        assert max(reads) <= 2 * limit + 3, reads


@pytest.mark.parametrize("filters", [{"status": "failed"}, {"status": "canceled"}, {"socialAccountId": "small"}])
def test_the_planner_takes_the_filters_range_for_the_first_pages(owner, long_history, filters):
    """With its own choice of plan (the previous test leaves it none but reading in order), on a table of
    this size: the first page, and one through a cursor, read about a page."""
    posts, _, small = long_history
    filters = {name: small if value == "small" else value for name, value in filters.items()}
    served = pages(owner.client, owner.project.id, filters, limit=LIMIT)

    assert [pk for ids, _ in served for pk in ids] == expected(posts, filters)
    assert max(read for _, read in served[:3]) <= LIMIT + 1 + 2, [read for _, read in served]
