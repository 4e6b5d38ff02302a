from django.core.management.base import CommandError

from config.commands import JsonCommand
from leasing import services
from leasing.models import LeaseRequest
from leasing.serializers import lease_request_data


class Command(JsonCommand):
    help = "Reject a lease request with a reason the partner sees (the same service as the admin)."

    def add_command_arguments(self, parser):
        parser.add_argument("request_id")
        parser.add_argument("--reason", required=True)

    def run(self, *, request_id, reason, **options):
        if not LeaseRequest.objects.filter(pk=request_id).exists():
            raise CommandError(f"No lease request {request_id!r}.")
        try:
            request = services.lease_request_reject(request_id=request_id, reason=reason)
        except services.LeaseError as exc:
            raise CommandError(exc.message)
        data = lease_request_data(request)
        return data, f"{data['requestId']}: {data['status']}"
