"""Partner API of the accounts app: projects, events, connected accounts. Thin views: auth → org-scoped
selector → input serializer → one service → output serializer."""

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response

from accounts import selectors, services
from accounts.models import OAuthSession
from accounts.platforms.scopes import SCOPES
from accounts.serializers import SocialAccountOutput
from accounts.webhooks.apis import EVENT_DATA_BY_TYPE
from config.api.errors import Validation
from config.api.fields import StrictSerializer, TimestampField
from config.api.pagination import page_response, page_window, paginate, paginate_by_position, parse_filters
from config.api.schema import IDEMPOTENCY_PARAMETER, errors, list_schema
from config.api.views import ApiView


class ProjectOutput(serializers.Serializer):
    id = serializers.CharField(help_text="prj_<uuid>")
    organizationId = serializers.CharField(source="organization_id")
    name = serializers.CharField()
    createdAt = TimestampField(source="created_at")


class EventOutput(serializers.Serializer):
    id = serializers.CharField(help_text="evt_<ULID>; identical in every webhook delivery of the event")
    type = serializers.ChoiceField(choices=sorted(services.EVENT_TYPES))
    createdAt = TimestampField(source="created_at")
    data = serializers.DictField(
        help_text="A snapshot of the object taken when the event was recorded, never updated afterwards (but for "
        "an Instagram user's data deletion request, which blanks the handle, displayName and avatarUrl of their "
        "accounts' events): read the object's GET for its current state. " + EVENT_DATA_BY_TYPE
    )


# Event data is recorded with the change, inside its transaction: social_account.connected is recorded as the
# binding is created, and the avatar copy and layer provisioning run after commit (the post-connect fan-out).
EVENT_DATA_SNAPSHOT = (
    "Each event's `data` is a snapshot taken when the event was recorded, never updated afterwards, and every "
    "webhook delivery of the event carries that same snapshot. The one exception: an Instagram user's data "
    "deletion request (Meta's) blanks their accounts' `handle` and `displayName` (`\"\"`) and `avatarUrl` "
    "(null) in the events already recorded, and in the deliveries not sent yet. `social_account.connected` is "
    "recorded as the account is created, before its avatar is copied and its layers are provisioned, so it "
    "always arrives with `avatarUrl: null` and `layers: []`: do not store the avatar from it, read "
    "`GET /v1/social-accounts/{id}` for the account as it is now (its avatar and layers appear there once "
    "the post-connect steps ran)."
)


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


class EventFilters(serializers.Serializer):
    # One of the event types: a misspelt type is a 422 naming them, not an empty list that looks like "none".
    type = serializers.ChoiceField(choices=sorted(services.EVENT_TYPES), required=False)


class EventListApi(ApiView):
    @list_schema(
        EventOutput,
        "EventPage",
        operation_id="events_list",
        tags=["events"],
        parameters=[
            OpenApiParameter("type", str, enum=sorted(services.EVENT_TYPES), description="Only events of this type.")
        ],
        description=(
            "Recent events of your organization, newest first, for polling and replay. Events are kept for "
            "30 days, then deleted with their webhook deliveries. The order is the order in which events became "
            "visible (their change committed), so polling is safe: read newest first down to the last event id "
            "you saw, and every event you had not seen is above it, however late its change committed. "
            "`createdAt` is when the change began and can be a few milliseconds out of that order. "
            f"{EVENT_DATA_SNAPSHOT}"
        ),
    )
    def get(self, request):
        filters = parse_filters(request, EventFilters)
        # A read that writes, on purpose: events committed since the last read get their positions now, above
        # every position this partner could have seen, so a page read right after never misses one
        # (services.events_sequence; a no-op read on a partial index when nothing is waiting).
        services.events_sequence(organization_id=self.organization.pk)
        qs = selectors.event_list(organization=self.organization, type=filters.get("type"))
        return paginate_by_position(request, qs, lambda rows: EventOutput(rows, many=True).data)


# --- Connected accounts ------------------------------------------------------------------------------

PLATFORMS = ["tiktok", "instagram"]


class OAuthUrlInput(StrictSerializer):
    platform = serializers.ChoiceField(choices=PLATFORMS, help_text="`tiktok` or `instagram`, lower-case.")
    returnUrl = serializers.CharField(
        max_length=2048,
        help_text="Absolute https URL whose host is exactly on your key's allowed return domains "
        "(no subdomain or wildcard matching; list non-default ports as host:port). Ports are compared as "
        "numbers: https://app.acme.com:443/cb is https://app.acme.com/cb, and an entry localhost:80 allows "
        "http://localhost/cb but no other port. Malformed → 422, "
        "well-formed but unlisted host → 403 RETURN_URL_NOT_ALLOWED.",
    )
    usageNote = serializers.CharField(
        max_length=500, required=False, allow_blank=True, help_text="Shown on the consent screen where possible."
    )


class AuthorizeLinkOutput(serializers.Serializer):
    authorizeUrl = serializers.CharField(help_text="Send the end-customer's browser here.")
    state = serializers.CharField(help_text="st_…: single-use, unguessable; poll oauth-status with it.")
    expiresAt = TimestampField(help_text="30 minutes after creation.")


def _link_output(link) -> dict:
    return AuthorizeLinkOutput(
        {"authorizeUrl": link.authorize_url, "state": link.session.state, "expiresAt": link.session.expires_at}
    ).data


class OAuthUrlApi(ApiView):
    @extend_schema(
        request=OAuthUrlInput,
        responses={200: AuthorizeLinkOutput, **errors(400, 422, r403="RETURN_URL_NOT_ALLOWED")},
        parameters=[IDEMPOTENCY_PARAMETER],
        operation_id="social_oauth_url",
        tags=["connected accounts"],
        description=(
            "Start connecting a TikTok or Instagram account to the project. After consent the customer is "
            "redirected to exactly `returnUrl` (no query added) on success, or to `returnUrl` with "
            "`layers_oauth_error=<code>` on failure: access_denied, expired, already_used, account_mismatch, "
            "token_exchange_failed, platform_error. access_denied is also the answer when the customer approved "
            "but unticked the publishing permission: when the platform reports the granted scopes and none lets "
            "Layers post (TikTok: video.publish for publish mode or video.upload for drafts; Instagram: "
            "instagram_business_content_publish), nothing is bound and the grant is revoked at the platform "
            "(unless the same platform user is still connected elsewhere, or in Layers' pool). A platform answer "
            "naming no scopes is taken as granting them. After Instagram the redirect's Location ends with an empty "
            "`#` (`returnUrl#`): Instagram sends the browser to Layers with `#_`, which a browser would otherwise "
            "carry over to your page."
        ),
    )
    def post(self, request, projectId: str):
        project = selectors.project_get(organization=self.organization, project_id=projectId)
        data = OAuthUrlInput(data=request.data)
        data.is_valid(raise_exception=True)
        link = services.oauth_session_start(
            api_key=request.auth,
            project=project,
            platform=data.validated_data["platform"],
            return_url=data.validated_data["returnUrl"],
            usage_note=data.validated_data.get("usageNote", ""),
        )
        return Response(_link_output(link))


class ReauthUrlInput(StrictSerializer):
    socialAccountId = serializers.CharField(help_text="An account of this project (sa_…).")
    scopes = serializers.ListField(
        child=serializers.RegexField(
            r"^[A-Za-z0-9_.:\-]{1,64}$",
            error_messages={"invalid": "A scope is 1-64 letters, digits, '_', '.', ':' or '-' (e.g. video.publish)."},
        ),
        required=False,
        max_length=20,
        help_text="Scope names of the account's platform. "
        f"TikTok: {', '.join(SCOPES['tiktok'])}. Instagram: {', '.join(SCOPES['instagram'])}. "
        "Any other scope, another platform's included, → 422 VALIDATION on `scopes.<index>` (the platform "
        "would show the customer an error page and never send them back to your returnUrl). TikTok's "
        "user.info.basic and Instagram's instagram_business_basic are always added. Without TikTok's "
        "video.list the account still posts but gets no "
        "metrics; without user.info.profile it keeps its known handle and its posts get no externalUrl; "
        "a list with none of the publishing scopes (TikTok video.publish / video.upload, Instagram "
        "instagram_business_content_publish) → 422 VALIDATION on `scopes`, and a grant with none of them (the "
        "customer unticked it) is refused with access_denied and the account left as it was; "
        "with TikTok's video.upload alone it posts drafts, and a target in mode publish is refused at schedule "
        "(422 VALIDATION on `targets.<i>.mode`; video.publish alone: the same for mode draft); a post queued "
        "before the grant narrowed fails alone with PLATFORM_REJECTED, and the account stays connected.",
    )
    returnUrl = serializers.CharField(
        max_length=2048,
        required=False,
        help_text="Defaults to the returnUrl of the latest connect of this account; same allowlist rule.",
    )

    def validate_scopes(self, scopes: list[str]) -> list[str]:
        # Stored comma-joined with the session (512 characters): a comma inside a scope is refused above.
        if len(",".join(scopes)) > OAuthSession._meta.get_field("scopes").max_length:
            raise serializers.ValidationError("Too many scopes: at most 512 characters in all, commas included.")
        return scopes


class ReauthUrlApi(ApiView):
    @extend_schema(
        request=ReauthUrlInput,
        responses={
            200: AuthorizeLinkOutput,
            **errors(400, 422, r403="RETURN_URL_NOT_ALLOWED", r409="ACCOUNT_DISCONNECTED or ACCOUNT_LEASED"),
        },
        parameters=[IDEMPOTENCY_PARAMETER],
        operation_id="social_reauth_url",
        tags=["connected accounts"],
        description=(
            "Re-authorize an account whose token died. Completing it rotates the token on the same "
            "socialAccountId, sets status back to connected and fires social_account.reconnected; "
            "consenting as a different platform user fails with account_mismatch (the account unchanged; that "
            "user's new grant is revoked at the platform unless they are connected elsewhere). A link opened after "
            "the account was disconnected (DELETE) fails with already_used, without authorizing the app again at "
            "the platform. A grant without any publishing scope fails with access_denied (see `scopes`). "
            "A leased account → 409 ACCOUNT_LEASED: Layers holds its TikTok user, so Layers ops reconnect it from "
            "the Layers admin when its token dies (same socialAccountId, status back to connected, "
            "social_account.reconnected fires as here; Layers does the same by itself when a token refresh of the "
            "account's previous lease brings the live token after the release); until then it stays "
            "reauth_required and its posts fail with CREDENTIAL_INVALID."
        ),
    )
    def post(self, request, projectId: str):
        project = selectors.project_get(organization=self.organization, project_id=projectId)
        data = ReauthUrlInput(data=request.data)
        data.is_valid(raise_exception=True)
        account = selectors.social_account_in_project(
            organization=self.organization, project=project, account_id=data.validated_data["socialAccountId"]
        )
        if account is None:
            raise Validation({"socialAccountId": ["No such account in this project."]})
        link = services.oauth_session_start(
            api_key=request.auth,
            project=project,
            platform=account.platform,
            return_url=data.validated_data.get("returnUrl") or account.return_url,
            social_account=account,
            scopes=data.validated_data.get("scopes"),
        )
        return Response(_link_output(link))


class OAuthStatusOutput(serializers.Serializer):
    state = serializers.CharField()
    status = serializers.ChoiceField(choices=["pending", "completed", "failed", "expired"])
    platform = serializers.ChoiceField(choices=PLATFORMS)
    projectId = serializers.CharField()
    purpose = serializers.ChoiceField(choices=["connect", "reauth"])
    socialAccountId = serializers.CharField(allow_null=True)
    error = inline_serializer("OAuthError", {"code": serializers.CharField()}, allow_null=True)
    expiresAt = TimestampField()
    completedAt = TimestampField(allow_null=True)


class OAuthStatusApi(ApiView):
    @extend_schema(
        responses={200: OAuthStatusOutput, **errors()},
        operation_id="social_oauth_status",
        tags=["connected accounts"],
        description=(
            "`expired` once expiresAt passed without completion and without the callback having arrived: a state "
            "whose callback arrived before expiresAt reads `pending` until it is `completed` or `failed`, never "
            "`expired` in between. `socialAccountId` is set when completed. `error.code` is one of access_denied "
            "(the customer declined, or approved without the publishing permission), expired, already_used (the "
            "state was used already, or it is a reauth of an account disconnected since), account_mismatch, "
            "token_exchange_failed, platform_error. "
            "A state whose callback was received but could not finish (the server failed meanwhile) is `failed` "
            "with platform_error 5 minutes after the callback arrived, never `expired`. "
            "A state is kept for LAYERS_OAUTH_SESSION_RETENTION_DAYS (30) days after its expiresAt, then "
            "deleted: from then on it is 404, like an unknown one."
        ),
    )
    def get(self, request, state: str):
        session = selectors.oauth_session_get(organization=self.organization, state=state)
        now = timezone.now()
        status = session.public_status(now)
        return Response(
            OAuthStatusOutput(
                {
                    "state": session.state,
                    "status": status,
                    "platform": session.platform,
                    "projectId": session.project_id,
                    "purpose": session.purpose,
                    "socialAccountId": session.social_account_id if status == "completed" else None,
                    "error": {"code": session.public_error_code(now)} if status == "failed" else None,
                    "expiresAt": session.expires_at,
                    "completedAt": session.completed_at,
                }
            ).data
        )


class SocialAccountListApi(ApiView):
    @list_schema(
        SocialAccountOutput,
        "SocialAccountPage",
        operation_id="social_accounts_list",
        tags=["connected accounts"],
        parameters=[
            OpenApiParameter("platform", str, enum=PLATFORMS),
            OpenApiParameter("kind", str, enum=["connected", "leased"]),
            OpenApiParameter(
                "status",
                str,
                enum=["connected", "reauth_required", "disconnected"],
                description="`disconnected` matches nothing: disconnected accounts are never listed.",
            ),
        ],
        description="Connected and leased accounts of the project. Disconnected accounts never appear.",
    )
    def get(self, request, projectId: str):
        filters = parse_filters(request, SocialAccountFilters)
        limit, after = page_window(request)
        rows = selectors.social_account_page(
            organization=self.organization, project_id=projectId, limit=limit + 1, after=after, **filters
        )
        return page_response(
            rows,
            limit=limit,
            serialize=lambda page: SocialAccountOutput(page, many=True).data,
            key=lambda row: (row.created_at, row.id),
            parent_check=lambda: self.check_project(projectId),
        )


class SocialAccountFilters(serializers.Serializer):
    platform = serializers.ChoiceField(choices=PLATFORMS, required=False)
    kind = serializers.ChoiceField(choices=["connected", "leased"], required=False)
    status = serializers.ChoiceField(choices=["connected", "reauth_required", "disconnected"], required=False)


class RevokeOutput(serializers.Serializer):
    id = serializers.CharField()
    status = serializers.ChoiceField(choices=["disconnected"])
    canceledScheduledPosts = serializers.IntegerField()
    released = serializers.BooleanField(help_text="true when this also released a leased account")


class SocialAccountDetailApi(ApiView):
    @extend_schema(
        responses={200: SocialAccountOutput, **errors()},
        operation_id="social_accounts_get",
        tags=["connected accounts"],
        description="Any account of your organization, disconnected ones included (audit trail).",
    )
    def get(self, request, accountId: str):
        account = selectors.social_account_get(organization=self.organization, account_id=accountId)
        return Response(SocialAccountOutput(account).data)

    @extend_schema(
        responses={200: RevokeOutput, **errors()},
        operation_id="social_accounts_revoke",
        tags=["connected accounts"],
        description=(
            "Disconnect for good: the token is wiped here, every queued scheduled post of the account is "
            "canceled (the count), a leased account is released. The app's authorization is revoked at the "
            "platform (best-effort) only when no other live account holds the same platform user: TikTok's and "
            "Instagram's revoke withdraw it for the whole user, so while the same handle is still connected in "
            "another of your projects, in another organization, or as a leased or Layers pool account, only this "
            "account's copy of the token is wiped and those accounts keep working. A post the platform already "
            "had ends as the platform says (published, or failed with its reason), asked with the token of the "
            "account that keeps the authorization (while that account's expired token waits for its renewal, the "
            "post stays publishing and is asked about again, within its 24 hours of processing); it fails "
            "ACCOUNT_DISCONNECTED when this revoke withdrew the authorization, or when no account keeping it has a "
            "token that can ask (one the platform refuses, or an expired one nothing renews). "
            "A TikTok access token that has expired is first renewed with its refresh token, so that the revoke "
            "reaches the grant; an expired Instagram token cannot be renewed, so nothing can revoke with it (our "
            "copy is wiped). "
            "Published posts stay in the history. The copy of the profile picture Layers hosted is deleted and "
            "avatarUrl becomes null. Repeating answers 200 with canceledScheduledPosts 0. "
            "Connecting the same handle again later mints a new id."
        ),
    )
    def delete(self, request, accountId: str):
        account = selectors.social_account_get(organization=self.organization, account_id=accountId)
        result = services.social_account_revoke(account_id=account.pk, api_key=request.auth)
        return Response(
            RevokeOutput(
                {
                    "id": result.account.pk,
                    "status": result.account.status,
                    "canceledScheduledPosts": result.canceled_scheduled_posts,
                    "released": result.released,
                }
            ).data
        )
