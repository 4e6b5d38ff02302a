import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import CommandError
from django.db import transaction

from accounts import services
from accounts.models import ApiKey, Organization, Project
from config.commands import JsonCommand

DEMO_ORG = "Demo Partner"
DEMO_PROJECTS = ["Demo App", "Demo App (staging)"]
DEMO_KEY_NAME = "demo"
DEMO_ADMIN = "admin"


class Command(JsonCommand):
    help = (
        "Create the demo organization, its projects and an admin user if missing (idempotent). "
        "Each run issues a fresh demo API key (revoking the previous one) and a fresh admin password, "
        "because neither is stored in a readable form. Sandbox mode only (LAYERS_PLATFORMS=sandbox)."
    )

    def run(self, **options):
        # It makes whoever is called `admin` a superuser and prints a new password for them: in live mode that
        # may be a real staff member's account (and the demo's data has no place there). Decided as
        # add_pool_accounts decides: the sandbox is the local demo, live is real partners and real staff.
        if settings.LAYERS_PLATFORMS != "sandbox":
            raise CommandError(
                "seed_demo is for the local sandbox demo only (LAYERS_PLATFORMS=sandbox), not "
                f"{settings.LAYERS_PLATFORMS!r}: nothing was created and no user was changed. Create staff "
                "accounts with `manage.py createsuperuser`."
            )
        with transaction.atomic():
            org = Organization.objects.filter(name=DEMO_ORG).order_by("created_at").first()
            if org is None:
                org = services.organization_create(name=DEMO_ORG)
            projects = []
            for name in DEMO_PROJECTS:
                project = Project.objects.filter(organization=org, name=name).first()
                projects.append(project or services.project_create(organization=org, name=name))
            for old in ApiKey.objects.filter(organization=org, name=DEMO_KEY_NAME, revoked_at__isnull=True):
                services.api_key_revoke(key=old)
            _, raw_key = services.api_key_create(
                organization=org,
                name=DEMO_KEY_NAME,
                return_domains=[
                    "localhost",
                    "127.0.0.1",
                    f"127.0.0.1:{settings.PORT}",
                    f"localhost:{settings.PORT}",
                    "app.demo.test",
                ],
            )
            password = secrets.token_urlsafe(12)
            user, _ = get_user_model().objects.get_or_create(username=DEMO_ADMIN, defaults={"is_staff": True})
            user.is_staff = user.is_superuser = True
            user.set_password(password)
            user.save()
        result = {
            "organizationId": org.id,
            "projectIds": [p.id for p in projects],
            "apiKey": raw_key,
            "adminUser": DEMO_ADMIN,
            "adminPassword": password,
        }
        base = settings.LAYERS_PUBLIC_URL
        human = "\n".join(
            [
                "",
                "Layers partner API — demo",
                f"  API:          {base}/v1/projects",
                f"  API docs:     {base}/docs/",
                f"  Admin:        {base}/admin/   (user {DEMO_ADMIN}, password {password})",
                "                the first visit asks for an authenticator app (TOTP): superusers, and staff who",
                "                can assign or release leases, add or change pool accounts, move money, issue or",
                "                edit API keys, change (so off-board) organizations, set managed-distribution",
                "                providers, grant permissions, change scheduled tasks or change authenticators,",
                "                need MFA;",
                "                LAYERS_STAFF_MFA_REQUIRED=false turns it off for a local demo without one.",
                f"  Demo API key: {raw_key}",
                f"  Projects:     {', '.join(p.id for p in projects)}",
                f'  Try:          curl -H "Authorization: Bearer {raw_key}" {base}/v1/projects',
                "",
            ]
        )
        return result, human
