"""The real URLconf plus probe operations built on the same ApiView base, to exercise the shared
plumbing (idempotency, envelope for a crash) independently of any one feature."""

import threading

from django.db import transaction
from django.urls import path
from rest_framework import serializers
from rest_framework.response import Response

from accounts.services import event_record
from config.api.views import ApiView
from config.urls import urlpatterns as real_urlpatterns


class ProbeInput(serializers.Serializer):
    note = serializers.CharField(max_length=20)
    count = serializers.IntegerField(min_value=1, max_value=5, required=False)


class ProbeApi(ApiView):
    """Records one event per executed request, so 'the work was done' is countable."""

    def post(self, request):
        data = ProbeInput(data=request.data)
        data.is_valid(raise_exception=True)
        with transaction.atomic():
            event = event_record(
                organization_id=self.organization.id,
                type="social_account.connected",
                data={"note": data.validated_data["note"]},
            )
        return Response({"eventId": event.id, "note": data.validated_data["note"]}, status=201)


class FlakyProbeApi(ProbeApi):
    """Crashes (500) while `failures_left` > 0, then works like the probe: a crashed request must stay
    retryable with the same Idempotency-Key."""

    failures_left = 0

    def post(self, request):
        if FlakyProbeApi.failures_left > 0:
            FlakyProbeApi.failures_left -= 1
            raise RuntimeError("flaky probe crashed before doing the work")
        return super().post(request)


class GatedProbeApi(ProbeApi):
    """Holds each request after its Idempotency-Key is claimed until the test opens `release`, so a test
    can send a second request while the first one is provably still in flight."""

    entered = threading.Event()
    release = threading.Event()

    def post(self, request):
        GatedProbeApi.entered.set()
        if not GatedProbeApi.release.wait(timeout=30):
            raise RuntimeError("the test never opened the gate")
        return super().post(request)


class BoomApi(ApiView):
    def get(self, request):
        raise RuntimeError("secret-internal-detail SELECT * FROM tokens")

    post = get


urlpatterns = [
    path("v1/_probe", ProbeApi.as_view()),
    path("v1/_probe_flaky", FlakyProbeApi.as_view()),
    path("v1/_probe_gated", GatedProbeApi.as_view()),
    path("v1/_boom", BoomApi.as_view()),
    *real_urlpatterns,
]
handler404 = "config.api.errors.handler404"
handler500 = "config.api.errors.handler500"
