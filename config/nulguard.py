"""NUL bytes in a request's URL and body are refused up front on the surfaces whose views hand what they
read to the database: the admin (object ids, filter values, the ids of an action's selection, form fields)
and the platform sandbox (codes, ids, handles).
PostgreSQL refuses a NUL in text with a DataError, which there became a 500 page. No id, code or filter
value of ours contains one. The partner API validates its own input and answers in its error envelope.

The admin gets the readable 400 page (templates/400.html, through handler400; it was a line of plain text,
the one admin answer without a page); the sandbox a 400 in TikTok's v2 error envelope
(`invalid_params`), as a platform answers a malformed parameter."""

from urllib.parse import unquote_to_bytes

from django.core.exceptions import BadRequest
from django.http import JsonResponse

NUL = "\x00"


def _in_url(request) -> bool:
    return NUL in request.path or any(NUL in value for _, values in request.GET.lists() for value in values)


def _in_url_or_form(request) -> bool:
    """An admin action's selection (`_selected_action`) goes to the database unchecked: a NUL there was a
    500 on every changelist with actions. Form fields would refuse one themselves; a 400 for any posted
    value is simpler and no honest form sends one. Uploaded files (pool account CSVs) are not looked at."""
    if _in_url(request):
        return True
    if request.method != "POST":
        return False
    return any(NUL in value for _, values in request.POST.lists() for value in values)


def _in_url_or_body(request) -> bool:
    """The sandbox's bodies are small forms and JSON documents (never uploads), so they are read here too."""
    if _in_url(request):
        return True
    if request.content_type == "application/x-www-form-urlencoded":
        return b"\x00" in unquote_to_bytes(request.body)
    return b"\x00" in request.body or b"\\u0000" in request.body  # raw, or escaped in a JSON body


class RefuseNulBytesMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path.startswith("/admin/") and _in_url_or_form(request):
            raise BadRequest("A NUL byte in the request.")  # Django answers it with handler400, logged as a 400
        if request.path.startswith("/sandbox/") and _in_url_or_body(request):
            body = {"error": {"code": "invalid_params", "message": "A parameter contains a NUL byte.", "log_id": ""}}
            return JsonResponse(body, status=400)
        return self.get_response(request)
