"""GET /v1/openapi.json is a valid OpenAPI 3 document covering every /v1 route, and the docs pages
(/docs/ Swagger UI, /docs/redoc/) load only assets served by this server: the machines have no internet."""

import re
from html.parser import HTMLParser

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from drf_spectacular.validation import validate_schema

from tests.conftest import assert_error

DOC_PAGES = ["/docs/", "/docs/redoc/"]
HTTP_METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture
def schema(db):
    response = Client().get("/v1/openapi.json")  # no Authorization header
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/")
    return response.json()


def v1_routes(patterns=None, prefix=""):
    """(OpenAPI-style path, view class) for every route of the real URLconf under /v1."""
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from v1_routes(entry.url_patterns, route)
        elif isinstance(entry, URLPattern) and route.startswith("v1/"):
            path = "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)
            yield path, getattr(entry.callback, "cls", None)


def test_openapi_json_is_served_without_a_key_and_validates(schema):
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "Layers partner API"
    validate_schema(schema)  # raises on a document that is not valid OpenAPI 3


def test_schema_generation_has_no_errors_or_warnings(db, tmp_path):
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
    assert (tmp_path / "schema.yaml").read_text().startswith("openapi: 3.")


def test_every_v1_route_and_method_is_in_the_schema(schema):
    routes = [(path, cls) for path, cls in v1_routes() if path != "/v1/openapi.json"]
    assert {"/v1/projects", "/v1/projects/{projectId}", "/v1/events"} <= {path for path, _ in routes}
    for path, cls in routes:
        assert path in schema["paths"], f"{path} is routed but not documented"
        methods = {m for m in HTTP_METHODS if cls is not None and hasattr(cls, m)}
        assert methods <= set(schema["paths"][path]), f"{path}: {methods - set(schema['paths'][path])}"


def test_every_operation_requires_the_api_key_and_documents_the_error_envelope(schema):
    assert schema["components"]["securitySchemes"]["ApiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "Layers API key (lyr_…)",
    }
    envelope = "#/components/schemas/Error"
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            assert {"ApiKey": []} in operation.get("security", []), where
            for status in ("401", "500"):
                content = operation["responses"][status]["content"]["application/json"]
                assert content["schema"]["$ref"] == envelope, where


def test_400_malformed_request_is_documented_only_where_a_body_is_read(schema):
    # rotate-secret's body is optional (none, or `{}`), but one that is sent is read: not JSON is a 400 there too
    rotate = schema["paths"]["/v1/webhook-endpoints/{endpointId}/rotate-secret"]["post"]
    oauth_url = schema["paths"]["/v1/projects/{projectId}/social/oauth-url"]["post"]
    assert not rotate["requestBody"].get("required") and "400" in rotate["responses"]
    assert rotate["requestBody"]["content"]["application/json"]["schema"]["maxProperties"] == 0
    assert "400" in oauth_url["responses"]
    assert "MALFORMED_REQUEST" in oauth_url["responses"]["400"]["description"]
    # the size cap is checked before anything reads the body, so 413 stays on both
    assert "413" in rotate["responses"] and "413" in oauth_url["responses"]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if "400" in operation["responses"]:
                assert "requestBody" in operation, f"{method.upper()} {path} documents a 400 it cannot answer"


class AssetLinks(HTMLParser):
    """Every URL a page makes the browser load: script src, link href, img src."""

    def __init__(self):
        super().__init__()
        self.urls = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and attrs.get("src"):
            self.urls.append(attrs["src"])
        if tag == "link" and attrs.get("href"):
            self.urls.append(attrs["href"])
        if tag in ("img", "iframe") and attrs.get("src"):
            self.urls.append(attrs["src"])


@pytest.mark.parametrize("page", DOC_PAGES)
def test_docs_page_renders_and_loads_nothing_from_outside(db, page):
    response = Client().get(page)
    assert response.status_code == 200
    html = response.content.decode()
    assert "/v1/openapi.json" in html
    parser = AssetLinks()
    parser.feed(html)
    assert any(url.endswith(".js") for url in parser.urls)
    for url in parser.urls:
        assert url.startswith("/") and not url.startswith("//"), url
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html, re.I), "an absolute URL in the page"


@pytest.mark.parametrize("page", DOC_PAGES)
def test_docs_assets_are_served_by_this_server(db, page, settings, tmp_path):
    # given the static files collected as `make run` does (whitenoise serves STATIC_ROOT)
    settings.STATIC_ROOT = str(tmp_path)
    call_command("collectstatic", "--noinput", verbosity=0)
    client = Client()  # a new client builds its middleware, whitenoise included, with this STATIC_ROOT
    parser = AssetLinks()
    parser.feed(client.get(page).content.decode())
    assets = [url for url in parser.urls if url.startswith(django_settings.STATIC_URL)]
    assert assets
    for url in assets:
        response = client.get(url)
        assert response.status_code == 200, url
        body = b"".join(response.streaming_content) if response.streaming else response.content
        assert len(body) > 100, url
        if url.endswith(".js"):
            assert "javascript" in response["Content-Type"], url
        if url.endswith(".css"):
            assert response["Content-Type"].startswith("text/css"), url


@pytest.mark.parametrize("page", [*DOC_PAGES, "/v1/openapi.json"])
def test_the_docs_and_the_document_answer_get_and_head_only_without_a_server_error(db, page):
    # OPTIONS went through DRF's metadata and the HTML renderer, which has no template for it: a 500 for
    # anyone on /docs/. The pages are read with GET (HEAD) and nothing else.
    client = Client(raise_request_exception=False)
    assert client.head(page).status_code == 200
    for method in ("options", "post", "put", "patch", "delete"):
        response = getattr(client, method)(page)
        assert response.status_code == 405, (method, response.status_code)
        assert response["Allow"] == "GET, HEAD"


def _json_schema(schema: dict, component: str) -> dict:
    """The component as JSON Schema, reading OpenAPI 3.0.3 to the letter: `nullable` adds null only to the
    `type` written beside it, and every other keyword keeps refusing null (what strict validators and
    generated clients do)."""

    def convert(node):
        if isinstance(node, list):
            return [convert(item) for item in node]
        if not isinstance(node, dict):
            return node
        node = {key: convert(value) for key, value in node.items() if key not in ("readOnly", "writeOnly")}
        if "$ref" in node:
            node["$ref"] = node["$ref"].replace("#/components/schemas/", "#/definitions/")
        if node.pop("nullable", False) and "type" in node:
            node["type"] = [node["type"], "null"]
            if "enum" in node:
                node["enum"] = [*node["enum"], None]
        return node

    return {"definitions": convert(schema["components"]["schemas"]), "$ref": f"#/definitions/{component}"}


def _violations(schema: dict, component: str, body: dict) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft7Validator(_json_schema(schema, component))
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(body)]


@pytest.mark.django_db(transaction=True)
def test_the_commonest_answers_validate_against_the_schema_read_strictly(schema, owner):
    from billing import services as billing
    from leasing import services as leasing
    from tests.accounts.oauth_helpers import connected_account, start
    from tests.leasing.helpers import add_pool, request_accounts
    from tests.scheduling.publish_helpers import later, schedule_now

    # `error` is null for every post that has not failed and every OAuth state that has not failed
    account = connected_account(owner, "tiktok", "schema.check")
    queued = owner.client.get(f"/v1/scheduled-posts/{schedule_now(owner, account['id'], when=later(hours=1))['id']}")
    assert queued.json()["error"] is None
    assert _violations(schema, "ScheduledPostOutput", queued.json()) == []
    pending = owner.client.get(f"/v1/social/oauth-status/{start(owner, 'tiktok')['state']}").json()
    assert pending["error"] is None
    assert _violations(schema, "OAuthStatusOutput", pending) == []

    # a leased account, with its own niche and its billing period
    add_pool(1)
    leasing.lease_assign(request_id=request_accounts(owner, 1)["requestId"], auto=True)
    leased = owner.client.get(f"/v1/projects/{owner.project.id}/leased-accounts").json()["data"][0]
    assert _violations(schema, "LeasedAccountOutput", leased) == []
    assert set(leased["niche"]) == {"vertical", "languages", "geo"}

    # money past 2^31 cents ($21.4M) is documented as int64, so typed clients do not overflow reading it
    billing.wallet_top_up(organization=owner.org, cents=3_000_000_000, reason="Wire", reference="")
    wallet = owner.client.get("/v1/wallet").json()
    assert wallet["balanceCents"] > 2**31 and _violations(schema, "WalletOutput", wallet) == []
    components = schema["components"]["schemas"]
    assert components["WalletOutput"]["properties"]["balanceCents"]["format"] == "int64"
    assert components["LedgerEntryOutput"]["properties"]["amountCents"]["format"] == "int64"
    assert components["MetricsOutput"]["properties"]["views"]["format"] == "int64"
    for bound in ("assignedAt", "currentPeriodStart", "currentPeriodEnd"):
        assert components["LeasedAccountOutput"]["properties"][bound]["format"] == "date-time"


def test_the_docs_say_event_data_is_a_snapshot_and_where_to_read_the_account_now(schema):
    # A partner stored the avatar from the social_account.connected webhook and kept null for good: that event
    # is recorded before the avatar copy and the layer provisioning. Every place a partner reads about event
    # data says it is a snapshot, and that the account as it is now comes from GET /v1/social-accounts/{id}.
    from pathlib import Path

    from accounts.webhooks.apis import WEBHOOKS_GUIDE

    readme = (Path(django_settings.BASE_DIR) / "README.md").read_text()
    webhooks_section = readme.split("\n## Webhooks\n", 1)[1].split("\n## ", 1)[0]
    texts = {
        "events list": schema["paths"]["/v1/events"]["get"]["description"],
        "event data": schema["components"]["schemas"]["EventOutput"]["properties"]["data"].get("description", ""),
        "webhook guide": WEBHOOKS_GUIDE,
        "README webhooks": webhooks_section,
    }
    for where, text in texts.items():
        flat = " ".join(text.split())
        assert "snapshot" in flat, where
        assert "GET /v1/social-accounts/{id}" in flat, where
        if where != "event data":
            assert "social_account.connected" in flat and "`avatarUrl: null`" in flat and "`layers: []`" in flat, where


def test_the_docs_say_what_data_holds_for_every_event_family_and_leased_accounts_get_no_connected(schema):
    # A partner writing a receiver from the docs knew the social_account.* payload only: for scheduled_post.* and
    # lease_request.* it had to guess the field names, and a receiver mirroring accounts met leased account ids
    # it never saw connected. Each family names the GET whose body its data is — a real operation of the API.
    from pathlib import Path

    from accounts.services import EVENT_TYPES
    from accounts.webhooks.apis import WEBHOOKS_GUIDE

    readme = (Path(django_settings.BASE_DIR) / "README.md").read_text()
    texts = {
        "event data": schema["components"]["schemas"]["EventOutput"]["properties"]["data"]["description"],
        "webhook guide": WEBHOOKS_GUIDE,
        "README webhooks": readme.split("\n## Webhooks\n", 1)[1].split("\n## ", 1)[0],
    }
    reads = {  # as the docs write it → the operation in the schema
        "social_account": ("/v1/social-accounts/{id}", "/v1/social-accounts/{accountId}"),
        "scheduled_post": ("/v1/scheduled-posts/{id}", "/v1/scheduled-posts/{postId}"),
        "lease_request": ("/v1/projects/{projectId}/leased-accounts/requests/{requestId}",) * 2,
    }
    assert {t.split(".")[0] for t in EVENT_TYPES} == set(reads)
    for _, operation in reads.values():
        assert "get" in schema["paths"][operation], operation
    for where, text in texts.items():
        flat = " ".join(text.split())
        for family, (path, _) in reads.items():
            assert f"`{family}.*`" in flat and f"GET {path}" in flat, (where, family)
        assert "`lease_request.assigned`" in flat and "`socialAccountIds`" in flat, where


def test_the_document_declares_the_rules_the_api_enforces(schema, owner):
    # A client generated from the document knew less than the API: an empty or unknown event list, the
    # replay header, and three closed sets of values typed as any string.
    components = schema["components"]["schemas"]
    events = components["EndpointCreateInputRequest"]["properties"]["events"]
    assert events["minItems"] == 1 and ("enum" in events["items"] or "$ref" in events["items"])
    for name, field in (("LeasedAccountOutput", "status"), ("PublishedPostOutput", "platform")):
        assert "$ref" in components[name]["properties"][field] or "enum" in components[name]["properties"][field]
    accepted = components["LeaseRequestAccepted"]["properties"]["status"]
    assert "$ref" in accepted or "enum" in accepted
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if any(p["name"] == "Idempotency-Key" for p in operation.get("parameters", [])):
                ok = next(code for code in operation["responses"] if code.startswith("2"))
                assert "Idempotent-Replayed" in operation["responses"][ok].get("headers", {}), f"{method} {path}"

    # and the API still answers what the document says, in its words
    empty = owner.client.post("/v1/webhook-endpoints", {"url": "https://93.184.216.34/h", "events": []}, format="json")
    assert assert_error(empty, 422, "VALIDATION")["details"]["fields"] == {"events": ["Give at least 1 item."]}
    unknown = owner.client.post(
        "/v1/webhook-endpoints", {"url": "https://93.184.216.34/h", "events": ["post.done"]}, format="json"
    )
    fields = assert_error(unknown, 422, "VALIDATION")["details"]["fields"]
    assert list(fields) == ["events.0"] and fields["events.0"][0].startswith(
        '"post.done" is not one of: lease_request.assigned, '
    )


def test_the_document_is_built_once_per_process(db, monkeypatch):
    # ~40 ms of CPU per build, for anyone, unthrottled: served from the first build after that.
    from drf_spectacular.generators import SchemaGenerator

    from config.urls import PublicSchemaView

    PublicSchemaView._document = None
    builds = []
    original = SchemaGenerator.get_schema
    monkeypatch.setattr(SchemaGenerator, "get_schema", lambda *a, **k: builds.append(1) or original(*a, **k))
    first, second = Client().get("/v1/openapi.json"), Client().get("/v1/openapi.json")
    assert first.status_code == second.status_code == 200 and first.json() == second.json()
    assert second["Content-Type"].startswith("application/vnd.oai.openapi+json") or "json" in second["Content-Type"]
    assert len(builds) == 1


@pytest.mark.parametrize("where", ["README webhooks", "webhook guide"])
def test_the_documented_verifier_accepts_our_signatures_and_refuses_anything_else_without_crashing(where):
    # A partner copying the verifier answered a request without our header, or with a mangled one, with a 500:
    # it raised (ValueError, StopIteration, TypeError on a non-ASCII value) instead of saying False.
    import time
    from pathlib import Path

    from accounts.webhooks.apis import WEBHOOKS_GUIDE
    from accounts.webhooks.services import signature_header

    text = (Path(django_settings.BASE_DIR) / "README.md").read_text() if where == "README webhooks" else WEBHOOKS_GUIDE
    block = text[text.index("def verify(") :].split("```", 1)[0]
    lines = block.splitlines()
    indent = len(lines[1]) - len(lines[1].lstrip()) - 4  # the snippet's own indentation in the document
    code = "\n".join(line[indent:] if line.strip() else "" for line in lines[1:])
    namespace: dict = {}
    exec("import hashlib, hmac, time\n" + lines[0].strip() + "\n" + code, namespace)  # noqa: S102 - our docs
    verify = namespace["verify"]

    body, now = b'{"id":"evt_1"}', int(time.time())
    assert verify(body, signature_header(secrets_=["whsec_new", "whsec_old"], timestamp=now, body=body), "whsec_old")
    assert not verify(body, signature_header(secrets_=["whsec_x"], timestamp=now - 400, body=body), "whsec_x")
    assert not verify(body + b" ", signature_header(secrets_=["whsec_x"], timestamp=now, body=body), "whsec_x")
    odd = ("t=\u00b2,v1=ab", "t=" + "1" * 5000 + ",v1=ab")  # a digit int() refuses; past int()'s 4,300 digits
    mangled_headers = ("", "v1=abc", "t=abc,v1=abc", f"t={now}", f"t={now},v1=é", "garbage", f"t={now},t={now},v1=a")
    for mangled in (*mangled_headers, *odd, None):  # None: the partner's framework has no such header
        assert verify(body, mangled, "whsec_x") is False, mangled


def test_the_node_verifier_of_the_guide_accepts_our_signatures_and_survives_a_forged_one(tmp_path):
    # A literal Node translation of the Python verifier threw ERR_CRYPTO_TIMING_SAFE_EQUAL_LENGTH on a forged
    # `v1=00` (timingSafeEqual takes equal lengths only), which takes a receiver's process down. The guide's
    # own Node verifier is run here, with Node, against headers Layers signs.
    import json
    import subprocess
    import time

    from accounts.webhooks.apis import WEBHOOKS_GUIDE
    from accounts.webhooks.services import signature_header

    snippet = WEBHOOKS_GUIDE[WEBHOOKS_GUIDE.index("```js") + len("```js") :].split("```", 1)[0]
    body, now = '{"id":"evt_1","data":{"caption":"désolé"}}', int(time.time())
    raw = body.encode()
    cases = [
        (body, signature_header(secrets_=["whsec_new", "whsec_old"], timestamp=now, body=raw), "whsec_old"),
        (body, signature_header(secrets_=["whsec_new", "whsec_old"], timestamp=now, body=raw), "whsec_new"),
        (body, signature_header(secrets_=["whsec_x"], timestamp=now - 400, body=raw), "whsec_x"),
        (body + " ", signature_header(secrets_=["whsec_x"], timestamp=now, body=raw), "whsec_x"),
        (body, f"t={now},v1=00", "whsec_x"),
        (body, None, "whsec_x"),
        (body, "garbage", "whsec_x"),
        (body, f"t={now},t={now},v1=ab", "whsec_x"),
    ]
    harness = tmp_path / "verify.js"
    harness.write_text(
        snippet
        + "\nconst cases = JSON.parse(require('node:fs').readFileSync(0, 'utf8'));\n"
        + "console.log(JSON.stringify(cases.map(([b, h, s]) => verify(Buffer.from(b, 'utf8'), h, s))));\n"
    )
    ran = subprocess.run(
        ["node", str(harness)], input=json.dumps(cases), capture_output=True, text=True, timeout=30, check=False
    )
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == [True, True, False, False, False, False, False, False]


def test_no_caller_chooses_the_document_others_read(db):
    # The document is built once per process: `?version=` of the first caller went into it (info.version
    # "1.0.0 (anything)") for every partner until the next start.
    from config.urls import PublicSchemaView

    PublicSchemaView._document = None
    Client().get("/v1/openapi.json?version=chosen-by-anyone")
    served = Client().get("/v1/openapi.json")
    PublicSchemaView._document = None
    fresh = Client().get("/v1/openapi.json")
    assert served.json()["info"]["version"] == fresh.json()["info"]["version"]
    assert "chosen-by-anyone" not in served["Content-Disposition"]


def test_a_replayed_refusal_is_documented_with_its_header_too(schema):
    # A 404 or 409 is stored and replayed like a 201; a 429, or a refusal of the request's own input (400,
    # 413, 422), never is (config/api/idempotency: not a 5xx, a 429 or REFUSED_INPUT), nor a 401 or 405, which
    # are answered before the key is claimed.
    operation = schema["paths"]["/v1/content/{containerId}/schedule"]["post"]
    for status in ("201", "404", "409"):
        assert "Idempotent-Replayed" in operation["responses"][status].get("headers", {}), status
    for status in ("400", "401", "413", "422", "429"):
        assert "Idempotent-Replayed" not in operation["responses"][status].get("headers", {}), status


def test_the_description_says_a_refused_input_does_not_hold_the_idempotency_key(schema):
    description = " ".join(schema["info"]["description"].split())
    assert "400, 413 and 422 are not stored either" in description
    parameter = next(
        p
        for p in schema["paths"]["/v1/projects/{projectId}/content"]["post"]["parameters"]
        if p["name"] == "Idempotency-Key"
    )
    assert "400, 413 or 422" in parameter["description"]


def test_a_key_given_twice_in_a_body_is_documented_as_a_400(schema):
    description = " ".join(schema["info"]["description"].split())
    assert "a key given more than once in one object" in description
    content = schema["paths"]["/v1/projects/{projectId}/content"]["post"]
    assert "a key given more than once in one object" in content["responses"]["400"]["description"]


def test_every_401_is_documented_with_its_www_authenticate_header(schema):
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if "401" in operation["responses"]:
                headers = operation["responses"]["401"].get("headers", {})
                assert "WWW-Authenticate" in headers, f"{method.upper()} {path}"
    assert 'WWW-Authenticate: Bearer realm="layers"' in schema["info"]["description"]


def test_every_answer_to_a_known_key_documents_the_rate_limit_headers(schema):
    """A generated client sees RateLimit-* on each answer a counted request gets (all but the 401)."""
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                headers = response.get("headers", {})
                expected = {"RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"} if status != "401" else set()
                assert expected == expected & headers.keys(), f"{method.upper()} {path} {status}"
                if status == "401":
                    assert "RateLimit-Remaining" not in headers
    assert "`RateLimit-Remaining`" in schema["info"]["description"]


def test_the_docs_say_when_a_canceled_post_carries_an_error_and_with_which_codes(schema):
    # A partner whose post vanished from its calendar read `canceled` with `error: null` and could not tell why.
    # The schema's `error` and the README say which cancels carry one, with the very messages the API writes.
    from pathlib import Path

    from scheduling.serializers import CANCELED_ERRORS

    readme = " ".join((Path(django_settings.BASE_DIR) / "README.md").read_text().split())
    error = schema["components"]["schemas"]["ScheduledPostOutput"]["properties"]["error"]
    described = " ".join(error.get("description", "").split())
    assert "canceled" in described and "null when the partner canceled it" in described
    for where, text in (("schema", described), ("README", readme)):
        for shown in CANCELED_ERRORS.values():
            assert shown["code"] in text, (where, shown)
    for shown in CANCELED_ERRORS.values():
        assert shown["message"].split("because ", 1)[-1] in readme, shown
