"""Partner API: projects and events. Thin views: org-scoped selector → serializer."""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from accounts import selectors
from config.api.pagination import paginate
from config.api.schema import errors, list_schema
from config.api.views import ApiView


class ProjectOutput(serializers.Serializer):
    id = serializers.CharField(help_text="prj_<uuid>")
    organizationId = serializers.CharField(source="organization_id")
    name = serializers.CharField()
    createdAt = serializers.DateTimeField(source="created_at")


class EventOutput(serializers.Serializer):
    id = serializers.CharField(help_text="evt_<ULID>; identical in every webhook delivery of the event")
    type = serializers.CharField()
    createdAt = serializers.DateTimeField(source="created_at")
    data = serializers.DictField()


class ProjectListApi(ApiView):
    @list_schema(ProjectOutput, "ProjectPage", operation_id="projects_list", tags=["projects"])
    def get(self, request):
        qs = selectors.project_list(organization=self.organization)
        return paginate(request, qs, lambda rows: ProjectOutput(rows, many=True).data)


class ProjectDetailApi(ApiView):
    @extend_schema(responses={200: ProjectOutput, **errors()}, operation_id="projects_get", tags=["projects"])
    def get(self, request, projectId: str):
        project = selectors.project_get(organization=self.organization, project_id=projectId)
        return Response(ProjectOutput(project).data)


class EventListApi(ApiView):
    @list_schema(
        EventOutput,
        "EventPage",
        operation_id="events_list",
        tags=["events"],
        parameters=[OpenApiParameter("type", str, description="Only events of this type.")],
        description="Recent events of your organization, newest first, for polling and replay.",
    )
    def get(self, request):
        qs = selectors.event_list(organization=self.organization, type=request.query_params.get("type"))
        return paginate(request, qs, lambda rows: EventOutput(rows, many=True).data)
