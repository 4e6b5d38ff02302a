"""The base class of every partner API view: authentication, throttling, the error envelope and
Idempotency-Key handling happen here, so operation views stay thin."""

from django.conf import settings
from rest_framework import exceptions as drf
from rest_framework.exceptions import ParseError
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api import idempotency
from config.api.errors import ApiError, NotFound, PayloadTooLarge, Validation
from config.api.throttling import rate_limit_headers

BODY_METHODS = ("POST", "PUT", "PATCH")


def body_length(request) -> int:
    """The declared Content-Length: the WSGI input is bounded by it, so it is the body Django and DRF read."""
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0  # unreadable: Django and DRF then read no body at all


def check_body(request, *, required: bool) -> None:
    """Refuse a body over DATA_UPLOAD_MAX_MEMORY_SIZE (LAYERS_MAX_BODY_BYTES) before anything reads it.
    Django enforces that cap only on `request.body` and forms; DRF's parsers read the request as a stream,
    past it. Refuse a missing body where the operation takes one: DRF never calls the parser on an empty
    body and reads it as `{}`, so it was a 422 "field required" where any other non-JSON body is a 400."""
    cap = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    length = body_length(request)
    if cap is not None and length > cap:
        raise PayloadTooLarge(f"The request body is larger than {cap} bytes.")
    if required and length == 0:
        raise ParseError("The request body is empty: send a JSON object.")


def check_query_parameters(request, handler) -> None:
    """Every operation refuses a query parameter it does not declare (lists declare theirs through
    config.api.schema.list_schema; no other operation reads any), as bodies refuse unknown fields:
    `?staus=queued` must not list every post, and `POST …/content?dryRun=true` must not create a container
    the partner believed was a trial. Each takes one value: a parameter given twice is refused too, even
    with the same value twice. Django's QueryDict reads the last copy, so `?limit=1&limit=2` served pages
    of 2 and a client appending a parameter twice never learnt it. Every problem is named in one answer."""
    allowed = getattr(handler, "query_parameters", frozenset())
    if not request.query_params:
        return
    problems = {}
    for name, values in sorted(request.query_params.lists()):
        if name not in allowed:
            problems[name] = ["Unknown query parameter."]
        elif len(values) > 1:
            problems[name] = ["Given more than once: send it once."]
    if problems:
        raise Validation(problems)


class ApiView(APIView):
    _idempotency_row = None
    # The key's budget after this request was counted (config/api/throttling.py); None before the count
    # (a refused key, a route with no throttle).
    rate_budget = None
    # Operations whose POST takes no body (rotate a secret) set this to False.
    post_takes_body = True
    # No OPTIONS: DRF answered it 200 with its metadata, the view's Python class name ("Endpoint List Api")
    # outside the envelope and the OpenAPI. Layers sends no CORS headers (no browser calls the API, so no
    # preflight), and each path's methods are in the OpenAPI: OPTIONS is a 405 like any other method the
    # route lacks, and `Allow` no longer lists it. No TRACE either.
    http_method_names = ["get", "post", "put", "patch", "delete", "head"]

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        # A method the route does not have is 405 whatever the body: looked at before the body checks (an
        # empty body was a 400, an oversized one a 413) and before an Idempotency-Key is claimed for it.
        method = request.method.lower()
        handler = getattr(self, method, None) if method in self.http_method_names else None
        if handler is None:
            raise drf.MethodNotAllowed(request.method)
        if request.method in BODY_METHODS:
            # A PATCH is its body: without one it changes nothing, and is refused as a POST's missing body is.
            required = self.post_takes_body if request.method == "POST" else True
            check_body(request, required=required)
        check_query_parameters(request, handler)
        key = request.headers.get("Idempotency-Key")
        if request.method == "POST" and key is not None:
            self._idempotency_row = idempotency.begin(organization=request.user.organization, key=key, request=request)

    def handle_exception(self, exc):
        if isinstance(exc, idempotency.Replay):
            return Response(exc.body, status=exc.status, headers={"Idempotent-Replayed": "true"})
        if _input_error(exc) and self.kwargs.get("projectId"):
            # Under another organization's (or no) project, bad input is 404 as good input is: the project
            # is read here, on the error path only, so that answers with rows still cost no extra query.
            try:
                self.check_project(self.kwargs["projectId"])
            except NotFound as missing:
                exc = missing
        return super().handle_exception(exc)

    def check_project(self, project_id: str) -> None:
        """NotFound unless `project_id` is a project of the caller's organization."""
        from accounts.selectors import project_get

        project_get(organization=self.organization, project_id=project_id)

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        # Answers carry partners' data and, some, secrets (a webhook signing secret): no cache keeps them.
        response.headers.setdefault("Cache-Control", "no-store")
        if self._idempotency_row is not None:
            idempotency.finish(self._idempotency_row, response)
            self._idempotency_row = None
        if self.rate_budget is not None:
            for name, value in rate_limit_headers(self.rate_budget).items():
                response[name] = value
        return response

    @property
    def organization(self):
        return self.request.user.organization


def _input_error(exc) -> bool:
    """An answer about the request's own input (query, body, headers), as opposed to who asks or what exists."""
    if isinstance(exc, ApiError):
        return exc.status in (400, 403, 413, 422)
    return isinstance(exc, drf.ValidationError | drf.ParseError | drf.UnsupportedMediaType)


class NoRouteApi(ApiView):
    """Every /v1 path that no route matches: an unknown resource, or an id that is not of its route's type
    (the id converters of config/api/ids.py refuse it). It is 404 NOT_FOUND for any method, but only after
    the key is checked and counted, as for a well-formed id nobody has: without a key it is the 401 with
    WWW-Authenticate, and with one the 404 carries RateLimit-* and Cache-Control like every other answer.
    Answered outside DRF it was a 404 before authentication, without those headers."""

    @property
    def default_response_headers(self):
        # No `Allow`: there is no resource here to have methods (DRF would send an empty one).
        return {key: value for key, value in super().default_response_headers.items() if key != "Allow"}

    def initial(self, request, *args, **kwargs):
        # Authentication, permission and throttling (DRF's own initial), then nothing of an operation's
        # checks (ApiView.initial): there is no operation, so no 405, no body or query to refuse and no
        # Idempotency-Key to claim.
        APIView.initial(self, request, *args, **kwargs)
        raise NotFound()
