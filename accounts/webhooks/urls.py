from django.urls import path

from accounts.webhooks import apis

urlpatterns = [
    path("webhook-endpoints", apis.EndpointListApi.as_view(), name="webhook-endpoint-list"),
    path("webhook-endpoints/<we:endpointId>", apis.EndpointDetailApi.as_view(), name="webhook-endpoint-detail"),
    path(
        "webhook-endpoints/<we:endpointId>/rotate-secret",
        apis.EndpointRotateSecretApi.as_view(),
        name="webhook-endpoint-rotate-secret",
    ),
]
