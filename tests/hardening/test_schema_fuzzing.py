"""Schema fuzzing: schemathesis generates requests for every operation of /v1/openapi.json and sends them
in-process to this Django app with a valid key, path parameters aimed at real objects of the key's
organization. Every answer must be a non-5xx that the schema documents (status, content type, body,
headers), every error must be the envelope, and invalid input must be refused with a 4xx.

Bounded and reproducible for CI: a fixed number of examples per operation, derandomized, no deadline.
The figures of a full run land in var/reliability/fuzz.json."""

import json

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.urls import get_script_prefix, set_script_prefix
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from accounts.services import EVENT_TYPES
from tests.hardening import figures
from tests.hardening.world import HOOK_URL, build
from tests.scheduling.publish_helpers import iso, later

POSITIVE_EXAMPLES = 25
NEGATIVE_EXAMPLES = 20
UNKNOWN_ID_EXAMPLES = 5  # path parameters left to the generator: ids of nothing (or not ids at all)

# Statuses that count as "refused" for invalid input: never a 5xx, never a 2xx.
REFUSED = ["400", "401", "403", "404", "405", "409", "413", "422", "429"]
CONFIG = schemathesis.Config.from_dict({"checks": {"negative_data_rejection": {"expected-statuses": REFUSED}}})


def _operation_labels() -> list[str]:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return sorted(f"{method.upper()} {path}" for path, operations in schema["paths"].items() for method in operations)


OPERATIONS = _operation_labels()


class InProcessApp(WSGIHandler):
    """This Django app as a WSGI callable for the fuzzer, minus request_started / request_finished: their
    close_old_connections receiver would close the connection the test itself runs on."""

    def __call__(self, environ, start_response):
        prefix = get_script_prefix()
        set_script_prefix("/")
        try:
            response = self.get_response(self.request_class(environ))
        finally:
            set_script_prefix(prefix)
        body = b"".join(response.streaming_content) if response.streaming else response.content
        headers = [*response.items(), *(("Set-Cookie", c.output(header="")) for c in response.cookies.values())]
        start_response(f"{response.status_code} {response.reason_phrase}", headers)
        return [body]


def error_envelope(ctx, response, case):
    """Every 4xx / 5xx is API.md's envelope: {"error": {"code", "message", "details"}} and nothing else."""
    if response.status_code < 400:
        return None
    try:
        body = json.loads(response.content)
    except ValueError:
        raise AssertionError(f"{response.status_code} without a JSON body: {response.content[:200]!r}")
    error = body.get("error") if isinstance(body, dict) else None
    assert isinstance(body, dict) and set(body) == {"error"}, f"not the error envelope: {body!r}"
    assert isinstance(error, dict) and set(error) == {"code", "message", "details"}, f"bad envelope: {body!r}"
    assert isinstance(error["code"], str) and error["code"].isupper() and error["message"], body
    assert isinstance(error["details"], dict), body
    return None


def rate_limit_has_retry_after(ctx, response, case):
    if response.status_code == 429:
        assert response.headers.get("retry-after"), "429 without Retry-After"
    return None


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
    error_envelope,
    rate_limit_has_retry_after,
]


def _valid_bodies(ids: dict) -> dict:
    """A valid request body for every operation that takes one: each must answer 2xx, which proves the
    fuzzed cases of that operation run against objects the operation really reaches."""
    return {
        "POST /v1/projects/{projectId}/social/oauth-url": {
            "platform": "tiktok",
            "returnUrl": "https://app.acme.test/back",
            "usageNote": "fuzz",
        },
        "POST /v1/projects/{projectId}/social/reauth-url": {"socialAccountId": ids["accountId"]},
        "POST /v1/projects/{projectId}/content": {
            "mediaType": "carousel",
            "mediaUrls": ["https://cdn.acme.test/1.jpg", "https://cdn.acme.test/2.jpg"],
            "caption": "fuzz",
        },
        "POST /v1/content/{containerId}/schedule": {
            "targets": [{"socialAccountId": ids["accountId"], "mode": "draft"}],
            "scheduledFor": iso(later(hours=3)),
        },
        "POST /v1/projects/{projectId}/leased-accounts/request": {
            "projectId": ids["projectId"],
            "count": 2,
            "niche": {"vertical": "fitness", "language": "en-US", "geo": ["US"]},
        },
        "POST /v1/webhook-endpoints": {"url": HOOK_URL, "events": ["social_account.connected"]},
        "PATCH /v1/webhook-endpoints/{endpointId}": {
            "url": HOOK_URL,
            "events": ["scheduled_post.failed"],
            "enabled": True,
        },
    }


def _plausible(ids: dict) -> dict:
    """Values that get a generated body past the checks random data never passes (a real account of the
    project, a time inside the scheduling window, an allowed return host, a known event type), by field
    name: the fuzzer puts them in now and then, so the cases also reach the operations' success paths."""
    return {
        "socialAccountId": st.just(ids["accountId"]),
        "projectId": st.just(ids["projectId"]),
        "scheduledFor": st.integers(0, 24 * 360).map(lambda hours: iso(later(hours=hours))),
        "returnUrl": st.sampled_from(["https://app.acme.test/back", "http://localhost:3000/back"]),
        "targets": st.lists(
            st.fixed_dictionaries(
                {"socialAccountId": st.just(ids["accountId"]), "mode": st.sampled_from(["publish", "draft"])}
            ),
            min_size=1,
            max_size=1,
        ),
        "url": st.just(HOOK_URL),
        "events": st.lists(st.sampled_from(sorted(EVENT_TYPES)), min_size=1, max_size=3),
        "mediaUrls": st.lists(st.just("https://cdn.acme.test/media.jpg"), min_size=1, max_size=3),
        "language": st.sampled_from(["en-US", "fr", "pt-BR"]),
        "geo": st.lists(st.sampled_from(["US", "CA", "FR", "BR"]), min_size=1, max_size=3),
    }


def _with_plausible_values(ids: dict):
    """case → a strategy of that case with some body fields replaced by plausible values (valid cases only:
    an invalid case must stay invalid)."""
    plausible = _plausible(ids)

    def substitute(draw, value):
        if isinstance(value, dict):
            return {
                key: draw(plausible[key]) if key in plausible and draw(st.booleans()) else substitute(draw, item)
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [substitute(draw, item) for item in value]
        return value

    def with_body(case, draw):
        if isinstance(case.body, dict):
            case.body = substitute(draw, case.body)
        return case

    return lambda case: st.composite(lambda draw: with_body(case, draw))()


@pytest.fixture(scope="module")
def tally():
    """Cases tried per operation; var/reliability/fuzz.json is written once every operation ran."""
    per_operation: dict[str, dict] = {}
    yield per_operation
    if set(per_operation) == set(OPERATIONS):
        cases = sum(f["cases"] for f in per_operation.values())
        failures = sum(f["failures"] for f in per_operation.values())
        figures.record(
            "fuzz",
            test=__name__.replace(".", "/") + ".py",
            cases=cases,
            failures=failures,
            line=f"schema fuzzing: {len(per_operation)} operations, {cases} cases, {failures} failing",
            operations=len(per_operation),
            # fuzzed cases (beyond the one valid request) that got a 2xx: the fuzzing reached success paths
            operationsWithFuzzed2xx=sum(
                any(code.startswith("2") for code in f["statuses"]) for f in per_operation.values()
            ),
            statuses={label: dict(sorted(f["statuses"].items())) for label, f in sorted(per_operation.items())},
            examplesPerOperation={
                "valid": 1,
                "positive": POSITIVE_EXAMPLES,
                "negative": NEGATIVE_EXAMPLES,
                "unknownIds": UNKNOWN_ID_EXAMPLES,
            },
        )


def _load_schema():
    schema = schemathesis.openapi.from_wsgi("/v1/openapi.json", InProcessApp(), config=CONFIG)
    return schema


def test_every_operation_of_the_served_schema_is_fuzzed(db):
    schema = _load_schema()
    served = sorted(result.ok().label for result in schema.get_all_operations())
    assert served == OPERATIONS


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("label", OPERATIONS)
def test_operation_survives_fuzzing(label, owner, tally):
    world = build(owner, handle="fuzz.owner")
    auth = {"Authorization": f"Bearer {owner.raw_key}"}
    schema = _load_schema()
    operation = schema.find_operation_by_label(label)
    assert operation is not None, label
    names = [parameter.name for parameter in operation.path_parameters]
    missing = [name for name in names if name not in world.ids]
    assert not missing, f"{label}: the fuzzing world has no object for {missing}; add one to tests/hardening/world.py"
    path_ids = {name: world.ids[name] for name in names}
    counted = {"cases": 0, "failures": 0, "statuses": {}}
    tally[label] = counted

    def send(case):
        counted["cases"] += 1
        try:
            response = case.call_and_validate(checks=CHECKS)
        except Exception:
            counted["failures"] += 1
            raise
        status = str(response.status_code)
        counted["statuses"][status] = counted["statuses"].get(status, 0) + 1

    # A valid request first: it must succeed, or the fuzzing below would only ever meet errors.
    valid = _valid_bodies(world.ids).get(label)
    case = operation.Case(
        path_parameters=path_ids, **({"body": valid, "media_type": "application/json"} if valid else {})
    )
    response = case.call(headers=auth)
    counted["cases"] += 1
    assert 200 <= response.status_code < 300, (label, response.status_code, response.content[:500])
    case.validate_response(response, headers=auth, checks=CHECKS)

    plausible = _with_plausible_values(world.ids)

    def run(mode, path_parameters, examples) -> None:
        # The key is fixed: the cases exercise the operation, not authentication (tests/config covers it).
        strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters, headers=auth)
        if mode is GenerationMode.POSITIVE:
            strategy = strategy.flatmap(plausible)

        @hypothesis_settings(
            max_examples=examples,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
            print_blob=True,
        )
        @given(case=strategy)
        def fuzz(case):
            send(case)

        fuzz()

    run(GenerationMode.POSITIVE, path_ids, POSITIVE_EXAMPLES)
    try:
        run(GenerationMode.NEGATIVE, path_ids, NEGATIVE_EXAMPLES)
    except Unsatisfiable:
        # Nothing to make invalid once the path and the key are fixed (no body, no query): make the path
        # invalid instead. An operation with no input at all (GET /v1/wallet) has no invalid request.
        if path_ids:
            run(GenerationMode.NEGATIVE, None, NEGATIVE_EXAMPLES)
    if path_ids:
        run(GenerationMode.POSITIVE, None, UNKNOWN_ID_EXAMPLES)
