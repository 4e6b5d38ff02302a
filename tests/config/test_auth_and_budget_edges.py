"""Partner-visible edges of authentication and rate limiting that no other test pins down."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.cache import cache

from tests.conftest import assert_error

pytestmark = pytest.mark.urls("tests.config.plumbing_urls")

# 20 s into a minute: the fixed one-minute window ends 40 s later.
T0 = datetime(2026, 4, 18, 12, 30, 20, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _fresh_counters():
    cache.clear()
    yield
    cache.clear()


def test_retry_after_on_the_api_budget_is_the_time_left_in_the_window(owner, settings):
    """A partner over its per-key budget is told, in Retry-After and in the message, how long until the
    window resets (here 40 s), not to come back after one second and be refused again."""
    settings.LAYERS_API_RATE = "2/min"
    with time_machine.travel(T0, tick=False):
        for _ in range(2):
            assert owner.client.get("/v1/projects").status_code == 200
        response = owner.client.get("/v1/projects")
    error = assert_error(response, 429, "RATE_LIMITED")
    assert response["Retry-After"] == "40"
    assert "40 s" in error["message"]


def test_retry_after_for_too_many_wrong_keys_is_the_time_left_in_the_window(anon, owner, settings):
    """A client hammering with a wrong key gets 429 with the real wait, not a 1 s hint."""
    settings.LAYERS_AUTH_FAILURE_RATE = "2/min"
    anon.credentials(HTTP_AUTHORIZATION=f"Bearer {owner.raw_key[:-4]}XXXX")
    with time_machine.travel(T0, tick=False):
        for _ in range(2):
            assert_error(anon.get("/v1/projects"), 401, "UNAUTHENTICATED")
        response = anon.get("/v1/projects")
    assert_error(response, 429, "RATE_LIMITED")
    assert response["Retry-After"] == "40"


def test_the_per_key_budget_holds_for_requests_spread_over_the_window(owner, settings):
    """The budget is per minute, not per burst: a client pacing its calls a few seconds apart is refused
    once it has used the minute's budget, until the next minute starts."""
    settings.LAYERS_API_RATE = "3/min"
    start = datetime(2026, 4, 18, 12, 30, 0, tzinfo=UTC)
    for second in (1, 10, 20):
        with time_machine.travel(start + timedelta(seconds=second), tick=False):
            assert owner.client.get("/v1/projects").status_code == 200
    with time_machine.travel(start + timedelta(seconds=30), tick=False):
        response = owner.client.get("/v1/projects")
    assert_error(response, 429, "RATE_LIMITED")
    assert response["Retry-After"] == "30"
    with time_machine.travel(start + timedelta(seconds=61), tick=False):
        assert owner.client.get("/v1/projects").status_code == 200


@pytest.mark.parametrize("scheme", ["bearer", "BEARER"])
def test_the_bearer_scheme_is_case_insensitive(anon, owner, scheme):
    """HTTP auth schemes are case-insensitive (RFC 9110 §11.1): `Authorization: bearer <key>` works."""
    anon.credentials(HTTP_AUTHORIZATION=f"{scheme} {owner.raw_key}")
    assert anon.get("/v1/projects").status_code == 200


def _budget(response) -> tuple[str | None, str | None, str | None]:
    return response.get("RateLimit-Limit"), response.get("RateLimit-Remaining"), response.get("RateLimit-Reset")


def test_every_answer_says_how_much_of_the_key_budget_is_left(owner, settings):
    """A dashboard paces its calls from the answers it already gets: each says the budget, what is left of it
    and when it resets, down to the 429 (0 left, reset as Retry-After) and whether the answer is an error."""
    settings.LAYERS_API_RATE = "3/min"
    with time_machine.travel(T0, tick=False):
        first = owner.client.get("/v1/projects")
        missing = owner.client.get("/v1/projects/prj_00000000-0000-4000-8000-000000000000/social-accounts")
        last = owner.client.get("/v1/projects")
        refused = owner.client.get("/v1/projects")
    assert first.status_code == 200
    assert _budget(first) == ("3", "2", "40")
    assert_error(missing, 404, "NOT_FOUND")
    assert _budget(missing) == ("3", "1", "40")
    assert _budget(last) == ("3", "0", "40")
    assert_error(refused, 429, "RATE_LIMITED")
    assert _budget(refused) == ("3", "0", "40")
    assert refused["Retry-After"] == "40"


def test_a_replayed_answer_reports_the_budget_now(owner, settings):
    """The stored answer of an Idempotency-Key comes back with the key's standing at the time of the retry,
    not the one its first request saw: the retry was counted too."""
    settings.LAYERS_API_RATE = "10/min"
    with time_machine.travel(T0, tick=False):
        first = owner.client.post("/v1/_probe", {"note": "launch"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
        again = owner.client.post("/v1/_probe", {"note": "launch"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert _budget(first)[1] == "9"
    assert _budget(again)[1] == "8"


def test_a_refused_key_gets_no_budget_of_a_key(anon, owner, settings):
    """A wrong key is counted against its address's failure budget, not any key's: the 401 says nothing of a
    key's budget (it would tell a guesser about a key it does not hold)."""
    settings.LAYERS_API_RATE = "3/min"
    anon.credentials(HTTP_AUTHORIZATION=f"Bearer {owner.raw_key[:-4]}XXXX")
    response = anon.get("/v1/projects")
    assert_error(response, 401, "UNAUTHENTICATED")
    assert _budget(response) == (None, None, None)


def test_retry_after_and_reset_round_a_fraction_of_a_second_up(owner, settings):
    """At 20.5 s into the minute, 39.5 s are left: a partner told 39 s retries inside the window and is refused
    again. Both Retry-After and RateLimit-Reset say 40."""
    settings.LAYERS_API_RATE = "1/min"
    with time_machine.travel(T0 + timedelta(milliseconds=500), tick=False):
        first = owner.client.get("/v1/projects")
        refused = owner.client.get("/v1/projects")
    assert first["RateLimit-Reset"] == "40"
    assert_error(refused, 429, "RATE_LIMITED")
    assert refused["Retry-After"] == "40" and refused["RateLimit-Reset"] == "40"
