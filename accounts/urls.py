from django.urls import path

from accounts import apis

urlpatterns = [
    path("projects", apis.ProjectListApi.as_view(), name="project-list"),
    path("projects/<prj:projectId>", apis.ProjectDetailApi.as_view(), name="project-detail"),
    path("events", apis.EventListApi.as_view(), name="event-list"),
]
