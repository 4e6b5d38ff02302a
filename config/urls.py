import errno

from allauth.account.decorators import secure_admin_login
from django.conf import settings
from django.contrib import admin
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import Http404
from django.urls import include, path, re_path, register_converter
from django.views.static import serve
from drf_spectacular.views import SpectacularJSONAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.response import Response

from accounts import views as ops_views
from config.api.ids import KINDS, converter
from config.api.views import NoRouteApi
from scheduling import views as scheduling_views

for _prefix in KINDS:
    register_converter(converter(_prefix), _prefix)

# Staff sign in through allauth (MFA, rate limits); the admin's own login form is never served.
admin.site.login = secure_admin_login(admin.site.login)
admin.site.site_header = "Layers back-office"
admin.site.site_title = "Layers back-office"

handler400 = "config.api.errors.handler400"
handler403 = "config.api.errors.handler403"
handler404 = "config.api.errors.handler404"
handler500 = "config.api.errors.handler500"


# The document and its pages are read, nothing else: DRF would answer OPTIONS with its metadata, which the
# HTML renderer of /docs/ has no template for (a 500 for anyone).
DOCS_METHODS = ["get", "head"]


class PublicSchemaView(SpectacularJSONAPIView):
    """/v1/openapi.json, for anyone and unthrottled (partners' tooling fetches it). Generating the document
    costs ~40 ms of CPU and it is the same for every caller, so a process builds it once: anonymous callers
    could otherwise keep a web process busy for free. A change of settings (tests) builds it again."""

    authentication_classes = []
    permission_classes = []
    throttle_classes = []
    http_method_names = DOCS_METHODS
    _document = None

    def _get_version_parameter(self, request):
        # drf-spectacular would put `?version=` into the document's version and file name: the first caller
        # after a start would then choose what every partner reads until the next.
        return None

    def _get_schema_response(self, request):
        cls = type(self)
        if cls._document is None:
            cls._document = super()._get_schema_response(request)
        first = cls._document
        return Response(data=first.data, headers={"Content-Disposition": first["Content-Disposition"]})


@receiver(setting_changed)
def _schema_settings_changed(**kwargs):
    PublicSchemaView._document = None


api_v1 = [
    path("", include("accounts.urls")),
    path("", include("accounts.webhooks.urls")),
    path("", include("scheduling.urls")),
    path("", include("leasing.urls")),
    path("", include("billing.urls")),
]


def media(request, path: str):
    """Files under MEDIA_ROOT (the avatars rehosted when no bucket is configured), read where MEDIA_ROOT
    says at the time of the request. A name longer than the file system takes (a component over 255 bytes,
    a path over 4,096) makes the lookup itself fail with ENAMETOOLONG: no such file, not a server error.
    Other OSErrors (an unreadable mount) stay 500s: they are ours to fix."""
    try:
        return serve(request, path, document_root=settings.MEDIA_ROOT)
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:
            raise
        raise Http404("No such file.") from exc


def staff_password_reset_closed(request):
    raise Http404("Password reset by mail is not offered: ask a Layers superuser.")


urlpatterns = [
    path("healthz", ops_views.healthz, name="healthz"),
    path("readyz", ops_views.readyz, name="readyz"),
    # "Layers now" as JSON for alerting, with the ops token (LAYERS_OPS_STATUS_TOKEN); a 404 when none is set.
    path("ops/status", scheduling_views.ops_status, name="ops-status"),
    path("v1/openapi.json", PublicSchemaView.as_view(), name="openapi"),
    path(
        "docs/",
        SpectacularSwaggerView.as_view(
            url_name="openapi", authentication_classes=[], permission_classes=[], http_method_names=DOCS_METHODS
        ),
        name="docs",
    ),
    path(
        "docs/redoc/",
        SpectacularRedocView.as_view(
            url_name="openapi", authentication_classes=[], permission_classes=[], http_method_names=DOCS_METHODS
        ),
        name="redoc",
    ),
    path("v1/", include(api_v1)),
    # Anything else under /v1 is the API's 404 envelope, with DEBUG too (`make run`): Django's debug 404 page
    # (HTML, listing every route) bypasses handler404. Behind the key check, as every operation is.
    re_path(r"^v1(?:/|$)", NoRouteApi.as_view()),
    path("oauth/<str:platform>/callback", ops_views.oauth_callback, name="oauth-callback"),
    # The same with a trailing slash: only a person types it (platforms send the exact redirect_uri), and
    # they get the callback's own page ("This sign-in link is unknown or invalid…"), not a bare Not Found.
    path("oauth/<str:platform>/callback/", ops_views.oauth_callback),
    path("platform-webhooks/tiktok", ops_views.tiktok_webhook, name="tiktok-webhook"),
    # Meta's Deauthorize callback URL and Data deletion request URL (README), and the page the latter's answer
    # sends the person to.
    path("platform-webhooks/instagram/deauthorize", ops_views.instagram_deauthorize, name="instagram-deauthorize"),
    path(
        "platform-webhooks/instagram/data-deletion", ops_views.instagram_data_deletion, name="instagram-data-deletion"
    ),
    path("data-deletion/<str:code>", ops_views.data_deletion_status, name="data-deletion-status"),
    path("admin/", admin.site.urls),
    # No password reset by mail: no mail is configured (the form answered 500), and superusers set staff
    # passwords in the admin. The sign-in page says so (templates/account/password_reset_help_text.html).
    re_path(r"^staff/password/reset/", staff_password_reset_closed),
    path("staff/", include("allauth.urls")),
    path("media/<path:path>", media),
]

if settings.LAYERS_PLATFORMS == "sandbox":  # never in production: the settings there refuse "sandbox"
    urlpatterns.append(path("sandbox/", include("accounts.platforms.sandbox.urls")))
