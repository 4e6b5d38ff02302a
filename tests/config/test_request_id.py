"""Support finds a partner's failed call by the X-Request-Id of its response: every line the call wrote carries
that id (Django's own lines included), a load balancer's id is kept, and a worker's lines name their task."""

import logging

import pytest
from celery.signals import task_postrun, task_prerun
from django.test import Client

from config import requestid
from tests.conftest import make_tenant


def records_of(caplog, request_id: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "request_id", None) == request_id]


@pytest.mark.django_db
def test_every_line_a_call_writes_carries_the_id_its_response_gives_the_partner(caplog):
    with caplog.at_level(logging.INFO):
        refused = Client().get("/v1/projects", HTTP_AUTHORIZATION="Bearer lyr_nope_nope")
        # With a key: without one an unknown path is a 401, logged where it is refused, like the first call.
        missing = Client().get("/v1/nope", HTTP_AUTHORIZATION=f"Bearer {make_tenant('Acme').raw_key}")
    first, second = refused["X-Request-Id"], missing["X-Request-Id"]
    assert first.startswith("req_") and second.startswith("req_") and first != second
    assert [r.name for r in records_of(caplog, first)] == ["config.api.authentication"]
    # Django logs "Not Found: /v1/nope" after the middleware has returned: still this request's line.
    assert [r.getMessage() for r in records_of(caplog, second)] == ["Not Found: /v1/nope"]
    assert requestid.current() == requestid.NONE  # nothing after the request is credited to it


@pytest.mark.django_db
def test_a_load_balancers_id_is_kept_and_a_malformed_one_replaced():
    kept = Client().get("/v1/projects", HTTP_X_REQUEST_ID="lb-7f3a9c21.eu:1")
    assert kept["X-Request-Id"] == "lb-7f3a9c21.eu:1"
    for sent in ("short", "has spaces in it", "x" * 129, "line\nbreak-12345"):
        replaced = Client().get("/v1/projects", HTTP_X_REQUEST_ID=sent)
        assert replaced["X-Request-Id"].startswith("req_"), sent


@pytest.mark.django_db
def test_the_log_line_as_written_shows_the_id(caplog):
    handler = next(h for h in logging.getLogger().handlers if getattr(h, "formatter", None) is not None)
    with caplog.at_level(logging.INFO):
        response = Client().get("/v1/projects")
    (line,) = records_of(caplog, response["X-Request-Id"])
    assert f" {response['X-Request-Id']} API call refused (401)" in handler.format(line)


def test_a_workers_lines_name_their_task(caplog):
    from scheduling.tasks import dispatch_due_posts

    log = logging.getLogger("scheduling.tasks")
    with caplog.at_level(logging.INFO):
        task_prerun.send(sender=dispatch_due_posts, task_id="0b1c2d3e", task=dispatch_due_posts)
        log.info("inside the task")
        task_postrun.send(sender=dispatch_due_posts, task_id="0b1c2d3e", task=dispatch_due_posts)
        log.info("after it")
    inside, after = (r for r in caplog.records if r.name == "scheduling.tasks")
    assert (inside.request_id, after.request_id) == ("task:0b1c2d3e", "-")


@pytest.mark.django_db
def test_a_platform_call_answered_in_process_leaves_the_callers_id_alone():
    # The sandbox answered in process (tests, make run's default transport) ran through the middleware in the
    # caller's context: the caller's later lines carried the sandbox request's id.
    from accounts.platforms.http import platform_http_client, platform_request

    requestid.set_current("task:outer-1234")
    try:
        with platform_http_client() as http:
            platform_request(http, "sandbox", "GET", "http://testserver/v1/nope")
        assert requestid.current() == "task:outer-1234"
    finally:
        requestid.set_current(requestid.NONE)


@pytest.mark.django_db
def test_the_probes_carry_an_id_too():
    assert Client().get("/healthz")["X-Request-Id"].startswith("req_")
