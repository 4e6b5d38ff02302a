"""The partner side of leasing: requesting accounts, every validation rule, tenancy."""

import pytest

from leasing.models import LeaseRequest
from tests.conftest import assert_error
from tests.leasing.helpers import NICHE, get_request, request_accounts


def post(tenant, body, project=None):
    project = project or tenant.project
    return tenant.client.post(f"/v1/projects/{project.id}/leased-accounts/request", body, format="json")


def body(tenant, **overrides):
    return {"projectId": tenant.project.id, "count": 2, "niche": dict(NICHE), "note": "", **overrides}


def test_request_is_accepted_with_202_and_readable(owner):
    accepted = request_accounts(owner, 3)

    assert accepted["requestId"].startswith("lreq_") and len(accepted["requestId"]) == 31
    assert accepted["status"] == "requested" and accepted["submittedAt"].endswith("Z")
    detail = get_request(owner, accepted["requestId"])
    assert detail == {
        "requestId": accepted["requestId"],
        "projectId": owner.project.id,
        "status": "requested",
        "count": 3,
        "assignedCount": 0,
        "niche": {"vertical": "fitness", "audience": "gym-goers 18-30", "language": "en-US", "geo": ["US", "CA"]},
        "note": "launch in May",
        "submittedAt": accepted["submittedAt"],
        "decidedAt": None,
        "socialAccountIds": [],
        "rejectionReason": None,
        "failureReason": None,
    }
    listed = owner.client.get(f"/v1/projects/{owner.project.id}/leased-accounts/requests").json()["data"]
    assert [r["requestId"] for r in listed] == [accepted["requestId"]]


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"count": 0}, "count"),
        ({"count": 51}, "count"),
        ({"count": "two"}, "count"),
        ({"niche": {**NICHE, "vertical": ""}}, "niche.vertical"),
        ({"niche": {k: v for k, v in NICHE.items() if k != "vertical"}}, "niche.vertical"),
        ({"niche": {**NICHE, "language": "english"}}, "niche.language"),
        ({"niche": {**NICHE, "language": "en_US"}}, "niche.language"),
        ({"niche": {k: v for k, v in NICHE.items() if k != "language"}}, "niche.language"),
        ({"niche": {**NICHE, "geo": []}}, "niche.geo"),
        ({"niche": {**NICHE, "geo": ["USA"]}}, "niche.geo.0"),
        ({"niche": {**NICHE, "geo": ["XX"]}}, "niche.geo.0"),
        ({"niche": {**NICHE, "geo": "US"}}, "niche.geo"),
        ({"niche": "fitness"}, "niche"),
        ({"note": "x" * 2001}, "note"),
        ({"projectId": None}, "projectId"),
    ],
)
def test_invalid_requests_are_422_naming_the_field(owner, overrides, field):
    error = assert_error(post(owner, body(owner, **overrides)), 422, "VALIDATION")
    assert field in error["details"]["fields"], error["details"]
    assert not LeaseRequest.objects.exists()


def test_project_id_in_the_body_must_equal_the_path(owner):
    other = owner.projects[1]
    error = assert_error(post(owner, body(owner, projectId=other.id)), 422, "VALIDATION")
    assert list(error["details"]["fields"]) == ["projectId"]


def test_lowercase_geos_and_audience_free_text_are_accepted(owner):
    response = post(owner, body(owner, niche={**NICHE, "geo": ["us", "gb"], "language": "zh-Hant-TW"}))
    assert response.status_code == 202
    assert get_request(owner, response.json()["requestId"])["niche"]["geo"] == ["US", "GB"]


def test_requests_of_another_organization_are_404(owner, sibling, outsider):
    mine = request_accounts(owner)
    for other in (sibling, outsider):
        assert_error(
            other.client.get(f"/v1/projects/{owner.project.id}/leased-accounts/requests/{mine['requestId']}"),
            404,
            "NOT_FOUND",
        )
        assert_error(post(other, body(owner), project=owner.project), 404, "NOT_FOUND")
        assert_error(other.client.get(f"/v1/projects/{owner.project.id}/leased-accounts"), 404, "NOT_FOUND")
    # the right organization but another project of it
    assert_error(
        owner.client.get(f"/v1/projects/{owner.projects[1].id}/leased-accounts/requests/{mine['requestId']}"),
        404,
        "NOT_FOUND",
    )
    assert_error(
        owner.client.get(f"/v1/projects/{owner.project.id}/leased-accounts/requests/lreq_nope"), 404, "NOT_FOUND"
    )


@pytest.mark.parametrize("count", ["1.5", "[1]", "{}", "1e400", "1e20"])
def test_a_count_that_is_no_integer_is_a_422_naming_it(owner, count):
    # Each was a 500 (KeyError filling the integer field's message) for a partner's typo.
    project = owner.project.pk
    niche = '{"vertical": "fitness", "language": "en", "geo": ["US"]}'
    body = f'{{"projectId": "{project}", "count": {count}, "niche": {niche}}}'
    response = owner.client.post(
        f"/v1/projects/{project}/leased-accounts/request", data=body, content_type="application/json"
    )
    error = assert_error(response, 422, "VALIDATION")
    assert list(error["details"]["fields"]) == ["count"]


def test_an_organization_has_at_most_20_requests_waiting_for_layers(owner, sibling):
    """Staff work the queue oldest first: a partner's loop filing requests buried every later partner's behind
    pages of its own. Requests waiting for Layers (requested, in review, being provisioned, failed) are capped
    per organization; decided ones (assigned, partial, rejected) do not count."""
    waiting = [request_accounts(owner, 1)["requestId"] for _ in range(20)]
    LeaseRequest.objects.filter(pk=waiting[0]).update(status="in_review")
    LeaseRequest.objects.filter(pk=waiting[1]).update(status="failed")

    refused = assert_error(post(owner, body(owner)), 422, "VALIDATION")
    assert "20 lease requests waiting" in refused["message"], refused
    assert LeaseRequest.objects.filter(organization_id=owner.org.pk).count() == 20
    assert post(sibling, body(sibling)).status_code == 202  # another organization's queue is its own

    LeaseRequest.objects.filter(pk=waiting[2]).update(status="rejected")
    assert post(owner, body(owner)).status_code == 202


def test_the_refusal_names_what_counts_and_asks_for_nothing_the_api_cannot_do(owner):
    """A partner whose requests had failed (binding failed, staff to assign again) read "raise a request's count
    instead of filing another": no call changes a filed request's count, and nothing said its failed requests
    were the ones holding it back."""
    waiting = [request_accounts(owner, 1)["requestId"] for _ in range(20)]
    LeaseRequest.objects.filter(pk__in=waiting).update(status="failed")

    message = assert_error(post(owner, body(owner)), 422, "VALIDATION")["message"]

    assert "raise a request's count" not in message, message
    assert "failed" in message and "up to 50" in message, message


@pytest.mark.django_db(transaction=True)
def test_two_requests_one_short_of_the_cap_at_once_file_one(owner):
    """The waiting requests are counted under the organization's row lock: the second filing waits for the
    first to commit and counts it, rather than both counting 19 and filing 21."""
    import threading

    from django.db import connection

    from config.api.errors import Validation
    from leasing import services
    from tests.concurrency import held_open, wait_until_waiting

    for _ in range(19):
        request_accounts(owner, 1)

    def file():
        return services.lease_request_create(project=owner.project, count=1, vertical="fitness", language="en-US",
                                             geos=["US"])  # fmt: skip

    outcome = {}

    def second():
        try:
            file()
            outcome["second"] = "filed"
        except Validation:
            outcome["second"] = "refused"
        finally:
            connection.close()

    with held_open(file):
        thread = threading.Thread(target=second)
        thread.start()
        wait_until_waiting("FOR NO KEY UPDATE")
    thread.join(30)

    assert outcome == {"second": "refused"}
    assert LeaseRequest.objects.filter(organization_id=owner.org.pk).count() == 20
