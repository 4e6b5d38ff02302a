"""Public representations (the API's output and the `data` of events), shared by the API views and the
services that record events, so a webhook carries exactly what GET returns."""

from rest_framework import serializers


class LayerRefOutput(serializers.Serializer):
    id = serializers.CharField()
    kind = serializers.CharField()
    name = serializers.CharField()


class SocialAccountOutput(serializers.Serializer):
    id = serializers.CharField(help_text="sa_<uuid>")
    projectId = serializers.CharField(source="project_id")
    platform = serializers.ChoiceField(choices=["tiktok", "instagram"])
    kind = serializers.ChoiceField(choices=["connected", "leased"])
    status = serializers.ChoiceField(choices=["connected", "reauth_required", "disconnected"])
    handle = serializers.CharField(source="identity.handle")
    displayName = serializers.CharField(source="identity.display_name")
    avatarUrl = serializers.SerializerMethodField(help_text="Stable Layers-hosted copy of the avatar, or null.")
    connectedAt = serializers.DateTimeField(source="connected_at")
    reauthRequiredAt = serializers.DateTimeField(source="reauth_required_at", allow_null=True)
    disconnectedAt = serializers.DateTimeField(source="disconnected_at", allow_null=True)
    layers = LayerRefOutput(many=True, source="layers.all")

    def get_avatarUrl(self, account) -> str | None:  # noqa: N802 - the public field name
        return account.avatar_url or None


def social_account_data(account) -> dict:
    return dict(SocialAccountOutput(account).data)
