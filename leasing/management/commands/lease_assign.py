from django.core.management.base import CommandError

from config.commands import JsonCommand
from leasing import services
from leasing.models import LeaseRequest
from leasing.serializers import lease_request_data


class Command(JsonCommand):
    help = "Assign pool accounts to a lease request (the same service as the admin)."

    def add_command_arguments(self, parser):
        parser.add_argument("request_id")
        group = parser.add_mutually_exclusive_group(required=True)
        group.add_argument("--auto", action="store_true", help="the best matching available accounts")
        group.add_argument("--pool-account", action="append", dest="pool_accounts", help="pool account id (repeatable)")

    def run(self, *, request_id, auto, pool_accounts, **options):
        if not LeaseRequest.objects.filter(pk=request_id).exists():
            raise CommandError(f"No lease request {request_id!r}.")
        try:
            request = services.lease_assign(request_id=request_id, pool_account_ids=pool_accounts, auto=auto)
        except services.LeaseError as exc:
            raise CommandError(exc.message)
        data = lease_request_data(LeaseRequest.objects.get(pk=request.pk))
        return data, f"{data['requestId']}: {data['status']} ({data['assignedCount']}/{data['count']})"
