from accounts import services
from accounts.models import Organization
from config.commands import CommandFailed, JsonCommand, get_or_fail


class Command(JsonCommand):
    help = (
        "Off-board a partner's organization (the same service as the admin's action): revoke its API keys, "
        "disable its webhook endpoints, cancel its queued posts, disconnect its accounts (leased ones released), "
        "reject its open lease requests. Its wallet and ledger are kept; the balance left is printed. Safe to "
        "run again. Exits 1 when something is left to do (run it again)."
    )

    def add_command_arguments(self, parser):
        parser.add_argument("org_id", help="organization id (org_…)")
        parser.add_argument(
            "--dry-run", action="store_true", dest="dry_run", help="change nothing; say what would be done"
        )

    def run(self, *, org_id, dry_run, **options):
        get_or_fail(Organization, org_id, "organization")
        result = services.organization_offboard(organization_id=org_id, dry_run=dry_run, by="management command")
        organization = result.organization
        out = {
            "id": organization.pk,
            "dryRun": dry_run,
            "offboardedAt": organization.offboarded_at.isoformat() if organization.offboarded_at else None,
            "offboardedBy": organization.offboarded_by,
            "apiKeysRevoked": result.api_keys_revoked,
            "webhookEndpointsDisabled": result.webhook_endpoints_disabled,
            "oauthLinksExpired": result.oauth_sessions_expired,
            "leaseRequestsRejected": result.lease_requests_rejected,
            "leaseRequestsUnderway": result.lease_requests_underway,
            "postsCanceled": result.posts_canceled,
            "accountsDisconnected": result.accounts_disconnected,
            "leasesReleased": result.leases_released,
            "walletBalanceCents": result.wallet_balance_cents,
        }
        human = f"Organization {organization.pk} ({organization}) {result.report()}"
        if not dry_run and not result.complete:
            raise CommandFailed("Off-boarding not complete: run it again.", result=out, human=human)
        return out, human
