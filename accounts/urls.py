from django.urls import path

from accounts import apis

urlpatterns = [
    path("projects", apis.ProjectListApi.as_view(), name="project-list"),
    path("projects/<prj:projectId>", apis.ProjectDetailApi.as_view(), name="project-detail"),
    path("events", apis.EventListApi.as_view(), name="event-list"),
    path("projects/<prj:projectId>/social/oauth-url", apis.OAuthUrlApi.as_view(), name="oauth-url"),
    path("projects/<prj:projectId>/social/reauth-url", apis.ReauthUrlApi.as_view(), name="reauth-url"),
    path("social/oauth-status/<st:state>", apis.OAuthStatusApi.as_view(), name="oauth-status"),
    path("projects/<prj:projectId>/social-accounts", apis.SocialAccountListApi.as_view(), name="social-account-list"),
    path("social-accounts/<sa:accountId>", apis.SocialAccountDetailApi.as_view(), name="social-account-detail"),
]
