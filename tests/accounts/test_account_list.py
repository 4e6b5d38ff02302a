"""GET /v1/projects/{projectId}/social-accounts: the page is read with hand-written SQL (for speed), so its
filters, its order and its cursor are checked here on their own: every live account of the project exactly
once, newest first, ties on the creation instant broken by id across page boundaries, nothing of another
project or organization, no disconnected account."""

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import SocialAccount
from tests.conftest import assert_error
from tests.factories import make_account

pytestmark = pytest.mark.django_db


@pytest.fixture
def accounts(owner, outsider):
    """Nine live accounts in the owner's first project, three of them created in the same instant."""
    base = timezone.now().replace(microsecond=0) - timedelta(hours=1)
    shapes = [
        ("tiktok", "connected", "connected"),
        ("instagram", "connected", "connected"),
        ("tiktok", "leased", "connected"),
        ("tiktok", "connected", "reauth_required"),
        ("instagram", "leased", "reauth_required"),
        ("instagram", "connected", "connected"),
        ("tiktok", "connected", "connected"),
        ("instagram", "connected", "reauth_required"),
        ("tiktok", "leased", "connected"),
    ]
    made = []
    for n, (platform, kind, status) in enumerate(shapes):
        account = make_account(owner, platform=platform, kind=kind, status=status)
        # accounts 3, 4 and 5 share one instant: only their ids order them
        SocialAccount.objects.filter(pk=account.pk).update(
            created_at=base + timedelta(minutes=min(n, 3) + max(0, n - 5))
        )
        made.append(SocialAccount.objects.get(pk=account.pk))
    make_account(owner, status="disconnected")
    make_account(owner, project=owner.projects[1])
    make_account(outsider)
    return made


def newest_first(rows):
    return [a.pk for a in sorted(rows, key=lambda a: (a.created_at, a.pk), reverse=True)]


def walk(client, url: str, limit: int) -> list[str]:
    ids, cursor = [], None
    for _ in range(50):
        page = client.get(f"{url}{'&' if '?' in url else '?'}limit={limit}" + (f"&cursor={cursor}" if cursor else ""))
        assert page.status_code == 200, page.content
        body = page.json()
        assert len(body["data"]) <= limit
        ids += [row["id"] for row in body["data"]]
        cursor = body["nextCursor"]
        if cursor is None:
            return ids
    raise AssertionError("the cursor never ended")


@pytest.mark.parametrize("limit", [1, 2, 4, 9, 50])
def test_pages_hold_every_live_account_once_newest_first(owner, accounts, limit):
    url = f"/v1/projects/{owner.project.id}/social-accounts"

    assert walk(owner.client, url, limit) == newest_first(accounts)


@pytest.mark.parametrize(
    "query, keep",
    [
        ("platform=instagram", lambda a: a.platform == "instagram"),
        ("kind=leased", lambda a: a.kind == "leased"),
        ("status=reauth_required", lambda a: a.status == "reauth_required"),
        (
            "platform=tiktok&kind=connected&status=connected",
            lambda a: (a.platform, a.kind, a.status) == ("tiktok", "connected", "connected"),
        ),
        ("status=disconnected", lambda a: False),
    ],
)
def test_filters_narrow_the_pages(owner, accounts, query, keep):
    url = f"/v1/projects/{owner.project.id}/social-accounts?{query}"

    assert walk(owner.client, url, 2) == newest_first([a for a in accounts if keep(a)])


def test_a_listed_account_reads_as_its_detail(owner, accounts):
    listed = owner.client.get(f"/v1/projects/{owner.project.id}/social-accounts").json()["data"]

    for row in listed[:3]:
        assert owner.client.get(f"/v1/social-accounts/{row['id']}").json() == row


@pytest.mark.parametrize("query", ["platform=youtube", "kind=", "status=gone", "sort=handle", "limit=0"])
def test_bad_filters_are_422(owner, accounts, query):
    assert_error(owner.client.get(f"/v1/projects/{owner.project.id}/social-accounts?{query}"), 422, "VALIDATION")


def test_a_forged_cursor_is_422_not_a_500(owner, accounts):
    import base64
    import json

    forged = base64.urlsafe_b64encode(json.dumps(["2026-01-01T00:00:00", "sa_x"]).encode()).decode().rstrip("=")
    assert_error(
        owner.client.get(f"/v1/projects/{owner.project.id}/social-accounts?cursor={forged}"), 422, "VALIDATION"
    )
