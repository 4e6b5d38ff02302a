"""The real URLconf, with its error handlers, plus two views that raise Django's PermissionDenied outside DRF: one
on a JSON path (where the platforms' webhooks live) and one on a page path. No route raises one there today; a
decorator or middleware that did must not answer a platform or a partner with an HTML page."""

from django.core.exceptions import PermissionDenied
from django.urls import path

from config.urls import handler400, handler403, handler404, handler500  # noqa: F401 - the resolver reads them
from config.urls import urlpatterns as real_urlpatterns


def forbidden(request):
    raise PermissionDenied("internal reason: rule 42 of the probe")


urlpatterns = [
    path("platform-webhooks/forbidden-probe", forbidden),
    path("oauth/forbidden-probe", forbidden),
    *real_urlpatterns,
]
