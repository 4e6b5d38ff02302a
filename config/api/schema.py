"""OpenAPI helpers: the error envelope, paginated list wrappers and the standard error responses, so
every operation documents the same codes the handler produces."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerExtension
from drf_spectacular.plumbing import get_doc
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers

from config.api.fields import StrictSerializer
from config.api.idempotency import REFUSED_INPUT


class ErrorBodySerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable machine-readable code (see the API description).")
    message = serializers.CharField()
    details = serializers.DictField(
        help_text='For VALIDATION: {"fields": {"<field>": ["message", ...]}}; nested fields use dots.'
    )


class ErrorSerializer(serializers.Serializer):
    error = ErrorBodySerializer()


def _err(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


ERRORS = {
    400: _err(
        "MALFORMED_REQUEST: the body is missing, not UTF-8 (it is read as UTF-8 whatever charset Content-Type "
        "names) or not a JSON object, or has a key given more than once in one object (at any depth; the message "
        "names it)."
    ),
    401: _err("UNAUTHENTICATED: missing, unknown or revoked API key."),
    404: _err("NOT_FOUND: unknown, malformed, wrong-type or another organization's id."),
    405: _err("METHOD_NOT_ALLOWED."),
    413: _err("PAYLOAD_TOO_LARGE: the body is larger than the request size cap (1 MiB by default)."),
    422: _err("VALIDATION: a field is invalid; details.fields names it."),
    429: _err("RATE_LIMITED: see the Retry-After header."),
    500: _err("INTERNAL."),
}


def errors(*codes: int, **extra) -> dict:
    """Standard error responses for an operation: 401, 404, 429, 500 always, plus `codes`;
    `extra` maps a status (as `r409`) to a description of the operation-specific codes."""
    out = {code: ERRORS[code] for code in (401, 404, 429, 500, *codes)}
    for key, description in extra.items():
        out[int(key.lstrip("r"))] = _err(description)
    return out


def page_of(serializer_class, name: str):
    return inline_serializer(
        name=name,
        fields={
            "data": serializer_class(many=True),
            "nextCursor": serializers.CharField(allow_null=True, help_text="null on the last page"),
        },
    )


PAGINATION_PARAMETERS = [
    OpenApiParameter(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
        description="Page size, 1–200 (default 50); anything else is 422.",
    ),
    OpenApiParameter("cursor", str, description="nextCursor of the previous page."),
]
IDEMPOTENCY_PARAMETER = OpenApiParameter(
    "Idempotency-Key",
    # 1–255 printable ASCII but the comma: config/api/idempotency.KEY_PATTERN, and why.
    {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -+\\--~]+$"},
    location=OpenApiParameter.HEADER,
    description=(
        "Replays the first response for 24 h to the same API key sending the same method, path and body; the "
        "same key with another request, or from another API key of the organization → 409 IDEMPOTENCY_KEY_REUSED. "
        "1–255 printable ASCII characters other than a comma, in one header: several Idempotency-Key headers reach "
        "the server joined by commas, so a key with a comma, or several headers, is 422 VALIDATION (nothing done). "
        "An answer 400, 413 or 422 (the request refused for what it sent; nothing done) is not stored: send the "
        "corrected request with the same key."
    ),
)


def list_schema(serializer_class, name: str, *, parameters=(), **kwargs):
    """The schema of a list operation, and its query contract: ApiView refuses (422) any query parameter
    not declared here, so a misspelt filter never silently returns the unfiltered list."""
    schema = extend_schema(
        responses={200: page_of(serializer_class, name), **errors(422)},
        parameters=[*PAGINATION_PARAMETERS, *parameters],
        **kwargs,
    )
    declared = [*PAGINATION_PARAMETERS, *parameters]
    allowed = frozenset(p.name for p in declared if p.location == OpenApiParameter.QUERY)

    def decorate(method):
        method.query_parameters = allowed
        return schema(method)

    return decorate


class StrictSerializerScheme(OpenApiSerializerExtension):
    """Bodies read by a StrictSerializer refuse unknown fields (422): say so in their schema."""

    target_class = "config.api.fields.StrictSerializer"
    match_subclasses = True

    def map_serializer(self, auto_schema, direction):
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        if schema.get("description") == get_doc(StrictSerializer):  # our internals, not the partner's docs
            schema.pop("description")
        serializer = self.target if isinstance(self.target, serializers.BaseSerializer) else self.target()
        for name, field in serializer.fields.items():
            # Nested lists of objects (`targets`): spectacular documents their bounds for plain lists only.
            if isinstance(field, serializers.ListSerializer) and name in schema.get("properties", {}):
                if not field.allow_empty:
                    schema["properties"][name]["minItems"] = max(1, field.min_length or 1)
                if field.max_length is not None:
                    schema["properties"][name]["maxItems"] = field.max_length
        schema = {**schema, "additionalProperties": False}
        if getattr(serializer, "min_fields", 0):  # a PATCH: at least one field, none required
            schema["minProperties"] = serializer.min_fields
        return schema


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "config.api.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "Layers API key (lyr_…)"}


# --- Responses the plumbing adds to operations (config/api/views.py), whatever the view does --------------

BODY_METHODS = ("post", "put", "patch")
RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before the key's budget allows another request.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}
WWW_AUTHENTICATE = {
    "WWW-Authenticate": {
        "description": 'The authentication to use: `Bearer realm="layers"` (an API key as a Bearer token).',
        "required": True,
        "schema": {"type": "string"},
    }
}
RATE_LIMIT = {
    "RateLimit-Limit": {
        "description": "The API key's request budget per window (LAYERS_API_RATE). On every answer to a request "
        "made with a valid key.",
        "required": False,
        "schema": {"type": "integer", "minimum": 1},
    },
    "RateLimit-Remaining": {
        "description": "Requests the key has left in the current window, this one counted; 0 when refused.",
        "required": False,
        "schema": {"type": "integer", "minimum": 0},
    },
    "RateLimit-Reset": {
        "description": "Seconds until the window ends and the budget is whole again.",
        "required": False,
        "schema": {"type": "integer", "minimum": 1},
    },
}
IDEMPOTENT_REPLAYED = {
    "Idempotent-Replayed": {
        "description": "`true` when this is the stored response of an earlier request with the same "
        "Idempotency-Key (nothing was done again); absent otherwise.",
        "required": False,
        "schema": {"type": "string", "enum": ["true"]},
    }
}
IDEMPOTENCY_REUSED = (
    "IDEMPOTENCY_KEY_REUSED: within 24 h this Idempotency-Key was used with another request (another method, "
    "path or body) or from another API key of the organization, or its first request is still running."
)


def _error_response(status: int, description: str | None = None) -> dict:
    return {
        "description": description or ERRORS[status].description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def postprocess_plumbing_responses(result, generator, request, public):
    """drf-spectacular postprocessing hook: document on every operation the statuses that ApiView itself
    answers, so no view can forget them — 429 RATE_LIMITED (with Retry-After) everywhere, the RateLimit-*
    headers on every answer after the key is known, WWW-Authenticate on the 401; on POST, PUT and
    PATCH 413 PAYLOAD_TOO_LARGE, and 400 MALFORMED_REQUEST where the operation has a request body; on
    operations taking an Idempotency-Key 422 (malformed key) and 409 IDEMPOTENCY_KEY_REUSED, next to the
    operation's own 409 codes, and the Idempotent-Replayed header on the responses a replay may repeat."""
    for operations in result.get("paths", {}).values():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            responses.setdefault("429", _error_response(429)).setdefault("headers", {}).update(RETRY_AFTER)
            if "401" in responses:  # every operation that takes a key (config/api/errors.py sets it)
                responses["401"].setdefault("headers", {}).update(WWW_AUTHENTICATE)
            if method in BODY_METHODS:
                # A body too large is refused before any view runs, but only an operation that reads its
                # body can find it missing or not JSON (every one does: rotate-secret's is optional).
                if "requestBody" in operation:
                    responses.setdefault("400", _error_response(400))
                responses.setdefault("413", _error_response(413))
            params = operation.get("parameters", [])
            if any(p.get("in") == "header" and p.get("name") == "Idempotency-Key" for p in params):
                responses.setdefault("422", _error_response(422))
                conflict = responses.get("409")
                if conflict is None:
                    responses["409"] = _error_response(409, IDEMPOTENCY_REUSED)
                elif "IDEMPOTENCY_KEY_REUSED" not in conflict.get("description", ""):
                    conflict["description"] = f"{conflict['description']}; {IDEMPOTENCY_REUSED}"
                # A replay answers the first response's status (config/api/views.py): any status the first
                # request may have had and that is stored (config/api/idempotency: not a 5xx, not a 429, not a
                # refusal of the request's own input, REFUSED_INPUT). A 401 or 405 is answered before the key
                # is claimed (config/api/views.py ApiView.initial): nothing is stored to replay.
                for status, response in responses.items():
                    never_stored = status.startswith("5") or status in ("401", "405", "429")
                    if not never_stored and int(status) not in REFUSED_INPUT:
                        response.setdefault("headers", {}).update(IDEMPOTENT_REPLAYED)
            for status, response in responses.items():
                # A request is counted once its key is known (config/api/throttling.py): every answer but
                # the 401 says where the key stands.
                if status != "401":
                    response.setdefault("headers", {}).update(RATE_LIMIT)
            operation["responses"] = dict(sorted(responses.items()))
    return result


def postprocess_nullable_objects(result, generator, request, public):
    """drf-spectacular postprocessing hook: a nullable nested object (a post's `error`) is written as
    `{allOf: [$ref], nullable: true}`, but OpenAPI 3.0.3 gives `nullable` effect only next to a `type`, and
    the referenced object's own `type: object` still refuses null: strict validators and generated clients
    then reject `"error": null`, the most common answer. Such a property gets the object's schema inline,
    with its `type` and `nullable` side by side (its `properties` and `required` do not apply to null)."""
    components = result.get("components", {}).get("schemas", {})

    def inline(node):
        if isinstance(node, list):
            return [inline(item) for item in node]
        if not isinstance(node, dict):
            return node
        node = {key: inline(value) for key, value in node.items()}
        refs = node.get("allOf")
        if node.get("nullable") and "type" not in node and isinstance(refs, list) and len(refs) == 1:
            name = refs[0].get("$ref", "").rpartition("/")[2]
            target = components.get(name, {})
            if target.get("type") == "object":
                node.pop("allOf")
                node = {**target, **node}  # the property's own description and flags win
        return node

    result["components"]["schemas"] = {name: inline(schema) for name, schema in components.items()}
    return result
