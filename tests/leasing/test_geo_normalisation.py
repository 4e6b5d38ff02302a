"""How the geo codes of a lease request are stored and shown back to the partner."""

from tests.leasing.helpers import NICHE, get_request


def test_geo_codes_are_upper_cased_and_deduplicated(owner):
    # The request shows each country once, upper-case, in the order first given: ["us", "CA", "US"] is US, CA.
    body = {"projectId": owner.project.id, "count": 1, "niche": {**NICHE, "geo": ["us", "CA", "US"]}}
    response = owner.client.post(f"/v1/projects/{owner.project.id}/leased-accounts/request", body, format="json")
    assert response.status_code == 202, response.content
    assert get_request(owner, response.json()["requestId"])["niche"]["geo"] == ["US", "CA"]
