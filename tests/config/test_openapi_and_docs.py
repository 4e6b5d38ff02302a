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
