"""Public representations (the API's output and the `data` of events), shared by the API views and the
services that record events, so a webhook carries exactly what GET returns."""

from datetime import datetime
from typing import NamedTuple

from rest_framework import serializers

from config.api.fields import TimestampField, datetime_output


class LayerRefOutput(serializers.Serializer):
    id = serializers.CharField()
    kind = serializers.CharField()
    name = serializers.CharField()


class SocialAccountOutput(serializers.Serializer):
    id = serializers.CharField(help_text="sa_<uuid>")
    projectId = serializers.CharField(source="project_id")
    platform = serializers.ChoiceField(choices=["tiktok", "instagram"])
    kind = serializers.ChoiceField(choices=["connected", "leased"])
    status = serializers.ChoiceField(
        choices=["connected", "reauth_required", "disconnected"],
        help_text=(
            "`reauth_required`: the platform no longer accepts the token (rejected or not refreshable, or the "
            "user removed the app in TikTok); a reauth-url link restores it on the same id."
        ),
    )
    handle = serializers.CharField(
        source="identity.handle",
        help_text="The platform username. A TikTok account first connected without user.info.profile shows its "
        "display name here until a token with that scope tells the username.",
    )
    displayName = serializers.CharField(source="identity.display_name")
    avatarUrl = serializers.SerializerMethodField(
        help_text="Stable Layers-hosted copy of the avatar, or null: copied shortly after a connect or a lease "
        "assignment (null until then), deleted when the account is disconnected or released."
    )
    connectedAt = TimestampField(source="connected_at")
    reauthRequiredAt = TimestampField(source="reauth_required_at", allow_null=True)
    disconnectedAt = TimestampField(source="disconnected_at", allow_null=True)
    layers = LayerRefOutput(many=True, source="layers.all")

    def get_avatarUrl(self, account) -> str | None:  # noqa: N802 - the public field name
        return account.avatar_url or None

    def to_representation(self, account):
        # The fields above describe the output (and the OpenAPI schema); this writes it out directly,
        # because DRF's field-by-field walk was most of the time of a 50-account page. Pages arrive as
        # AccountRow tuples (selectors.social_account_page), single accounts as model instances: both are
        # written by the same lines. tests/perf/test_output_equivalence.py checks all three agree.
        row = account if isinstance(account, AccountRow) else account_row(account)
        return {
            "id": str(row.id),
            "projectId": str(row.project_id),
            "platform": str(row.platform),
            "kind": str(row.kind),
            "status": str(row.status),
            "handle": None if row.handle is None else str(row.handle),
            "displayName": None if row.display_name is None else str(row.display_name),
            "avatarUrl": row.avatar_url or None,
            "connectedAt": datetime_output(row.connected_at),
            "reauthRequiredAt": datetime_output(row.reauth_required_at),
            "disconnectedAt": datetime_output(row.disconnected_at),
            "layers": [{"id": str(pk), "kind": str(kind), "name": str(name)} for pk, kind, name in row.layers],
        }


class AccountRow(NamedTuple):
    """What an account's representation reads, as a listed page carries it."""

    id: str
    project_id: str
    platform: str
    kind: str
    status: str
    handle: str | None
    display_name: str | None
    avatar_url: str
    connected_at: datetime
    reauth_required_at: datetime | None
    disconnected_at: datetime | None
    created_at: datetime
    layers: list  # (id, kind, name) per layer, oldest first (the onboarding template's order)


def account_row(account) -> AccountRow:
    """The AccountRow of a model instance (its identity and layers are read if not loaded yet)."""
    identity = account.identity
    layers = sorted(account.layers.all(), key=lambda layer: (layer.created_at, layer.pk))
    return AccountRow(
        account.pk,
        account.project_id,
        account.platform,
        account.kind,
        account.status,
        identity.handle,
        identity.display_name,
        account.avatar_url,
        account.connected_at,
        account.reauth_required_at,
        account.disconnected_at,
        account.created_at,
        [(layer.pk, layer.kind, layer.name) for layer in layers],
    )


def social_account_data(account) -> dict:
    return dict(SocialAccountOutput(account).data)
