"""OpenAPI helpers: the error envelope, paginated list wrappers and the standard error responses, so
every operation documents the same codes the handler produces."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers


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
    400: _err("MALFORMED_REQUEST: the body is not a JSON object."),
    401: _err("UNAUTHENTICATED: missing, unknown or revoked API key."),
    404: _err("NOT_FOUND: unknown, malformed, wrong-type or another organization's id."),
    405: _err("METHOD_NOT_ALLOWED."),
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
    OpenApiParameter("limit", int, description="Page size, 1–200 (default 50)."),
    OpenApiParameter("cursor", str, description="nextCursor of the previous page."),
]
IDEMPOTENCY_PARAMETER = OpenApiParameter(
    "Idempotency-Key",
    str,
    location=OpenApiParameter.HEADER,
    description=("Replays the first response for 24 h; another body with the same key → 409 IDEMPOTENCY_KEY_REUSED."),
)


def list_schema(serializer_class, name: str, *, parameters=(), **kwargs):
    return extend_schema(
        responses={200: page_of(serializer_class, name), **errors(422)},
        parameters=[*PAGINATION_PARAMETERS, *parameters],
        **kwargs,
    )


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "config.api.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "Layers API key (lyr_…)"}
