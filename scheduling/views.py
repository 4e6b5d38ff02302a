"""GET /ops/status: "Layers now" (scheduling/pipeline_status.py) as JSON, for an uptime checker or an alerting
system. Outside /v1 and without a partner key: ops authenticate with the bearer token LAYERS_OPS_STATUS_TOKEN."""

import hashlib
import hmac
import logging

from django.conf import settings
from django.http import Http404, JsonResponse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.views.decorators.csrf import csrf_exempt

from config.api.errors import envelope
from scheduling import pipeline_status

log = logging.getLogger(__name__)

METHODS = ("GET", "HEAD")


# No cookie authenticates here, and nothing is changed: without the exemption the CSRF check answered a POST
# 403 before the view, even with no token set, telling the path apart from an unknown one (a 404).
@csrf_exempt
def ops_status(request):
    """200 when every line of "Layers now" is ok, 503 when any is behind or stopped (the body says which), so
    that a checker that looks only at the status alerts.

    With no token configured the path does not exist: the same 404 as any unknown path, so nothing of it shows
    by default. With one, a request without it, or with another, is a 401. Every answer is marked never to be
    cached (a proxy's or a checker's cache would otherwise serve a stale "ok")."""
    token = settings.LAYERS_OPS_STATUS_TOKEN
    if not token:
        raise Http404()
    if request.method not in METHODS:
        response = JsonResponse(envelope(405, "METHOD_NOT_ALLOWED", "Use GET."), status=405)
        response["Allow"] = ", ".join(METHODS)
    elif not _bearer_matches(request, token):
        response = JsonResponse(
            envelope(401, "UNAUTHENTICATED", "Send the ops status token: Authorization: Bearer <token>."), status=401
        )
        response["WWW-Authenticate"] = "Bearer"
    else:
        now = timezone.now()
        lines = pipeline_status.layers_now(now=now)
        body = pipeline_status.as_json(lines, now=now)
        response = JsonResponse(body, status=200 if body["status"] == pipeline_status.OK else 503)
        if response.status_code == 503:
            # A checker asks every minute or so: one warning naming what is late, not Django's ERROR
            # "Service Unavailable: /ops/status", which says nothing of it (as /readyz does).
            late = "; ".join(
                f"{name} {check['summary']}" for name, check in body["checks"].items() if check["verdict"] != "ok"
            )
            log.warning("Layers is %s (503 from /ops/status): %s", body["status"], late)
            response._has_been_logged = True
    add_never_cache_headers(response)
    return response


def _bearer_matches(request, token: str) -> bool:
    """Whether the request's `Authorization: Bearer …` carries `token`. Compared as SHA-256 digests in constant
    time: neither the token's characters nor its length show in how long a wrong guess takes."""
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented:
        return False
    expected = hashlib.sha256(token.encode()).digest()
    return hmac.compare_digest(hashlib.sha256(presented.strip().encode()).digest(), expected)
