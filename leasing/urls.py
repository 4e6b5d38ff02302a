from django.urls import path

from leasing import apis

urlpatterns = [
    path(
        "projects/<prj:projectId>/leased-accounts/request",
        apis.LeaseRequestCreateApi.as_view(),
        name="lease-request-create",
    ),
    path(
        "projects/<prj:projectId>/leased-accounts/requests",
        apis.LeaseRequestListApi.as_view(),
        name="lease-request-list",
    ),
    path(
        "projects/<prj:projectId>/leased-accounts/requests/<lreq:requestId>",
        apis.LeaseRequestDetailApi.as_view(),
        name="lease-request-detail",
    ),
    path("projects/<prj:projectId>/leased-accounts", apis.LeasedAccountListApi.as_view(), name="leased-account-list"),
    path("leased-accounts/<sa:socialAccountId>", apis.LeasedAccountReleaseApi.as_view(), name="leased-account-release"),
]
