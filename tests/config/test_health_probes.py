"""/healthz and /readyz as load balancers and Kubernetes use them: they send the pod's address as Host, so the
probes are answered before the host check (and nothing else is)."""

import logging

import pytest
from django.test import Client

POD = "10.0.0.5:18431"


@pytest.fixture
def pod_client():
    return Client(HTTP_HOST=POD, raise_request_exception=False)


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_a_probe_with_the_pods_address_as_host_is_answered_without_an_error_log(db, pod_client, caplog, path):
    with caplog.at_level(logging.WARNING):
        response = pod_client.get(path)
    assert response.status_code == 200, response.content[:300]
    assert response.json()["status"] == "ok"
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize(
    "path", ["/healthz/", "/healthz/x", "/readyzz", "/v1/projects", "/admin/", "/docs/", "/v1/openapi.json"]
)
def test_anything_else_with_a_host_not_allowed_is_still_refused(db, pod_client, path):
    assert pod_client.get(path).status_code == 400


def test_a_probe_answers_the_same_with_an_allowed_host(db, pod_client):
    allowed = Client()
    assert allowed.get("/healthz").json() == pod_client.get("/healthz").json() == {"status": "ok"}
    assert allowed.get("/readyz").json() == pod_client.get("/readyz").json()
