from django.core.management.base import CommandError

from accounts.models import Organization
from billing import reports, services
from billing.models import Wallet
from config.api.errors import ApiError
from config.commands import JsonCommand, get_or_fail


class Command(JsonCommand):
    help = "Credit an organization's wallet (a top-up ledger entry)."

    def add_command_arguments(self, parser):
        parser.add_argument("--org", required=True, help="organization id (org_…)")
        parser.add_argument("--cents", required=True, type=int, help="amount in integer cents, > 0")
        parser.add_argument("--reason", default="Top-up", help="shown to the partner in their wallet entries")
        parser.add_argument(
            "--reference", default="", help="idempotency reference (e.g. a bank transfer id): recorded only once"
        )

    def run(self, *, org, cents, reason, reference, **options):
        # The partner reads it in their wallet entries, and the admin's form requires one: "   " was stored empty.
        if not reason.strip():
            raise CommandError("--reason must not be blank.")
        organization = get_or_fail(Organization, org, "organization")
        try:
            entry = services.wallet_top_up(organization=organization, cents=cents, reason=reason, reference=reference)
        except ApiError as exc:
            raise ValueError(f"{exc.message} {exc.details.get('fields', '')}".strip())
        balance = Wallet.objects.get(pk=organization.pk).balance_cents
        # A repeated reference returns the first entry: say so, or the operator cannot tell it changed nothing.
        done = f"Already recorded ({entry.reference}), nothing added to" if entry.already_recorded else "Topped up"
        return {"balanceCents": balance}, f"{done} {organization.name}: balance {reports.usd_display(balance)}"
