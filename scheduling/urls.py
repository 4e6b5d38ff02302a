from django.urls import path

from scheduling import apis

urlpatterns = [
    path("projects/<prj:projectId>/content", apis.ContainerCreateApi.as_view(), name="content-create"),
    path("content/<cnt:containerId>", apis.ContainerDetailApi.as_view(), name="content-detail"),
    path("content/<cnt:containerId>/schedule", apis.ScheduleApi.as_view(), name="content-schedule"),
    path("projects/<prj:projectId>/scheduled-posts", apis.ScheduledPostListApi.as_view(), name="scheduled-post-list"),
    path("scheduled-posts/<sp:postId>", apis.ScheduledPostDetailApi.as_view(), name="scheduled-post-detail"),
    path("projects/<prj:projectId>/posts", apis.PublishedPostListApi.as_view(), name="published-post-list"),
]
