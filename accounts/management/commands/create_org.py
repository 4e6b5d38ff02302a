from accounts import services
from config.commands import JsonCommand


class Command(JsonCommand):
    help = "Create a partner organization."

    def add_command_arguments(self, parser):
        parser.add_argument("name")

    def run(self, *, name, **options):
        org = services.organization_create(name=name)
        return {"id": org.id}, f"Created organization {org.name} ({org.id})"
