"""The API writes its JSON with orjson (config/api/renderers.py) for speed; a partner must read exactly the
bytes DRF's own renderer wrote before, for every kind of value an answer carries."""

import json
import uuid
from datetime import UTC, date, datetime, time, timedelta
from datetime import timezone as timezone_offset
from decimal import Decimal

import pytest
from django.utils.translation import gettext_lazy
from rest_framework import renderers
from rest_framework.utils.serializer_helpers import ReturnDict, ReturnList

from accounts.models import SocialAccount
from config.api.renderers import JSONRenderer
from tests.factories import make_account

pytestmark = pytest.mark.django_db

PAYLOADS = {
    "empty": {},
    "page": {
        "data": [{"id": "sa_1", "handle": 'ünïcødé 🎬 "quoted" back\\slash\ttab\nline', "avatarUrl": None, "n": 3}],
        "nextCursor": None,
        "hasMore": False,
    },
    "datetimes in UTC and elsewhere": {
        "utc": datetime(2026, 11, 29, 3, 4, 5, 123456, tzinfo=UTC),
        "offset": datetime(2026, 3, 29, 1, 30, tzinfo=timezone_offset(timedelta(hours=2))),
        "naive": datetime(2026, 1, 1, 0, 0),
        "date": date(2026, 2, 28),
        "time": time(23, 59, 59, 1),
        "duration": timedelta(days=1, seconds=5),
    },
    "decimals and ids": {"amount": Decimal("19.99"), "zero": Decimal("0.00"), "uuid": uuid.UUID(int=7)},
    "lazy text": {"detail": gettext_lazy("This field is required.")},
    "line separators": {"caption": "one\u2028two\u2029three"},
    "non-string keys": {1: "one", None: "none", False: "no"},
    "serializer containers": ReturnDict(
        {"items": ReturnList([1, 2, {"a": [True, False]}], serializer=None)}, serializer=None
    ),
    "big integers": {"max": 2**63 - 1, "beyond": 2**70, "negative": -(2**63)},
    "nested lists": [[[]], [{}], ["x", 1, None, True]],
}


@pytest.mark.parametrize("name", list(PAYLOADS))
def test_the_api_writes_the_same_bytes_as_drf(name):
    data = PAYLOADS[name]
    assert JSONRenderer().render(data) == renderers.JSONRenderer().render(data)


def test_floats_read_back_as_the_same_numbers():
    # orjson and the standard library may spell a float differently (1e+16 / 1e16); the number is the same
    data = {"rate": 0.1, "big": 1e16, "small": 5e-324, "whole": 2.0, "negative": -1.5}
    assert json.loads(JSONRenderer().render(data)) == json.loads(renderers.JSONRenderer().render(data))


def test_a_pretty_printed_answer_is_still_drfs():
    data = {"a": [1, {"b": None}]}
    media_type = "application/json; indent=4"
    assert JSONRenderer().render(data, media_type) == renderers.JSONRenderer().render(data, media_type)
    assert b'\n    "a"' in JSONRenderer().render(data, media_type)


def test_a_float_that_is_not_a_number_is_written_as_null_rather_than_failing_the_request():
    assert JSONRenderer().render({"rate": float("nan")}) == b'{"rate":null}'


def test_a_listed_page_reads_the_same_as_drf_would_have_written_it(owner):
    # given accounts, one of them with a handle full of characters JSON escapes
    make_account(owner, handle='emoji 🎬 "quote" \u2028')
    make_account(owner, platform="instagram")
    assert SocialAccount.objects.count() == 2

    # when the partner lists them
    response = owner.client.get(f"/v1/projects/{owner.project.pk}/social-accounts")

    # then the body is exactly what DRF's renderer makes of the same data
    assert response.status_code == 200
    assert response.content == renderers.JSONRenderer().render(response.data)
    assert "\u2028".encode() not in response.content and b"\\u2028" in response.content
