"""One exception type for every API error, and one handler that renders API.md's envelope for all of
them, whatever raised them (our services, DRF validation, routing, throttling, a bug)."""

import logging

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation, TooManyFieldsSent
from django.http import Http404, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions as drf
from rest_framework.response import Response

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A public error: `code` is part of the contract and is never renamed."""

    status = 400
    code = "BAD_REQUEST"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None, details=None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status
        self.details = details or {}


class NotFound(ApiError):
    status, code = 404, "NOT_FOUND"

    def __init__(self, message: str = "Not found."):
        super().__init__(message)


class Conflict(ApiError):
    status = 409


class Validation(ApiError):
    """422 with per-field messages: `Validation({"returnUrl": ["..."]})`."""

    status, code = 422, "VALIDATION"

    def __init__(self, fields: dict, message: str = "Invalid request."):
        super().__init__(message, details={"fields": fields})


class RateLimited(ApiError):
    """429 with `Retry-After` (seconds): what a service refuses for now, as the per-key budget does."""

    status, code = 429, "RATE_LIMITED"

    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class ReturnUrlNotAllowed(ApiError):
    status, code = 403, "RETURN_URL_NOT_ALLOWED"


class PayloadTooLarge(ApiError):
    status, code = 413, "PAYLOAD_TOO_LARGE"


def envelope(status: int, code: str, message: str, details: dict | None = None) -> dict:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def _flatten(detail, prefix: str = "") -> dict[str, list[str]]:
    """DRF nests errors (`targets` → index → field); partners get one flat map `targets.1.mode`."""
    out: dict[str, list[str]] = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = "" if key == "non_field_errors" else str(key)
            out.update(_flatten(value, f"{prefix}.{name}" if prefix and name else (prefix or name)))
    elif isinstance(detail, list) and detail and all(not isinstance(i, dict | list) for i in detail):
        out.setdefault(prefix or "body", []).extend(str(i) for i in detail)
    elif isinstance(detail, list):
        for index, value in enumerate(detail):
            if value:
                out.update(_flatten(value, f"{prefix}.{index}" if prefix else str(index)))
    else:
        out.setdefault(prefix or "body", []).append(str(detail))
    return out


_DRF_CODES = [
    (drf.ParseError, 400, "MALFORMED_REQUEST"),
    (drf.UnsupportedMediaType, 400, "MALFORMED_REQUEST"),
    (drf.NotAuthenticated, 401, "UNAUTHENTICATED"),
    (drf.AuthenticationFailed, 401, "UNAUTHENTICATED"),
    (drf.PermissionDenied, 404, "NOT_FOUND"),  # never reveal that a foreign object exists
    (drf.NotFound, 404, "NOT_FOUND"),
    (drf.MethodNotAllowed, 405, "METHOD_NOT_ALLOWED"),
    (drf.NotAcceptable, 406, "NOT_ACCEPTABLE"),
    (drf.Throttled, 429, "RATE_LIMITED"),
]


# Refusals that config/api (authentication, throttling, the no-key branch below) log themselves.
_LOGGED_WHERE_REFUSED = (drf.NotAuthenticated, drf.AuthenticationFailed, drf.Throttled)


def exception_handler(exc, context):
    """DRF's EXCEPTION_HANDLER: every error leaves the API in the same envelope."""
    if isinstance(exc, ApiError):
        headers = {}
        if exc.status == 401:  # a key revoked during the call (webhook endpoint_create): as any 401, below
            from config.api.authentication import CHALLENGE

            headers["WWW-Authenticate"] = CHALLENGE
        if isinstance(exc, RateLimited):
            headers["Retry-After"] = str(max(exc.retry_after, 1))
        return Response(envelope(exc.status, exc.code, exc.message, exc.details), status=exc.status, headers=headers)
    if isinstance(exc, Http404):
        return Response(envelope(404, "NOT_FOUND", "Not found."), status=404)
    if isinstance(exc, DjangoPermissionDenied):
        return Response(envelope(404, "NOT_FOUND", "Not found."), status=404)
    if isinstance(exc, RequestDataTooBig):  # a body read through request.body past the cap
        return Response(envelope(413, "PAYLOAD_TOO_LARGE", "The request body is too large."), status=413)
    if isinstance(exc, SuspiciousOperation):
        # What Django refuses to read, raised wherever the request is first read: more than 1,000 query
        # parameters (DRF reads `?format=` on every call) was a 500 for anyone, /v1/openapi.json included.
        # Django answers these 400 outside DRF; the same here, in the envelope.
        # Logged where Django logs what it refuses this way outside DRF (django.security.<kind>), one line
        # without a traceback: a SuspiciousOperation raised by a bug of ours still says where it came from.
        logging.getLogger(f"django.security.{type(exc).__name__}").warning("%s: %s", type(exc).__name__, exc)
        message = "The request is malformed."
        if isinstance(exc, TooManyFieldsSent):
            message = f"The request has more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} parameters."
        return Response(envelope(400, "MALFORMED_REQUEST", message), status=400)
    if isinstance(exc, drf.ValidationError):
        fields = _flatten(exc.detail)
        return Response(envelope(422, "VALIDATION", "Invalid request.", {"fields": fields}), status=422)
    if isinstance(exc, drf.NotAuthenticated):
        # A wrong key and a throttled key are logged where they are refused (config/api/authentication.py,
        # throttling.py); a call with no key at all is refused here, by the view's permission check.
        request = context.get("request")
        if request is not None:
            from config.logfilters import logged_path
            from config.ratelimit import client_ip

            method, path = request.method, logged_path(request)
            log.warning("API call refused (401): %s %s from %s with no API key", method, path, client_ip(request))
    for cls, status, code in _DRF_CODES:
        if isinstance(exc, cls):
            headers = {}
            message = str(exc.detail) if hasattr(exc, "detail") else str(exc)
            if isinstance(exc, drf.NotAuthenticated):
                # DRF's "Authentication credentials were not provided." did not say how; a wrong scheme is told.
                from config.api.authentication import NO_KEY

                message = NO_KEY
            if isinstance(exc, drf.UnsupportedMediaType):
                message = _media_type_message(context.get("request"))
            if isinstance(exc, drf.Throttled):
                wait = int(exc.wait or 1) if exc.wait is not None else 1
                headers["Retry-After"] = str(max(wait, 1))
                message = f"Rate limit exceeded; retry in {headers['Retry-After']} s."
            if status == 401:
                # RFC 9110 11.6.1: a 401 says how to authenticate. DRF's own handler copies the challenge that
                # APIView.handle_exception puts on the exception (the authenticator's authenticate_header);
                # this one used to drop it, so every 401 went without.
                from config.api.authentication import CHALLENGE

                headers["WWW-Authenticate"] = getattr(exc, "auth_header", None) or CHALLENGE
            if status == 404:
                message = "Not found."
            response = Response(envelope(status, code, message), status=status, headers=headers)
            if isinstance(exc, _LOGGED_WHERE_REFUSED):
                # Logged already, naming the key; Django's own "Unauthorized: /v1/…" line (django.request)
                # would say it again without the key — support counted every refusal twice. Django skips
                # responses marked so (django.utils.log.log_response).
                response._has_been_logged = True
            return response
    if isinstance(exc, drf.APIException):
        return Response(envelope(exc.status_code, "ERROR", str(exc.detail)), status=exc.status_code)
    # A bug: log it with the stack for us, answer the partner with nothing internal.
    log.exception("unhandled API error", exc_info=exc)
    return Response(envelope(500, "INTERNAL", "Internal error."), status=500)


def _media_type_message(request) -> str:
    """What to send instead of a body of another media type (DRF's "Unsupported media type "text/plain" in
    request." did not say), naming the Content-Type this request gave, cut as a field's value is quoted."""
    sent = (request.content_type or "") if request is not None else ""
    named = "none" if not sent.strip() else f"'{sent[:100]}{'…' if len(sent) > 100 else ''}'"
    return f"Send the body as JSON with 'Content-Type: application/json' (this request's Content-Type: {named})."


JSON_PATHS = ("/v1", "/platform-webhooks/")


def wants_json(request) -> bool:
    """The API and the platforms' webhook receivers answer JSON; browsers elsewhere get Django's pages."""
    return request.path.startswith(JSON_PATHS) or "application/json" in request.headers.get("Accept", "")


@csrf_exempt  # an API client's POST or DELETE carries no CSRF token: it must get the 404, not a CSRF 403 page
def api_not_found(request, *args, **kwargs):
    """The 404 envelope of a JSON path Django found no view for (/platform-webhooks/…, or /v1foo, outside the
    API's `v1/` prefix). Unmatched paths under /v1/ never get here: config.api.views.NoRouteApi answers them
    after the key check."""
    return JsonResponse(envelope(404, "NOT_FOUND", "Not found."), status=404)


def handler404(request, exception=None):
    """Unknown routes: JSON envelope for API clients, Django's page for browsers elsewhere."""
    if wants_json(request):
        return api_not_found(request)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def handler500(request):
    if wants_json(request):
        return JsonResponse(envelope(500, "INTERNAL", "Internal error."), status=500)
    from django.views.defaults import server_error

    return server_error(request)


def handler403(request, exception=None):
    """A PermissionDenied outside DRF: on a JSON path the envelope, 404 as inside the API (exception_handler:
    never reveal that something exists); elsewhere templates/403.html, which never shows the exception. By path
    only, not by Accept: the admin's autocomplete asks for JSON, and staff refused there are refused (403), not
    told that nothing exists."""
    if request.path.startswith(JSON_PATHS):
        return api_not_found(request)
    from django.views.defaults import permission_denied

    return permission_denied(request, exception)


def handler400(request, exception=None):
    if wants_json(request):
        return JsonResponse(envelope(400, "MALFORMED_REQUEST", "Bad request."), status=400)
    from django.views.defaults import bad_request

    return bad_request(request, exception)
