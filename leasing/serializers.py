"""Public representations of lease requests and leased accounts (API output and event data)."""

from datetime import datetime

from rest_framework import serializers

from accounts.models import SocialAccount
from config.api.fields import Int64Field, TimestampField, datetime_output


class NicheSerializer(serializers.Serializer):
    vertical = serializers.CharField()
    audience = serializers.CharField(allow_blank=True)
    language = serializers.CharField()
    geo = serializers.ListField(child=serializers.CharField(), source="geos")


class LeaseRequestOutput(serializers.Serializer):
    requestId = serializers.CharField(source="id", help_text="lreq_<ULID>")
    projectId = serializers.CharField(source="project_id")
    status = serializers.ChoiceField(
        choices=["requested", "in_review", "provisioning", "assigned", "partial", "rejected", "failed"],
        help_text="requested → in_review (a Layers staff member took it) → provisioning (accounts being bound) → "
        "assigned (all) | partial (fewer, ≥ 1; staff may assign the rest later, provisioning again, then "
        "assigned or still partial) | rejected; failed when binding failed and nothing was leased (see "
        "failureReason; the request can be worked again). Clients that only know requested / assigned / "
        "partial / rejected can treat the others as 'still requested'.",
    )
    count = serializers.IntegerField()
    assignedCount = serializers.SerializerMethodField()
    niche = NicheSerializer(source="*")
    note = serializers.CharField()
    submittedAt = TimestampField(source="submitted_at")
    decidedAt = TimestampField(source="decided_at", allow_null=True)
    socialAccountIds = serializers.SerializerMethodField()
    rejectionReason = serializers.SerializerMethodField()
    failureReason = serializers.SerializerMethodField(
        help_text="When failed: a fixed explanation (nothing was leased; Layers staff assign accounts again)."
    )

    def _leases(self, request):
        cached = getattr(request, "_prefetched_objects_cache", {}).get("leases")
        return list(cached) if cached is not None else list(request.leases.all())

    def get_assignedCount(self, request) -> int:  # noqa: N802
        return len(self._leases(request))

    def get_socialAccountIds(self, request) -> list[str]:  # noqa: N802
        return [lease.social_account_id for lease in self._leases(request)]

    def get_rejectionReason(self, request) -> str | None:  # noqa: N802
        return request.rejection_reason or None

    def get_failureReason(self, request) -> str | None:  # noqa: N802
        return request.failure_reason or None


class LeasedAccountNicheOutput(serializers.Serializer):
    """What the account itself was warmed for (its pool account's niche). Not the request's niche: an
    account may speak several languages, and its audience is not described to partners."""

    vertical = serializers.CharField()
    languages = serializers.ListField(child=serializers.CharField(), help_text="BCP 47 tags, e.g. en-US.")
    geo = serializers.ListField(
        child=serializers.CharField(), source="geos", help_text="ISO 3166-1 alpha-2 country codes."
    )


class LeasedAccountOutput(serializers.Serializer):
    socialAccountId = serializers.CharField(source="social_account_id")
    handle = serializers.CharField(source="social_account.identity.handle")
    # The values alone, as SocialAccountOutput's: (value, label) pairs made the document a second enum.
    status = serializers.ChoiceField(choices=SocialAccount.Status.values, source="social_account.status")
    niche = LeasedAccountNicheOutput(source="pool_account")
    requestId = serializers.CharField(source="request_id")
    monthlyPriceCents = Int64Field(source="monthly_price_cents")
    assignedAt = TimestampField(source="assigned_at")
    currentPeriodStart = serializers.SerializerMethodField()
    currentPeriodEnd = serializers.SerializerMethodField()
    releasedAt = TimestampField(source="released_at", allow_null=True)

    def _period(self, lease):
        """The period running now, computed once per lease: its start and its end read with one reading of the
        clock. Each read its own, a month starting between the two gave the first month's start and the next
        one's end, a "current period" of two months."""
        from django.utils import timezone

        from leasing.periods import period_bounds, period_index_at

        if getattr(lease, "_current_period", None) is None:
            lease._current_period = period_bounds(lease.assigned_at, period_index_at(lease.assigned_at, timezone.now()))
        return lease._current_period

    def get_currentPeriodStart(self, lease) -> datetime:  # noqa: N802  (written as RFC 3339, like assignedAt)
        return datetime_output(self._period(lease)[0])

    def get_currentPeriodEnd(self, lease) -> datetime:  # noqa: N802
        return datetime_output(self._period(lease)[1])


def lease_request_data(request) -> dict:
    return dict(LeaseRequestOutput(request).data)
