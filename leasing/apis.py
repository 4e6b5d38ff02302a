"""Partner API of leasing: request warmed TikTok accounts, follow the requests, list and release leases."""

from drf_spectacular.utils import extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers
from rest_framework.fields import empty
from rest_framework.response import Response

from accounts import selectors as account_selectors
from accounts import services as account_services
from config.api.fields import StrictSerializer, TimestampField
from config.api.pagination import paginate
from config.api.schema import IDEMPOTENCY_PARAMETER, errors, list_schema
from config.api.views import ApiView
from leasing import selectors, services
from leasing.geo import ISO_3166_ALPHA2, is_bcp47
from leasing.serializers import LeasedAccountOutput, LeaseRequestOutput


@extend_schema_field({"type": "string", "minLength": 2, "maxLength": 2, "example": "US"})
class CountryCodeField(serializers.Field):
    """One ISO 3166-1 alpha-2 code, any case (stored upper-case). Every mistake in it (too long, unknown,
    not text) gets the one message, at the code's own index (`niche.geo.1`): DRF's length messages and a
    list-wide "Not ISO 3166-1 alpha-2 country codes: ZZ." named the same kind of mistake two ways, the
    latter at `niche.geo` without saying which code. A plain Field, so it reads every JSON value itself."""

    default_error_messages = {"invalid": "Not an ISO 3166-1 alpha-2 country code, such as US."}

    def run_validation(self, data=empty):
        if data is empty:
            return super().run_validation(data)
        return self.to_internal_value(data)

    def to_internal_value(self, data):
        # Surrounding whitespace is forgiven, as the CharField this replaces forgave it.
        code = data.strip().upper() if isinstance(data, str) else None
        if code not in ISO_3166_ALPHA2:
            self.fail("invalid")
        return code

    def to_representation(self, value):
        return value


class NicheInput(StrictSerializer):
    vertical = serializers.CharField(max_length=100, help_text="e.g. fitness, beauty, gaming")
    audience = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    language = serializers.CharField(
        max_length=35,
        help_text="BCP 47 tag, e.g. en-US. Accounts are matched on the language and its script: zh-Hant-TW is never "
        "served in Simplified Chinese (a tag without a script means the one usual there: zh-TW is Traditional, "
        "zh-CN Simplified). With a region, only accounts of that region are assigned automatically; Layers staff "
        "may pick one of another region of the language (pt-PT for pt-BR) by hand. Without a region (pt), any "
        "region of the language suits.",
    )
    geo = serializers.ListField(
        child=CountryCodeField(),
        min_length=1,
        max_length=50,
        help_text='ISO 3166-1 alpha-2 codes, e.g. ["US", "CA"]',
    )

    def validate_language(self, value):
        if not is_bcp47(value):
            raise serializers.ValidationError("Must be a BCP 47 language tag such as en-US.")
        return value

    def validate_geo(self, value):
        return list(dict.fromkeys(value))  # each country once, in the order first given


class LeaseRequestInput(StrictSerializer):
    projectId = serializers.CharField(help_text="Must equal the projectId of the path.")
    count = serializers.IntegerField(min_value=1, max_value=50)
    niche = NicheInput()
    note = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")

    def validate_projectId(self, value):  # noqa: N802
        if value != self.context["project_id"]:
            raise serializers.ValidationError("Must equal the project in the path.")
        return value


class LeaseRequestCreateApi(ApiView):
    @extend_schema(
        request=LeaseRequestInput,
        responses={
            202: inline_serializer(
                "LeaseRequestAccepted",
                {
                    "requestId": serializers.CharField(),
                    "status": serializers.ChoiceField(choices=["requested"]),
                    "submittedAt": TimestampField(),
                },
            ),
            **errors(400, 422),
        },
        parameters=[IDEMPOTENCY_PARAMETER],
        operation_id="leased_accounts_request",
        tags=["leased accounts"],
        description="Ask Layers for warmed TikTok accounts in a niche. Layers staff review the request and assign "
        "accounts; follow it with GET …/requests/{requestId} or the lease_request.assigned / .rejected webhooks. "
        f"An organization has at most {services.MAX_WAITING_REQUESTS_PER_ORGANIZATION} requests waiting for Layers "
        "(requested, in_review, provisioning or failed): another is refused (422 VALIDATION on `body`) until one is "
        "assigned, partly assigned or rejected.",
    )
    def post(self, request, projectId: str):
        project = account_selectors.project_get(organization=self.organization, project_id=projectId)
        data = LeaseRequestInput(data=request.data, context={"project_id": project.id})
        data.is_valid(raise_exception=True)
        niche = data.validated_data["niche"]
        lease_request = services.lease_request_create(
            project=project,
            count=data.validated_data["count"],
            vertical=niche["vertical"],
            language=niche["language"],
            geos=niche["geo"],
            audience=niche["audience"],
            note=data.validated_data["note"],
            api_key=request.auth,  # the partner's key, named in the request's history
        )
        body = LeaseRequestOutput(lease_request).data
        return Response(
            {"requestId": body["requestId"], "status": body["status"], "submittedAt": body["submittedAt"]}, status=202
        )


class LeaseRequestListApi(ApiView):
    @list_schema(
        LeaseRequestOutput, "LeaseRequestPage", operation_id="leased_accounts_requests_list", tags=["leased accounts"]
    )
    def get(self, request, projectId: str):
        project = account_selectors.project_get(organization=self.organization, project_id=projectId)
        qs = selectors.lease_request_list(organization=self.organization, project=project)
        return paginate(request, qs, lambda rows: LeaseRequestOutput(rows, many=True).data, time_field="submitted_at")


class LeaseRequestDetailApi(ApiView):
    @extend_schema(
        responses={200: LeaseRequestOutput, **errors()},
        operation_id="leased_accounts_requests_get",
        tags=["leased accounts"],
    )
    def get(self, request, projectId: str, requestId: str):
        project = account_selectors.project_get(organization=self.organization, project_id=projectId)
        lease_request = selectors.lease_request_get(
            organization=self.organization, project=project, request_id=requestId
        )
        return Response(LeaseRequestOutput(lease_request).data)


class LeasedAccountListApi(ApiView):
    @list_schema(
        LeasedAccountOutput,
        "LeasedAccountPage",
        operation_id="leased_accounts_list",
        tags=["leased accounts"],
        description="Live leases of the project with their price and current billing period (monthly from "
        "assignedAt, in UTC: same day and time of day each month, clamped to the month's last day). Leased "
        "accounts also appear in the project's social-accounts list (kind: leased) and are scheduled to like any "
        "account.",
    )
    def get(self, request, projectId: str):
        project = account_selectors.project_get(organization=self.organization, project_id=projectId)
        qs = selectors.leased_account_list(organization=self.organization, project=project)
        return paginate(
            request,
            qs,
            lambda rows: LeasedAccountOutput(rows, many=True).data,
            time_field="assigned_at",
            id_field="social_account_id",  # a lease's own key is an integer; partners know it by its account
        )


class ReleaseOutput(serializers.Serializer):
    socialAccountId = serializers.CharField()
    releasedAt = TimestampField()
    canceledScheduledPosts = serializers.IntegerField()
    paidThrough = TimestampField(help_text="End of the last charged period; the current month is not refunded.")


class LeasedAccountReleaseApi(ApiView):
    @extend_schema(
        responses={200: ReleaseOutput, **errors()},
        operation_id="leased_accounts_release",
        tags=["leased accounts"],
        description="Release a leased account: the same as revoking it (queued posts canceled, its copied avatar "
        "deleted and `avatarUrl` null, it leaves the lists), plus the account returns to Layers' pool and no "
        "further month is charged. The current month is not refunded. Repeating it (a retry after a timeout) "
        "answers 200 again with the same `releasedAt` and `paidThrough` and `canceledScheduledPosts: 0`, as a "
        "repeated revoke does. An account that was never leased to your organization is 404.",
    )
    def delete(self, request, socialAccountId: str):
        lease = selectors.lease_for_account(organization=self.organization, account_id=socialAccountId)
        # Two services, composed here rather than in one: the release is the revoke (accounts' service, which
        # releases the lease), and `paidThrough` belongs to billing, which sits above leasing in DESIGN.md's
        # order — a leasing service could not call it. lease_paid_through charges any period the renewal job
        # has not reached yet, so the figure answered is final.
        result = account_services.social_account_revoke(account_id=lease.social_account_id, api_key=request.auth)
        lease.refresh_from_db()
        from billing.services import lease_paid_through

        return Response(
            ReleaseOutput(
                {
                    "socialAccountId": lease.social_account_id,
                    "releasedAt": lease.released_at,
                    "canceledScheduledPosts": result.canceled_scheduled_posts,
                    "paidThrough": lease_paid_through(lease=lease),
                }
            ).data
        )
