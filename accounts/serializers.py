"""Public representations (the API's output and the `data` of events), shared by the API views and the
services that record events, so a webhook carries exactly what GET returns."""

from rest_framework import serializers

from config.api.fields import datetime_output


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

    def to_representation(self, account):
        # The fields above describe the output (and the OpenAPI schema); this writes it out directly,
        # because DRF's field-by-field walk was most of the time of a 50-account page.
        # tests/perf/test_output_equivalence.py checks that both give the same output.
        identity = account.identity
        return {
            "id": str(account.pk),
            "projectId": str(account.project_id),
            "platform": str(account.platform),
            "kind": str(account.kind),
            "status": str(account.status),
            "handle": None if identity.handle is None else str(identity.handle),
            "displayName": None if identity.display_name is None else str(identity.display_name),
            "avatarUrl": account.avatar_url or None,
            "connectedAt": datetime_output(account.connected_at),
            "reauthRequiredAt": datetime_output(account.reauth_required_at),
            "disconnectedAt": datetime_output(account.disconnected_at),
            "layers": _layers(account),
        }


def _layers(account) -> list[dict]:
    """The account's layers, oldest first (the onboarding template's order) on every path."""
    refs = getattr(account, "layer_refs", None)  # set by selectors.with_layer_refs for list pages
    if refs is not None:
        return [{"id": str(r["id"]), "kind": str(r["kind"]), "name": str(r["name"])} for r in refs]
    layers = sorted(account.layers.all(), key=lambda layer: (layer.created_at, layer.pk))
    return [{"id": str(layer.pk), "kind": str(layer.kind), "name": str(layer.name)} for layer in layers]


def social_account_data(account) -> dict:
    return dict(SocialAccountOutput(account).data)
