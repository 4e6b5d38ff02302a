from django.core.management.base import CommandError

from config.commands import CommandFailed, JsonCommand
from leasing import services
from leasing.models import LeaseRequest
from leasing.serializers import lease_request_data


class Command(JsonCommand):
    help = (
        "Assign pool accounts to a lease request, or the rest of a partial one (the same service as the admin). "
        "Exits 1 when the assignment failed (status failed, or a partial request's top-up), after printing it."
    )

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
        human = f"{data['requestId']}: {data['status']} ({data['assignedCount']}/{data['count']})"
        if services.failed_attempt(request):
            # The request is printed as usual (the partner's view), but the exit status says nothing (more) was
            # leased, and stderr tells the operator which account failed and why. A failed top-up leaves the
            # request `partial` with the leases it had: its status alone would read as a success.
            problems = "; ".join(services.failure_problems(request)) or request.failure_reason
            what = "nothing more was leased" if data["assignedCount"] else "nothing was leased"
            raise CommandFailed(f"{request.pk}: the assignment failed, {what}: {problems}", result=data, human=human)
        return data, human
