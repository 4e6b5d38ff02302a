"""Ops in the admin: find scheduled posts by status / due window or by whatever id or handle a partner
quotes, see why one failed (with times support can compare with the API's), retry a failed post and cancel
a queued one — through the same services as the API."""

import re
from datetime import UTC, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from scheduling.models import ScheduledPost
from tests.factories import make_account
from tests.scheduling.publish_helpers import schedule_now
from tests.staff import admin_object_url, staff_login, with_mfa


@pytest.fixture
def staff(db):
    user = with_mfa(get_user_model().objects.create_superuser("ops", "ops@layers.test", "pw-ops-12345"))
    client = Client()
    staff_login(client, user)
    return client


def test_ops_filter_retry_and_cancel(owner, staff):
    account = make_account(owner)
    failed = schedule_now(owner, account.pk, when=timezone.now())
    queued = schedule_now(owner, account.pk, when=timezone.now() + timedelta(minutes=30))
    ScheduledPost.objects.filter(pk=failed["id"]).update(
        status="failed", error_code="PLATFORM_REJECTED", error_message="spam_risk_too_many_posts", attempts=1
    )

    page = staff.get("/admin/scheduling/scheduledpost/?status__exact=failed")
    assert page.status_code == 200
    assert failed["id"].encode() in page.content and queued["id"].encode() not in page.content
    assert b"PLATFORM_REJECTED" in page.content
    due = staff.get("/admin/scheduling/scheduledpost/?due=hour")
    assert queued["id"].encode() in due.content and failed["id"].encode() not in due.content
    detail = staff.get(admin_object_url(ScheduledPost, failed["id"]))
    assert b"spam_risk_too_many_posts" in detail.content

    staff.post(
        "/admin/scheduling/scheduledpost/",
        {"action": "retry_posts", "_selected_action": [failed["id"], queued["id"]]},
    )
    staff.post("/admin/scheduling/scheduledpost/", {"action": "cancel_posts", "_selected_action": [queued["id"]]})

    retried = ScheduledPost.objects.get(pk=failed["id"])
    assert (retried.status, retried.error_code, retried.attempts) == ("queued", "", 0)
    assert retried.due_at <= timezone.now()
    assert ScheduledPost.objects.get(pk=queued["id"]).status == "canceled"
    assert owner.client.get(f"/v1/scheduled-posts/{queued['id']}").json()["status"] == "canceled"


def retry(staff, action: str, *post_ids: str):
    # `post=yes`: "retry anyway" asks first; this is its confirmation page's Yes (the plain retry ignores it).
    data = {"action": action, "_selected_action": list(post_ids), "post": "yes"}
    return staff.post("/admin/scheduling/scheduledpost/", data)


@pytest.mark.django_db(transaction=True)
def test_a_plain_retry_never_posts_again_a_post_the_platform_may_have(owner, staff):
    """TikTok took the post but its answer was unreadable: the post failed PLATFORM_UNAVAILABLE, outcome
    unknown, so that it cannot appear twice. Support retrying every failed post after an outage must not
    undo that: the plain retry skips it and says why; 'retry anyway' (after checking the platform) sends it."""
    import time_machine

    from tests.accounts.oauth_helpers import connected_account
    from tests.platform_helpers import intercepted
    from tests.scheduling.publish_helpers import later, run_dispatcher, sandbox_posts
    from tests.scheduling.test_publishing import accepted_but_unreadable

    account = connected_account(owner, "tiktok", "unknown.outcome")
    scheduled = schedule_now(owner, account["id"])
    with intercepted({"/v2/post/publish/video/init/": accepted_but_unreadable(200, lambda body: body[:10])}):
        run_dispatcher()
        for minutes in (2, 5, 15):
            with time_machine.travel(later(minutes=minutes)):
                run_dispatcher()
    failed = ScheduledPost.objects.get(pk=scheduled["id"])
    assert (failed.status, failed.error_code) == ("failed", "PLATFORM_UNAVAILABLE")
    assert len(sandbox_posts("tiktok", "unknown.outcome")) == 1  # it is live

    page = retry(staff, "retry_posts", failed.pk)
    run_dispatcher()

    assert ScheduledPost.objects.get(pk=failed.pk).status == "failed"
    assert len(sandbox_posts("tiktok", "unknown.outcome")) == 1
    shown = staff.get(page["Location"]).content.decode()
    assert "may already be on the platform" in shown

    retry(staff, "retry_posts_checked", failed.pk)
    run_dispatcher()
    assert ScheduledPost.objects.get(pk=failed.pk).status in ("publishing", "published")
    assert len(sandbox_posts("tiktok", "unknown.outcome")) == 2  # what staff asked for, knowingly


def test_a_failed_post_of_a_disconnected_account_is_not_queued_again(owner, staff):
    from accounts.services import social_account_revoke

    account = make_account(owner)
    scheduled = schedule_now(owner, account.pk, when=timezone.now() + timedelta(hours=2))
    ScheduledPost.objects.filter(pk=scheduled["id"]).update(status="failed", error_code="PLATFORM_REJECTED")
    social_account_revoke(account_id=account.pk)

    for action in ("retry_posts", "retry_posts_checked"):
        retry(staff, action, scheduled["id"])

    assert ScheduledPost.objects.get(pk=scheduled["id"]).status == "failed"
    assert owner.client.get(f"/v1/scheduled-posts/{scheduled['id']}").json()["status"] == "failed"


POSTS = "/admin/scheduling/scheduledpost/"


def test_support_finds_a_post_by_whatever_the_partner_quotes(owner, staff):
    owner.project.name = "Web app"  # not the organization's name
    owner.project.save()
    account = make_account(owner, handle="acme.brand")
    post = schedule_now(owner, account.pk, when=timezone.now() + timedelta(hours=2))
    other = schedule_now(owner, make_account(owner, handle="someone.else").pk, when=timezone.now() + timedelta(hours=2))
    quotes = {
        "post id": post["id"],
        "handle": "acme.brand",
        "@handle": "@acme.brand",  # as partners write it
        "container id": post["containerId"],
        "account id": account.pk,
        "organization name": owner.org.name,
        "organization id": owner.org.pk,
        "project id": owner.project.pk,
    }
    found = {label: post["id"] in staff.get(POSTS, {"q": q}).content.decode() for label, q in quotes.items()}
    assert all(found.values()), found
    # An id finds exactly its own rows.
    assert other["id"] not in staff.get(POSTS, {"q": post["id"]}).content.decode()
    assert other["id"] not in staff.get(POSTS, {"q": "@acme.brand"}).content.decode()


def _seed_posts(seed_id: str, n: int) -> None:
    """n copies of a post (other ids), written by the database itself: fast, and big enough for the planner
    to prefer an index when one can be used."""
    from scheduling.models import ScheduledPost

    cols = ", ".join(f.column for f in ScheduledPost._meta.concrete_fields if f.column != "id")
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO scheduling_scheduledpost (id, {cols}) SELECT 'sp_' || md5(g::text), {cols} "
            "FROM scheduling_scheduledpost, generate_series(1, %s) g WHERE id = %s",
            [n, seed_id],
        )
        cursor.execute("ANALYZE scheduling_scheduledpost")


def test_searching_one_post_id_reads_it_by_its_key_not_the_whole_table(owner, staff):
    # Posts are never purged: a search for one id that scans the table took 1.5 s at 200k posts.
    seed = schedule_now(owner, make_account(owner).pk, when=timezone.now() + timedelta(hours=2))
    _seed_posts(seed["id"], 20_000)

    with CaptureQueriesContext(connection) as captured:
        page = staff.get(POSTS, {"q": seed["id"]})

    assert page.status_code == 200 and seed["id"] in page.content.decode()
    on_posts = [q["sql"] for q in captured.captured_queries if "scheduling_scheduledpost" in q["sql"]]
    assert on_posts
    plans = []
    with connection.cursor() as cursor:
        for sql in on_posts:
            assert not re.search(r"\sLIKE\s", sql, re.IGNORECASE), sql  # an exact match, never a substring search
            cursor.execute("EXPLAIN " + sql)
            plans.append("\n".join(row[0] for row in cursor.fetchall()))
    # The posts table itself (\b: not scheduling_scheduledpostattempt, which the "Platforms now" panel reads).
    assert not [p for p in plans if re.search(r"Seq Scan on scheduling_scheduledpost\b", p)], plans


def test_admin_times_say_their_time_zone_and_seconds(owner, staff):
    # Support compares them with the API's RFC 3339 times ("2026-11-29T12:31:05Z").
    when = (timezone.now() + timedelta(days=3)).replace(microsecond=0)
    post = schedule_now(owner, make_account(owner).pk, when=when)
    shown = when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

    detail = staff.get(admin_object_url(ScheduledPost, post["id"])).content.decode()
    listing = staff.get(POSTS).content.decode()

    assert shown in detail and shown in listing


@pytest.mark.django_db(transaction=True)
def test_a_plain_retry_queues_again_a_post_the_platform_said_it_refused(owner, staff):
    # TikTok failed the post itself (its publish id known, its answer clear): it is not on the platform, so
    # the plain retry must not ask support to go and check.
    from tests.accounts.oauth_helpers import connected_account
    from tests.platform_helpers import inject_fault
    from tests.scheduling.publish_helpers import run_dispatcher

    account = connected_account(owner, "tiktok", "refused.outright")
    inject_fault("tiktok", "refused.outright", "reject")
    scheduled = schedule_now(owner, account["id"])
    run_dispatcher()
    failed = ScheduledPost.objects.get(pk=scheduled["id"])
    assert failed.status == "failed" and failed.error_code in ("PLATFORM_REJECTED", "MEDIA_INVALID")

    retry(staff, "retry_posts", failed.pk)

    assert ScheduledPost.objects.get(pk=failed.pk).status == "queued"


@pytest.mark.django_db(transaction=True)
def test_a_plain_retry_queues_again_a_post_whose_instagram_containers_all_failed_on_instagrams_side(owner, staff):
    # Instagram's outage outlasted the retries: every container ended in ERROR, none was published (a
    # container is not a post). Once Instagram is back, ops retry, and the plain retry takes it.
    import time_machine

    from tests.accounts.oauth_helpers import connected_account
    from tests.platform_helpers import inject_fault
    from tests.scheduling.publish_helpers import later, post, run_dispatcher, sandbox_posts

    account = connected_account(owner, "instagram", "ig.outage")
    scheduled = schedule_now(owner, account["id"], media_type="image")
    inject_fault("instagram", "ig.outage", "container_error", count=20)
    for minutes in range(0, 65, 5):  # its retry window, an hour
        with time_machine.travel(later(minutes=minutes)):
            run_dispatcher()
    assert post(owner, scheduled["id"])["error"]["code"] == "PLATFORM_UNAVAILABLE"
    assert sandbox_posts("instagram", "ig.outage") == []

    retry(staff, "retry_posts", scheduled["id"])

    assert ScheduledPost.objects.get(pk=scheduled["id"]).status == "queued"


def test_the_posts_list_has_no_date_hierarchy_over_every_post_and_filters_by_scheduled_day(owner, staff):
    account = make_account(owner)
    now = timezone.now()
    noon = now.replace(hour=12, minute=0, second=0, microsecond=0)
    today, tomorrow, last_year = (schedule_now(owner, account.pk, when=now + timedelta(days=2)) for _ in range(3))
    days = {today["id"]: noon, tomorrow["id"]: noon + timedelta(days=1), last_year["id"]: now - timedelta(days=400)}
    for post_id, when in days.items():
        ScheduledPost.objects.filter(pk=post_id).update(scheduled_for=when)

    with CaptureQueriesContext(connection) as queries:
        page = staff.get("/admin/scheduling/scheduledpost/")
    assert page.status_code == 200
    # Posts are never purged: a date hierarchy read the distinct years of every post on each visit.
    assert [q["sql"] for q in queries if "DISTINCT" in q["sql"] and "scheduling_scheduledpost" in q["sql"]] == []

    def listed(value: str) -> set[str]:
        content = staff.get("/admin/scheduling/scheduledpost/", {"scheduled": value}).content.decode()
        return {p["id"] for p in (today, tomorrow, last_year) if p["id"] in content}

    assert listed("today") == {today["id"]}
    assert listed("tomorrow") == {tomorrow["id"]}
    assert listed("next7") == {today["id"], tomorrow["id"]}  # days, in UTC as the admin shows times
    assert last_year["id"] not in listed("past7") | listed("this_month")


def test_each_scheduled_day_reads_only_that_days_posts_through_an_index(owner, staff):
    """The "scheduled for" filter replaced the date hierarchy so that the list would be no slower with years of
    posts, yet nothing indexed scheduled_for: each choice (Today, Yesterday, Last month…) counted and listed by
    reading every post ever scheduled, twice. 0.47 to 0.75 s at 500,000 posts (a year of production), and
    growing with every post, since posts are never purged."""
    from tests.admin_plans import reading_whole_table, statements_on

    account = make_account(owner)
    today = schedule_now(owner, account.pk, when=timezone.now() + timedelta(hours=2))
    ScheduledPost.objects.filter(pk=today["id"]).update(scheduled_for=timezone.now())

    for value in ("yesterday", "today", "tomorrow", "past7", "next7", "this_month", "last_month"):
        with CaptureQueriesContext(connection) as captured:
            page = staff.get(POSTS, {"scheduled": value})
        assert page.status_code == 200
        on_posts = statements_on(captured, "scheduling_scheduledpost")
        assert on_posts and reading_whole_table(on_posts, "scheduling_scheduledpost") == [], value


def test_the_unfiltered_lists_of_tables_that_grow_forever_do_not_count_every_row(owner, staff, settings):
    """Posts, events and webhook deliveries grow with every partner's traffic: the admin's paginator counted
    the whole table (COUNT(*), seconds at tens of millions of rows) on every visit of an unfiltered list. Past
    LAYERS_ADMIN_EXACT_COUNT_BELOW rows (by the planner's statistics) the unfiltered count is the estimate; a
    filtered list, which the indexes narrow, is still counted (up to its cap: the test below)."""
    account = make_account(owner)
    posts = [schedule_now(owner, account.pk, when=timezone.now() + timedelta(days=1)) for _ in range(3)]
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE scheduling_scheduledpost")  # what autovacuum does on a table that size
    settings.LAYERS_ADMIN_EXACT_COUNT_BELOW = 2

    def counts(url: str) -> list[str]:
        with CaptureQueriesContext(connection) as queries:
            page = staff.get(url)
        assert page.status_code == 200
        # Not the "Platforms now" panel's: it counts the attempts of the last 15 minutes (by platform and time).
        return [
            q["sql"]
            for q in queries
            if "COUNT(" in q["sql"].upper()
            and "scheduling_scheduledpost" in q["sql"]
            and "scheduling_scheduledpostattempt" not in q["sql"]
        ]

    assert counts("/admin/scheduling/scheduledpost/") == []
    page = staff.get("/admin/scheduling/scheduledpost/")
    assert all(p["id"].encode() in page.content for p in posts)  # the rows are listed all the same
    assert len(counts("/admin/scheduling/scheduledpost/?status__exact=queued")) == 1  # filtered: counted
    assert len(counts(f"/admin/scheduling/scheduledpost/?q={posts[0]['id']}")) == 1  # searched: counted

    settings.LAYERS_ADMIN_EXACT_COUNT_BELOW = 100_000  # a small table is counted exactly
    assert len(counts("/admin/scheduling/scheduledpost/")) == 1


def test_a_filtered_list_counts_up_to_its_cap_and_says_so(owner, staff, monkeypatch):
    """Posts filtered by mode, platform or failure code match hundreds of thousands of rows (posts are never
    purged), and the filtered list counted them all on every visit (100 to 240 ms at 500,000 posts). The count
    stops one row past FILTERED_COUNT_CAP (a LIMIT under the COUNT) and the page says "N+"."""
    from config import adminpaging

    monkeypatch.setattr(adminpaging, "FILTERED_COUNT_CAP", 2)
    account = make_account(owner)
    for _ in range(3):
        schedule_now(owner, account.pk, when=timezone.now() + timedelta(days=1))

    def visit(url: str):
        with CaptureQueriesContext(connection) as queries:
            page = staff.get(url)
        assert page.status_code == 200
        counts = [q["sql"] for q in queries if "COUNT(" in q["sql"].upper() and "scheduling_scheduledpost" in q["sql"]]
        counts = [sql for sql in counts if "scheduling_scheduledpostattempt" not in sql]  # the Platforms now panel
        text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page.content.decode()))
        return counts, text

    counts, text = visit("/admin/scheduling/scheduledpost/?status__exact=queued")
    assert len(counts) == 1 and "LIMIT 3" in counts[0]
    assert "2+ scheduled posts" in text
    assert "Select all 2+ scheduled posts" in text and "All 2+ selected" in text  # all pages: every match
    counts, text = visit(f"/admin/scheduling/scheduledpost/?q={account.pk}")  # a search too
    assert len(counts) == 1 and "LIMIT 3" in counts[0]
    assert "2+ results" in text and "2+ scheduled posts" in text

    ScheduledPost.objects.filter(pk=ScheduledPost.objects.first().pk).update(status="canceled")
    counts, text = visit("/admin/scheduling/scheduledpost/?status__exact=queued")
    assert "2 scheduled posts" in text and "2+" not in text  # within the cap: exact


def test_a_managed_provider_stays_with_the_project_it_was_set_up_for(owner, outsider, staff):
    """Moved to another organization's project, a provider would receive that organization's managed posts
    (its media and captions) at the endpoint set up for the first one, signed with the first one's secret."""
    from scheduling.models import ManagedProvider

    provider = ManagedProvider.objects.create(
        project=owner.project, name="Boost", endpoint_url="https://provider.example/in"
    )
    url = admin_object_url(ManagedProvider, provider.pk)
    assert 'name="project"' not in staff.get(url).content.decode()  # shown, not offered as a field

    response = staff.post(
        url, {"project": outsider.project.pk, "name": "Boost 2", "endpoint_url": provider.endpoint_url, "enabled": "on"}
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    provider.refresh_from_db()
    assert (provider.project_id, provider.name) == (owner.project.pk, "Boost 2")
    assert 'name="project"' in staff.get("/admin/scheduling/managedprovider/add/").content.decode()


def test_action_messages_show_the_post_id_as_it_is_searched(owner, staff):
    """The admin capitalises every message: a row's message starting with its id read `Sp_…: canceled.`, and
    that id pasted back into the search box found nothing. A message now starts with what the row is, and the
    search takes an id whose prefix was capitalised anyway."""
    account = make_account(owner)
    post = schedule_now(owner, account.pk, when=timezone.now() + timedelta(hours=5))["id"]

    canceled = staff.post(POSTS, {"action": "cancel_posts", "_selected_action": [post]}, follow=True)
    refused = staff.post(POSTS, {"action": "retry_posts", "_selected_action": [post]}, follow=True)

    assert f"Scheduled post {post}: canceled." in canceled.content.decode()
    assert f"Scheduled post {post}: Only failed posts can be retried." in refused.content.decode()
    found = staff.get(POSTS, {"q": post[0].upper() + post[1:]})
    assert [row.pk for row in found.context["cl"].result_list] == [post]


def test_searching_a_handle_or_a_name_reads_the_posts_through_their_indexes(owner, outsider, staff):
    """At 200k posts, `?q=@creator.01234` or `?q=acme` took 470 ms: the handle and names were matched as
    substrings across the joins of every post. The matching accounts, projects and organizations are now
    found first (small tables), and the posts by those ids, through the posts' own indexes."""
    from tests.admin_plans import reading_whole_table, statements_on

    owner.project.name = "Web app"
    owner.project.save()
    mine = schedule_now(owner, make_account(owner, handle="acme.brand").pk, when=timezone.now() + timedelta(hours=2))
    theirs = schedule_now(outsider, make_account(outsider, handle="globex.brand").pk, when=timezone.now())
    _seed_posts(theirs["id"], 20_000)

    for term in ("acme.brand", "@acme.brand", "Web app", '"web app"', owner.org.name, "ACME.BRAND"):
        with CaptureQueriesContext(connection) as captured:
            page = staff.get(POSTS, {"q": term})
        listed = [row.pk for row in page.context["cl"].result_list]
        assert listed == [mine["id"]], (term, listed)
        on_posts = statements_on(captured, "scheduling_scheduledpost")
        assert on_posts and reading_whole_table(on_posts, "scheduling_scheduledpost") == [], term


def test_a_term_matching_more_accounts_than_the_id_list_takes_still_finds_all_their_posts(
    owner, outsider, staff, monkeypatch
):
    # `creator` among 20,000 accounts: past the cap the ids are matched through a sub-select, not dropped.
    from scheduling.admin import ScheduledPostAdmin

    monkeypatch.setattr(ScheduledPostAdmin, "related_ids_cap", 1)
    posts = [
        schedule_now(tenant, make_account(tenant, handle=handle).pk, when=timezone.now() + timedelta(hours=2))["id"]
        for tenant, handle in ((owner, "acme.brand"), (outsider, "globex.brand"), (owner, "other.name"))
    ]

    listed = staff.get(POSTS, {"q": "@brand"}).context["cl"].result_list

    assert sorted(row.pk for row in listed) == sorted(posts[:2])


@pytest.mark.parametrize("model_name", ["contentcontainer", "layer"])
def test_the_containers_and_layers_lists_count_no_whole_table_and_find_ids_by_index(
    owner, outsider, staff, settings, model_name
):
    """A container per post and four layers per account (80k at production volume): their lists counted
    the whole table on every visit (twice once searched), and the containers' search matched ids as
    substrings. Ids (`cnt_…`/`lay_…`, `sa_…`, `prj_…`, `org_…`) are matched exactly, by index; names and
    handles find their organizations, projects and accounts first."""
    from django.apps import apps

    from scheduling import services
    from tests.admin_plans import reading_whole_table, statements_on

    mine, theirs = make_account(owner, handle="acme.brand"), make_account(outsider, handle="globex.brand")
    for tenant, account in ((owner, mine), (outsider, theirs)):
        schedule_now(tenant, account.pk, when=timezone.now() + timedelta(hours=2))
        services.layers_provision_for_account(account=account)
    model = apps.get_model("scheduling", model_name)
    table = model._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {table}")
    settings.LAYERS_ADMIN_EXACT_COUNT_BELOW = 2

    def ids(rows) -> set[str]:
        return set(rows.values_list("pk", flat=True))

    owners = model.objects.filter(organization=owner.org)
    one = owners.first().pk
    searches = {one: {one}, one[0].upper() + one[1:]: {one}, owner.project.pk: ids(owners), owner.org.pk: ids(owners)}
    searches[owner.org.name] = ids(owners)  # names find the organization, then its rows by index
    if model_name == "layer":
        searches[mine.pk] = searches["@acme.brand"] = ids(owners)

    def visit(params=None):
        with CaptureQueriesContext(connection) as captured:
            page = staff.get(f"/admin/scheduling/{model_name}/", params)
        assert page.status_code == 200
        return {row.pk for row in page.context["cl"].result_list}, statements_on(captured, table)

    listed, statements = visit()
    assert listed == ids(model.objects.all())
    assert not [sql for sql in statements if "COUNT(" in sql.upper()]  # the planner's estimate
    for term, expected in searches.items():
        listed, statements = visit({"q": term})
        assert listed == expected, term
        assert len([sql for sql in statements if "COUNT(" in sql.upper()]) == 1, term  # the search's own
        assert not [sql for sql in statements if " LIKE " in sql], term
        assert reading_whole_table(statements, table) == [], term


PROVIDER_ADD = "/admin/scheduling/managedprovider/add/"


def _named_production(*tenants):
    for tenant in tenants:
        tenant.project.name = "Production"
        tenant.project.save()


def test_staff_adding_a_managed_provider_tell_two_organizations_production_projects_apart(owner, outsider, staff):
    """The project select listed every project (2,000 in production) by its bare name: Acme's "Production"
    and Globex's were the same option, and the pick is read-only once saved (a wrong one sends Globex's
    managed posts to this provider). The page lists no project up front; staff type a project or
    organization name or id, and each project found says its organization and id."""
    from scheduling.models import ManagedProvider

    _named_production(owner, outsider)

    def found(term: str) -> dict[str, str]:
        params = {"app_label": "scheduling", "model_name": "managedprovider", "field_name": "project", "term": term}
        response = staff.get("/admin/autocomplete/", params)
        assert response.status_code == 200, response.content[:300]
        return {row["id"]: row["text"] for row in response.json()["results"]}

    page = staff.get(PROVIDER_ADD).content.decode()
    assert owner.project.pk not in page and outsider.project.pk not in page  # not every project of every partner
    assert found("Production") == {
        owner.project.pk: f"Production — Acme ({owner.project.pk})",
        outsider.project.pk: f"Production — Globex ({outsider.project.pk})",
    }
    for term in ("globex", outsider.project.pk, outsider.org.pk):
        assert set(found(term)) == {outsider.project.pk}, term

    response = staff.post(
        PROVIDER_ADD,
        {
            "project": outsider.project.pk,
            "name": "Boost",
            "endpoint_url": "https://provider.example/in",
            "enabled": "on",
            "new_secret": "shared-secret",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert ManagedProvider.objects.get().project_id == outsider.project.pk


def test_staff_who_may_add_a_provider_but_not_read_projects_pick_from_projects_that_say_whose_they_are(owner, outsider):
    # The project search is the projects list's (its view permission): without it, the page lists them all.
    from tests.staff import signed_in_staff

    _named_production(owner, outsider)
    _, client = signed_in_staff("scheduling.view_managedprovider", "scheduling.add_managedprovider", mfa=True)

    page = client.get(PROVIDER_ADD)

    assert page.status_code == 200
    content = page.content.decode()
    for project, org in ((owner.project, "Acme"), (outsider.project, "Globex")):
        assert f'<option value="{project.pk}">Production — {org} ({project.pk})</option>' in content


def test_the_posts_list_does_not_list_every_project_of_every_partner(owner, outsider, staff):
    """Its "project" filter listed every project by bare name (2,005 links, 262 KB of a 373 KB page at
    production volume; "Production" many times over, whose?). A project's posts are one `prj_…` search
    away, and links filtered by project still work."""
    post = schedule_now(owner, make_account(owner).pk, when=timezone.now() + timedelta(hours=2))["id"]
    unrelated = outsider.project

    with CaptureQueriesContext(connection) as captured:
        page = staff.get(POSTS)

    assert page.status_code == 200 and unrelated.name not in page.content.decode()
    assert not [q["sql"] for q in captured.captured_queries if 'FROM "accounts_project"' in q["sql"]]
    for params in ({"q": owner.project.pk}, {"project__id__exact": owner.project.pk}):
        assert [row.pk for row in staff.get(POSTS, params).context["cl"].result_list] == [post], params
    assert not staff.get(POSTS, {"project__id__exact": unrelated.pk}).context["cl"].result_list


def test_after_an_outage_ops_find_the_posts_it_failed_and_retry_them_together(owner, staff):
    account = make_account(owner)
    posts = [schedule_now(owner, account.pk, when=timezone.now())["id"] for _ in range(4)]
    codes = ["PLATFORM_UNAVAILABLE", "PLATFORM_UNAVAILABLE", "PLATFORM_REJECTED", "RATE_LIMITED"]
    for post_id, code in zip(posts, codes, strict=True):
        ScheduledPost.objects.filter(pk=post_id).update(status="failed", error_code=code, attempts=5)

    page = staff.get("/admin/scheduling/scheduledpost/?failure=PLATFORM_UNAVAILABLE")
    assert page.status_code == 200
    listed = [post_id for post_id in posts if post_id.encode() in page.content]
    assert listed == posts[:2]
    retry(staff, "retry_posts", *listed)

    statuses = dict(ScheduledPost.objects.filter(pk__in=posts).values_list("pk", "status"))
    assert [statuses[p] for p in posts] == ["queued", "queued", "failed", "failed"]


def test_editing_a_managed_provider_while_the_keys_rotate_keeps_its_secret_under_the_new_key(
    owner, staff, settings, monkeypatch
):
    """The change page saved the whole row, the secret's stored form as the page read it included: a key
    rotation (rotate_token_keys) re-encrypting the secret meanwhile was undone, and once the old key was
    removed (README step 4) the secret read as nothing and every managed post of the project failed. A save
    that sets no new secret leaves the stored one alone."""
    from cryptography.fernet import Fernet

    from accounts import crypto, key_rotation
    from scheduling.admin import ManagedProviderForm
    from scheduling.models import ManagedProvider

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.LAYERS_TOKEN_KEYS = [old]
    provider = ManagedProvider.objects.create(
        project=owner.project, name="Boost", endpoint_url="https://provider.example/in", secret_enc=crypto.encrypt("s3")
    )
    settings.LAYERS_TOKEN_KEYS = [new, old]
    checked = ManagedProviderForm.clean

    def rotated_meanwhile(form):  # after the page read the row, before it writes it
        key_rotation.rotate_all()
        return checked(form)

    monkeypatch.setattr(ManagedProviderForm, "clean", rotated_meanwhile)
    response = staff.post(
        admin_object_url(ManagedProvider, provider.pk),
        {"name": "Boost 2", "endpoint_url": provider.endpoint_url, "enabled": "on"},
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    settings.LAYERS_TOKEN_KEYS = [new]
    provider.refresh_from_db()
    assert (provider.name, provider.secret) == ("Boost 2", "s3")


@pytest.mark.parametrize("window", ["hour", "day"])
def test_the_coming_posts_are_listed_soonest_first(owner, staff, window):
    """Ops reading "Next hour" or "Next 24 hours" read a queue: the post going out first is at the top,
    whatever order the posts were scheduled in."""
    account = make_account(owner)
    now = timezone.now()
    later = schedule_now(owner, account.pk, when=now + timedelta(minutes=50))
    soonest = schedule_now(owner, account.pk, when=now + timedelta(minutes=5))
    middle = schedule_now(owner, account.pk, when=now + timedelta(minutes=20))
    page = staff.get(f"/admin/scheduling/scheduledpost/?due={window}").content.decode()
    positions = [page.index(post["id"]) for post in (soonest, middle, later)]
    assert positions == sorted(positions)
