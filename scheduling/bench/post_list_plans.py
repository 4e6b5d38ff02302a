"""How GET /v1/projects/{id}/scheduled-posts reads the posts table, filter by filter, on one big project:
EXPLAIN (ANALYZE, BUFFERS) of the statement the list runs (through the API, as a partner calls it), first page
and a page deep in the list. Not a benchmark of the API: the rows and pages each plan reads.

    createdb -h 127.0.0.1 -U postgres bench_lists
    export DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_lists
    .venv/bin/python manage.py migrate
    .venv/bin/python -m scheduling.bench.post_list_plans --posts 200000   # seeds the first time only

The project's posts are mostly published, 1 in 600 failed and 1 in 1,000 canceled, spread evenly over time,
on four accounts holding 60 %, 30 %, 9 % and 1 % of them (a big account and a small one to filter by); another
organization's project as big beside it."""

import argparse
import json
import os

ACCOUNT_SHARES = (60, 30, 9, 1)
FAILED, CANCELED = "mod(g, 600) = 7", "mod(g, 1000) = 3"
NAME = "post list plans"


def _seed(posts: int, name: str):
    from django.db import connection
    from django.utils import timezone

    from scheduling.bench.seed import seed_accounts, seed_posts, seed_tenant
    from scheduling.models import ScheduledPost

    organization, project = seed_tenant(name)
    accounts = seed_accounts(
        organization=organization, project=project, count=len(ACCOUNT_SHARES), platforms=["tiktok"], prefix="lp"
    )
    template = ScheduledPost.objects.get(
        pk=seed_posts(accounts=accounts[:1], count=1, scheduled_for=timezone.now(), label="lp")[0]
    )
    ids = [a.pk for a in accounts]
    # Row g goes to the account whose share covers g mod 101 (prime to the statuses' 600 and 1000: every
    # account has its failed and canceled posts); rows are created one minute apart, newest last.
    account_of = " ".join(
        f"WHEN mod(g, 101) < {sum(ACCOUNT_SHARES[: i + 1]) * 101 // 100} THEN %s" for i in range(len(ACCOUNT_SHARES))
    )
    fields = [f for f in ScheduledPost._meta.concrete_fields]
    set_to = {
        "id": "'sp_' || md5(g::text || random()::text)",
        "social_account_id": f"CASE {account_of} END",
        "status": f"CASE WHEN {FAILED} THEN 'failed' WHEN {CANCELED} THEN 'canceled' ELSE 'published' END",
        "published_at": f"CASE WHEN {FAILED} OR {CANCELED} THEN NULL ELSE now() - make_interval(mins => %s - g) END",
        "created_at": "now() - make_interval(mins => %s - g)",
        "scheduled_for": "now() - make_interval(mins => %s - g)",
        "due_at": "now() - make_interval(mins => %s - g)",
    }
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    values = ", ".join(set_to.get(f.column, f"t.{connection.ops.quote_name(f.column)}") for f in fields)
    params = []
    for f in fields:
        if f.column == "social_account_id":
            params += ids
        elif f.column in ("created_at", "scheduled_for", "due_at", "published_at"):
            params.append(posts)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {ScheduledPost._meta.db_table} ({columns}) SELECT {values} "  # noqa: S608 (names, no input)
            f"FROM {ScheduledPost._meta.db_table} t, generate_series(1, %s) g WHERE t.id = %s",
            [*params, posts - 1, template.pk],
        )
        cursor.execute(f"VACUUM ANALYZE {ScheduledPost._meta.db_table}")
    return project, accounts


def _explained(client, url: str) -> tuple[dict, str | None]:
    """The plan of the posts statement `url` runs, and the page's nextCursor."""
    from django.db import connection

    from scheduling.models import ScheduledPost

    plans = []

    def explain(execute, sql, params, many, context):
        if sql.lstrip().upper().startswith("SELECT") and f'FROM "{ScheduledPost._meta.db_table}"' in sql:
            raw = context["cursor"].cursor
            raw.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", params)
            plan = raw.fetchone()[0]
            plans.append(plan if isinstance(plan, list) else json.loads(plan))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(explain):
        response = client.get(url)
    assert response.status_code == 200, response.content[:300]
    assert len(plans) == 1, len(plans)
    return plans[0][0], response.json()["nextCursor"]


def posts_read(node: dict) -> int:
    """Rows of the posts table the plan's scans went through: those they returned, and those their filters
    and rechecks removed, on every loop. (tests/scheduling/test_post_list_reads.py bounds it.)"""
    read = 0
    if node.get("Relation Name") == "scheduling_scheduledpost":
        kept = (
            node["Actual Rows"] + node.get("Rows Removed by Filter", 0) + node.get("Rows Removed by Index Recheck", 0)
        )
        read = kept * node["Actual Loops"]
    return read + sum(posts_read(child) for child in node.get("Plans", []))


def _scans(node: dict) -> list[str]:
    """The plan's scan nodes of the posts table, its bitmap index scans and sorts, in plan order."""
    scans = []
    if node.get("Relation Name") == "scheduling_scheduledpost":
        scans.append(f"{node['Node Type']}{' using ' + node['Index Name'] if 'Index Name' in node else ''}")
    elif node["Node Type"] == "Bitmap Index Scan":
        scans.append(f"(of {node['Index Name']})")
    elif node["Node Type"] == "Sort":
        scans.append("Sort")
    return scans + [scan for child in node.get("Plans", []) for scan in _scans(child)]


def main() -> None:
    import django

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=200_000)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
    django.setup()
    from rest_framework.test import APIClient

    from accounts import services as account_services
    from accounts.models import Project, SocialAccount
    from config.api import pagination
    from scheduling.models import ScheduledPost

    project = Project.objects.filter(name=f"{NAME} project").first()
    if project is None:
        _seed(args.posts, "another organization")  # the table holds other projects' posts too
        project, _ = _seed(args.posts, NAME)
    accounts = list(
        SocialAccount.objects.filter(project=project).order_by("identity__handle").values_list("pk", flat=True)
    )
    _, raw = account_services.api_key_create(
        organization=project.organization, return_domains=["localhost"], name="plans"
    )
    client = APIClient(HTTP_HOST="localhost")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    base = f"/v1/projects/{project.pk}/scheduled-posts?limit=50"
    big, small = accounts[0], accounts[-1]  # 60 % and 1 % of the posts
    print(f"{ScheduledPost.objects.filter(project=project).count()} posts in the project")
    cases = {
        "no filter": "",
        "status=failed": "&status=failed",
        "status=canceled": "&status=canceled",
        "status=published": "&status=published",
        "account 60 %": f"&socialAccountId={big}",
        "account 1 %": f"&socialAccountId={small}",
        "failed, account 60 %": f"&status=failed&socialAccountId={big}",
        "failed, account 1 %": f"&status=failed&socialAccountId={small}",
        "published, account 1 %": f"&status=published&socialAccountId={small}",
    }
    print(f"{'filter':26} {'page':>6} {'ms':>8} {'rows read':>10} {'buffers':>8}  plan")
    for name, query in cases.items():
        # The first page, the second (through its cursor), and one from the middle of the list (a cursor at
        # its middle row, as a partner paging that far would hold).
        _, next_cursor = _measured(client, name, "1", base + query)
        if next_cursor:
            _measured(client, name, "2", f"{base}{query}&cursor={next_cursor}")
        filters = dict(pair.split("=") for pair in query.strip("&").split("&") if pair)
        listed = ScheduledPost.objects.filter(
            project=project,
            **({"status": filters["status"]} if "status" in filters else {}),
            **({"social_account_id": filters["socialAccountId"]} if "socialAccountId" in filters else {}),
        ).order_by("-created_at", "-id")
        middle = listed.values_list("created_at", "id")[listed.count() // 2]
        _measured(client, name, "middle", f"{base}{query}&cursor={pagination._encode(*middle)}")


def _measured(client, name: str, page: str, url: str) -> tuple[dict, str | None]:
    plan, next_cursor = _explained(client, url)
    read, scans = posts_read(plan["Plan"]), _scans(plan["Plan"])
    buffers = plan["Plan"].get("Shared Hit Blocks", 0) + plan["Plan"].get("Shared Read Blocks", 0)
    print(f"{name:26} {page:>6} {plan['Execution Time']:>8.2f} {read:>10} {buffers:>8}  {', '.join(scans)}")
    return plan, next_cursor


if __name__ == "__main__":
    main()
