"""How the geo codes of a lease request are stored and shown back to the partner."""

import pytest

from tests.conftest import assert_error
from tests.leasing.helpers import NICHE, get_request

GEO_MESSAGE = "Not an ISO 3166-1 alpha-2 country code, such as US."


def test_geo_codes_are_upper_cased_and_deduplicated(owner):
    # The request shows each country once, upper-case, in the order first given: ["us", "CA", "US"] is US, CA.
    body = {"projectId": owner.project.id, "count": 1, "niche": {**NICHE, "geo": ["us", "CA", "US"]}}
    response = owner.client.post(f"/v1/projects/{owner.project.id}/leased-accounts/request", body, format="json")
    assert response.status_code == 202, response.content
    assert get_request(owner, response.json()["requestId"])["niche"]["geo"] == ["US", "CA"]


@pytest.mark.parametrize("bad", ["USA", "U", "", "ZZ", "U1", "U S", 840, None, ["US"]])
def test_a_bad_geo_code_is_named_by_its_index_with_one_message(owner, bad):
    # A partner fixing geo codes needs to know which one is wrong: "USA" was named at niche.geo.1 with DRF's
    # "Ensure this field has no more than 2 characters.", "ZZ" at niche.geo (no index) with another message.
    body = {"projectId": owner.project.id, "count": 1, "niche": {**NICHE, "geo": ["US", bad]}}
    response = owner.client.post(f"/v1/projects/{owner.project.id}/leased-accounts/request", body, format="json")
    fields = assert_error(response, 422, "VALIDATION")["details"]["fields"]
    assert fields == {"niche.geo.1": [GEO_MESSAGE]}, fields


def test_every_bad_geo_code_is_named_in_one_answer(owner):
    body = {"projectId": owner.project.id, "count": 1, "niche": {**NICHE, "geo": ["ZZ", "CA", "usa"]}}
    response = owner.client.post(f"/v1/projects/{owner.project.id}/leased-accounts/request", body, format="json")
    fields = assert_error(response, 422, "VALIDATION")["details"]["fields"]
    assert fields == {"niche.geo.0": [GEO_MESSAGE], "niche.geo.2": [GEO_MESSAGE]}, fields
