"""The base class of every partner API view: authentication, throttling, the error envelope and
Idempotency-Key handling happen here, so operation views stay thin."""

from rest_framework.response import Response
from rest_framework.views import APIView

from config.api import idempotency


class ApiView(APIView):
    _idempotency_row = None

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        key = request.headers.get("Idempotency-Key")
        if request.method == "POST" and key is not None:
            self._idempotency_row = idempotency.begin(organization=request.user.organization, key=key, request=request)

    def handle_exception(self, exc):
        if isinstance(exc, idempotency.Replay):
            return Response(exc.body, status=exc.status, headers={"Idempotent-Replayed": "true"})
        return super().handle_exception(exc)

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if self._idempotency_row is not None:
            idempotency.finish(self._idempotency_row, response)
            self._idempotency_row = None
        return response

    @property
    def organization(self):
        return self.request.user.organization
