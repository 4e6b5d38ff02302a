"""Idempotency-Key on POST (config/api/idempotency.py), through the probe operation that records one
event per executed request: the event count is "how many times the work was done"."""

import threading
from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.db.models.functions import Now
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import Event, IdempotencyKey
from scheduling import services
from scheduling.models import ScheduledPost
from tests.accounts.oauth_helpers import connected_account
from tests.config import plumbing_urls
from tests.conftest import assert_error
from tests.scheduling.publish_helpers import MEDIA, iso

pytestmark = pytest.mark.urls("tests.config.plumbing_urls")


def post(client, body, key, path="/v1/_probe"):
    headers = {} if key is None else {"HTTP_IDEMPOTENCY_KEY": key}
    return client.post(path, body, format="json", **headers)


def work_done(tenant) -> int:
    return Event.objects.filter(organization=tenant.org).count()


def client_for(tenant) -> APIClient:
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tenant.raw_key}")
    return client


def test_same_key_and_body_replays_status_and_body_without_redoing_the_work(owner):
    first = post(owner.client, {"note": "hello"}, "k-1")
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first

    again = post(owner.client, {"note": "hello"}, "k-1")

    assert again.status_code == 201
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert work_done(owner) == 1


def test_same_json_written_differently_is_the_same_request(owner):
    first = owner.client.post(
        "/v1/_probe", b'{"note": "x", "count": 2}', content_type="application/json", HTTP_IDEMPOTENCY_KEY="k"
    )
    again = owner.client.post(
        "/v1/_probe", b'{"count":2,"note":"x"}', content_type="application/json", HTTP_IDEMPOTENCY_KEY="k"
    )
    assert again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    assert work_done(owner) == 1


def test_without_a_key_every_post_does_the_work(owner):
    post(owner.client, {"note": "a"}, None)
    post(owner.client, {"note": "a"}, None)
    assert work_done(owner) == 2


def test_same_key_with_another_body_is_409_key_reused(owner):
    assert post(owner.client, {"note": "first"}, "k-2").status_code == 201

    response = post(owner.client, {"note": "second"}, "k-2")

    assert_error(response, 409, "IDEMPOTENCY_KEY_REUSED")
    assert work_done(owner) == 1


def test_same_key_on_another_path_is_409_key_reused(owner):
    assert post(owner.client, {"note": "first"}, "k-3").status_code == 201
    assert_error(post(owner.client, {"note": "first"}, "k-3", path="/v1/_probe_flaky"), 409, "IDEMPOTENCY_KEY_REUSED")
    assert work_done(owner) == 1


def test_a_422_is_not_stored_so_the_corrected_request_may_use_the_same_key(owner):
    # A refused input did no work: remembering it only made the partner's corrected retry a 409 (as Stripe,
    # "if incoming parameters failed validation no idempotent result is saved").
    first = post(owner.client, {"count": 9}, "k-422")
    assert_error(first, 422, "VALIDATION")
    assert not IdempotencyKey.objects.filter(organization=owner.org, key="k-422").exists()

    again = post(owner.client, {"count": 9}, "k-422")  # the same refused request is answered anew
    assert_error(again, 422, "VALIDATION")
    assert "Idempotent-Replayed" not in again

    fixed = post(owner.client, {"note": "fixed"}, "k-422")
    assert fixed.status_code == 201 and "Idempotent-Replayed" not in fixed
    replayed = post(owner.client, {"note": "fixed"}, "k-422")
    assert replayed["Idempotent-Replayed"] == "true" and replayed.json() == fixed.json()
    assert work_done(owner) == 1


def test_a_content_refused_for_its_media_type_can_be_corrected_under_the_same_key(owner):
    # What the partner hit: mediaType "gif" → 422, then the fixed body with the same key was 409.
    path = f"/v1/projects/{owner.project.id}/content"
    body = {"mediaType": "gif", "mediaUrls": ["https://cdn.acme.test/a.jpg"]}
    assert_error(post(owner.client, body, "k-gif", path), 422, "VALIDATION")

    fixed = post(owner.client, {**body, "mediaType": "image"}, "k-gif", path)

    assert fixed.status_code == 201, fixed.content
    again = post(owner.client, {**body, "mediaType": "image"}, "k-gif", path)
    assert again["Idempotent-Replayed"] == "true" and again.json()["id"] == fixed.json()["id"]


@pytest.mark.parametrize("body", [b"{nope", b"[1]", b'{"note": "x", "note": "fixed"}'])
def test_a_400_malformed_body_is_not_stored_either(owner, body):
    refused = owner.client.post("/v1/_probe", body, content_type="application/json", HTTP_IDEMPOTENCY_KEY="k-400")
    assert_error(refused, 400, "MALFORMED_REQUEST")

    fixed = post(owner.client, {"note": "fixed"}, "k-400")

    assert fixed.status_code == 201 and "Idempotent-Replayed" not in fixed
    assert work_done(owner) == 1


def test_a_422_stored_before_this_rule_no_longer_holds_the_key(owner):
    # A row kept by an earlier version (or by a worker still running it during a rolling deploy) stored a
    # refusal that did no work: it is read as absent, as if it had never been stored.
    assert post(owner.client, {"note": "x"}, "k-old-422").status_code == 201
    IdempotencyKey.objects.filter(organization=owner.org, key="k-old-422").update(
        status_code=422, response_body={"error": {"code": "VALIDATION", "message": "Invalid request.", "details": {}}}
    )

    fixed = post(owner.client, {"note": "fixed"}, "k-old-422")

    assert fixed.status_code == 201 and "Idempotent-Replayed" not in fixed
    assert work_done(owner) == 2


def test_a_refusal_that_depends_on_state_is_still_stored(owner):
    # 409 ACCOUNT_DISCONNECTED says what the account was when the request ran, not what was wrong with it:
    # it is kept and replayed as before, and another body under that key is still a reuse.
    from tests.factories import make_account

    gone = make_account(owner, status="disconnected")
    path = f"/v1/projects/{owner.project.id}/social/reauth-url"
    first = post(owner.client, {"socialAccountId": gone.pk}, "k-409", path)
    assert_error(first, 409, "ACCOUNT_DISCONNECTED")

    again = post(owner.client, {"socialAccountId": gone.pk}, "k-409", path)
    assert again["Idempotent-Replayed"] == "true" and again.json() == first.json()
    other = make_account(owner)
    assert_error(post(owner.client, {"socialAccountId": other.pk}, "k-409", path), 409, "IDEMPOTENCY_KEY_REUSED")


def test_keys_are_scoped_per_organization(owner, sibling):
    mine = post(owner.client, {"note": "same"}, "shared-key")
    theirs = post(sibling.client, {"note": "same"}, "shared-key")

    assert mine.status_code == theirs.status_code == 201
    assert "Idempotent-Replayed" not in theirs
    assert mine.json()["eventId"] != theirs.json()["eventId"]
    assert work_done(owner) == work_done(sibling) == 1
    # and a different body under another org's key is not a conflict for us
    assert post(sibling.client, {"note": "other"}, "k-only-sibling").status_code == 201
    assert post(owner.client, {"note": "mine"}, "k-only-sibling").status_code == 201


def test_another_api_key_of_the_organization_never_gets_the_first_keys_answer(owner):
    # Answers depend on the calling key (oauth-url checks the returnUrl against that key's allowlist): a
    # replay to another key would hand it an answer it may not get. Same key string, other API key: 409.
    from accounts import services

    _, raw = services.api_key_create(organization=owner.org, return_domains=["other.acme.test"], name="second app")
    other = APIClient(raise_request_exception=False)
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert post(owner.client, {"note": "same"}, "k-app").status_code == 201

    assert_error(post(other, {"note": "same"}, "k-app"), 409, "IDEMPOTENCY_KEY_REUSED")
    assert work_done(owner) == 1


def test_key_over_255_characters_is_422(owner):
    error = assert_error(post(owner.client, {"note": "x"}, "k" * 256), 422, "VALIDATION")
    assert "Idempotency-Key" in error["details"]["fields"]
    assert work_done(owner) == 0
    assert post(owner.client, {"note": "x"}, "k" * 255).status_code == 201


def test_empty_key_is_422(owner):
    assert_error(post(owner.client, {"note": "x"}, ""), 422, "VALIDATION")
    assert work_done(owner) == 0


def age(tenant, key, by):
    """Make the claim of `key` older by `by`, on the database's clock: the one that ages keys (created_at is
    written by the database and compared with its Now(), whatever this process's clock says)."""
    IdempotencyKey.objects.filter(organization=tenant.org, key=key).update(created_at=Now() - by)


def test_key_expires_after_24_hours_and_the_work_is_done_again(owner):
    first = post(owner.client, {"note": "daily"}, "k-ttl")
    age(owner, "k-ttl", timedelta(hours=23, minutes=59))
    within = post(owner.client, {"note": "daily"}, "k-ttl")
    assert within["Idempotent-Replayed"] == "true"
    assert work_done(owner) == 1
    age(owner, "k-ttl", timedelta(hours=24, seconds=1))
    after = post(owner.client, {"note": "daily"}, "k-ttl")

    assert after.status_code == 201
    assert "Idempotent-Replayed" not in after
    assert after.json()["eventId"] != first.json()["eventId"]
    assert work_done(owner) == 2


def test_a_key_in_its_24_hours_replays_and_is_kept_on_hosts_whose_clocks_are_ahead(owner):
    """A retry may reach a web host, and the hourly purge run on a worker, whose clock is minutes ahead of the
    one that claimed the key: a key 23 h 59 min old is still in its window for both."""
    from accounts.tasks import purge_idempotency_keys

    first = post(owner.client, {"note": "daily"}, "k-day")
    age(owner, "k-day", timedelta(hours=23, minutes=59))

    with time_machine.travel(timezone.now() + timedelta(minutes=5), tick=True):
        again = post(owner.client, {"note": "daily"}, "k-day")
        assert purge_idempotency_keys.apply().result == 0

    assert again["Idempotent-Replayed"] == "true" and again.json() == first.json()
    assert work_done(owner) == 1
    assert IdempotencyKey.objects.filter(organization=owner.org, key="k-day").exists()


def test_a_request_that_crashed_is_not_stored_and_can_be_retried(owner, monkeypatch):
    monkeypatch.setattr(plumbing_urls.FlakyProbeApi, "failures_left", 1)

    crashed = post(owner.client, {"note": "retry me"}, "k-crash", path="/v1/_probe_flaky")
    assert_error(crashed, 500, "INTERNAL")
    assert not IdempotencyKey.objects.filter(organization=owner.org, key="k-crash").exists()

    retried = post(owner.client, {"note": "retry me"}, "k-crash", path="/v1/_probe_flaky")
    assert retried.status_code == 201
    assert "Idempotent-Replayed" not in retried
    assert work_done(owner) == 1

    replayed = post(owner.client, {"note": "retry me"}, "k-crash", path="/v1/_probe_flaky")
    assert replayed["Idempotent-Replayed"] == "true" and replayed.json() == retried.json()
    assert work_done(owner) == 1


def test_a_claim_abandoned_by_a_dead_request_is_taken_over_after_a_minute(owner):
    # given a claim whose request died (no response stored): first 30 s ago, then two minutes ago
    assert post(owner.client, {"note": "orphan"}, "k-orphan").status_code == 201
    claim = IdempotencyKey.objects.filter(organization=owner.org, key="k-orphan")
    claim.update(status_code=None, response_body=None, created_at=timezone.now() - timedelta(seconds=30))
    assert_error(post(owner.client, {"note": "orphan"}, "k-orphan"), 409, "IDEMPOTENCY_KEY_REUSED")
    claim.update(created_at=timezone.now() - timedelta(minutes=2))
    # when the partner retries
    response = post(owner.client, {"note": "orphan"}, "k-orphan")
    # then the request runs again and its response is the one stored from now on
    assert response.status_code == 201 and "Idempotent-Replayed" not in response
    assert work_done(owner) == 2
    assert post(owner.client, {"note": "orphan"}, "k-orphan").json() == response.json()


def run_in_thread(fn, results, index):
    try:
        results[index] = fn()
    finally:
        connection.close()


def test_second_request_while_the_first_is_in_flight_is_409(owner, transactional_db, monkeypatch):
    """Thread A holds its request open after claiming the key; B, on its own connection, sends the same
    key and body: B is refused, A completes, and a later retry is a replay."""
    monkeypatch.setattr(plumbing_urls.GatedProbeApi, "entered", threading.Event())
    monkeypatch.setattr(plumbing_urls.GatedProbeApi, "release", threading.Event())
    results = [None, None]
    a = threading.Thread(
        target=run_in_thread,
        args=(lambda: post(client_for(owner), {"note": "gate"}, "k-gate", "/v1/_probe_gated"), results, 0),
    )
    a.start()
    try:
        assert plumbing_urls.GatedProbeApi.entered.wait(timeout=30)
        b = threading.Thread(
            target=run_in_thread,
            args=(lambda: post(client_for(owner), {"note": "gate"}, "k-gate", "/v1/_probe_gated"), results, 1),
        )
        b.start()
        b.join(timeout=30)
    finally:
        plumbing_urls.GatedProbeApi.release.set()
        a.join(timeout=30)

    first, second = results
    assert first.status_code == 201 and "Idempotent-Replayed" not in first
    assert_error(second, 409, "IDEMPOTENCY_KEY_REUSED")
    assert work_done(owner) == 1
    later = post(owner.client, {"note": "gate"}, "k-gate", "/v1/_probe_gated")
    assert later["Idempotent-Replayed"] == "true" and later.json() == first.json()


def test_the_claim_of_a_request_refused_422_is_released_when_it_ends(owner, transactional_db, monkeypatch):
    """While the refused request runs, its key is claimed (a second one is 409 as for any request); once it
    has answered 422 the claim is gone, and the corrected request with that key runs."""
    monkeypatch.setattr(plumbing_urls.GatedProbeApi, "entered", threading.Event())
    monkeypatch.setattr(plumbing_urls.GatedProbeApi, "release", threading.Event())
    results = [None]
    a = threading.Thread(
        target=run_in_thread,
        args=(lambda: post(client_for(owner), {"count": 9}, "k-gate-422", "/v1/_probe_gated"), results, 0),
    )
    a.start()
    try:
        assert plumbing_urls.GatedProbeApi.entered.wait(timeout=30)
        during = post(owner.client, {"note": "fixed"}, "k-gate-422", "/v1/_probe_gated")
        assert_error(during, 409, "IDEMPOTENCY_KEY_REUSED")
    finally:
        plumbing_urls.GatedProbeApi.release.set()
        a.join(timeout=30)

    assert_error(results[0], 422, "VALIDATION")
    assert not IdempotencyKey.objects.filter(organization=owner.org, key="k-gate-422").exists()
    fixed = post(owner.client, {"note": "fixed"}, "k-gate-422", "/v1/_probe_gated")
    assert fixed.status_code == 201 and "Idempotent-Replayed" not in fixed
    assert work_done(owner) == 1


def test_two_concurrent_requests_with_one_key_do_the_work_once(owner, transactional_db):
    """Two threads, each with its own PostgreSQL connection, start the same request at the same moment:
    exactly one does the work; the other gets the replay or 409, never a second execution."""
    barrier = threading.Barrier(2)
    results = [None, None]

    def send():
        client = client_for(owner)
        barrier.wait(timeout=30)
        return post(client, {"note": "race"}, "k-race")

    threads = [threading.Thread(target=run_in_thread, args=(send, results, i)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert work_done(owner) == 1
    executed = [r for r in results if r.status_code == 201 and "Idempotent-Replayed" not in r]
    others = [r for r in results if r not in executed]
    assert len(executed) == 1 and len(others) == 1
    other = others[0]
    if other.status_code == 409:
        assert_error(other, 409, "IDEMPOTENCY_KEY_REUSED")
    else:
        assert other.status_code == 201 and other["Idempotent-Replayed"] == "true"
        assert other.json() == executed[0].json()


def test_the_hourly_purge_forgets_keys_past_their_window_and_keeps_the_others(owner):
    from accounts.tasks import purge_idempotency_keys

    assert post(owner.client, {"note": "yesterday"}, "k-old").status_code == 201
    recent = post(owner.client, {"note": "this morning"}, "k-recent")
    age(owner, "k-old", timedelta(hours=24, minutes=1))
    age(owner, "k-recent", timedelta(hours=23))

    assert purge_idempotency_keys.apply().result == 1
    assert list(IdempotencyKey.objects.filter(organization=owner.org).values_list("key", flat=True)) == ["k-recent"]
    # the key still in its window still replays
    replayed = post(owner.client, {"note": "this morning"}, "k-recent")
    assert replayed["Idempotent-Replayed"] == "true" and replayed.json() == recent.json()


@pytest.mark.parametrize("skew", [0, 90], ids=["same-clock", "clock-90s-ahead"])
def test_a_retry_on_a_host_whose_clock_is_ahead_does_not_run_a_request_still_in_flight_again(
    owner, transactional_db, monkeypatch, skew
):
    """Load balancers send a partner's retry to any web host, and hosts' clocks drift. Host A claims the key
    and is still scheduling the post when the retry lands on host B, whose clock is 90 s ahead: B must see a
    request in flight (409), not one abandoned a minute ago, and the post is scheduled once."""
    account = connected_account(owner, "tiktok", "skew.idem")
    container = owner.client.post(
        f"/v1/projects/{owner.project.id}/content",
        {"mediaType": "video", "mediaUrls": MEDIA["video"], "caption": "launch"},
        format="json",
    ).json()
    body = {
        "targets": [{"socialAccountId": account["id"], "mode": "publish"}],
        "scheduledFor": iso(timezone.now() + timedelta(hours=1)),
    }
    path = f"/v1/content/{container['id']}/schedule"
    original = services.posts_schedule
    first_in, release = threading.Event(), threading.Event()

    def slow_first(**kwargs):
        if threading.current_thread().name == "host-a":
            first_in.set()
            assert release.wait(30)
        return original(**kwargs)

    monkeypatch.setattr(services, "posts_schedule", slow_first)
    answers = {}

    def host_a():
        answers["a"] = post(client_for(owner), body, "launch-1", path=path)

    thread = threading.Thread(target=run_in_thread, args=(host_a, {}, 0), name="host-a")
    thread.start()
    try:
        assert first_in.wait(30)
        with time_machine.travel(timezone.now() + timedelta(seconds=skew), tick=True):
            answers["b"] = post(owner.client, body, "launch-1", path=path)
    finally:
        release.set()
        thread.join(30)

    assert ScheduledPost.objects.filter(container_id=container["id"]).count() == 1
    assert answers["a"].status_code == 201
    assert_error(answers["b"], 409, "IDEMPOTENCY_KEY_REUSED")
    replayed = post(owner.client, body, "launch-1", path=path)
    assert replayed["Idempotent-Replayed"] == "true" and replayed.json() == answers["a"].json()
