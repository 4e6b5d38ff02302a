from accounts import services
from accounts.models import Organization
from config.commands import JsonCommand, get_or_fail


class Command(JsonCommand):
    help = "Create a project in an organization."

    def add_command_arguments(self, parser):
        parser.add_argument("--org", required=True, help="organization id (org_…)")
        parser.add_argument("name")

    def run(self, *, org, name, **options):
        organization = get_or_fail(Organization, org, "organization")
        project = services.project_create(organization=organization, name=name)
        return {"id": project.id}, f"Created project {project.name} ({project.id})"
