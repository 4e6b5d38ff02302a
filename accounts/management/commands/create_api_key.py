from accounts import services
from accounts.models import Organization
from config.commands import JsonCommand, get_or_fail


class Command(JsonCommand):
    help = "Issue an API key for an organization. The key is printed once and never stored."

    def add_command_arguments(self, parser):
        parser.add_argument("--org", required=True, help="organization id (org_…)")
        parser.add_argument(
            "--return-domain",
            action="append",
            required=True,  # a key without any allowed host could never start a connect (API.md: at least one)
            dest="return_domains",
            help="allowed returnUrl host (repeatable; host:port for a non-default port, or an origin such as "
            "https://app.acme.com:8443)",
        )
        parser.add_argument("--name", default="")

    def run(self, *, org, return_domains, name, **options):
        organization = get_or_fail(Organization, org, "organization")
        key, raw = services.api_key_create(organization=organization, return_domains=return_domains, name=name)
        return {"id": key.id, "key": raw}, f"API key {key.id}: {raw}\n(shown once; store it now)"
