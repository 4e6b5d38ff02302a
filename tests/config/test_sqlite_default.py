"""`make run` on embedded defaults uses SQLite (var/db.sqlite3), while the suite runs on PostgreSQL: a query
only PostgreSQL takes passes every other test and answers 500 on the first page ops open after `make run`.
The "Platforms now" panel did that (a UNION whose parts each have a LIMIT, which SQLite refuses): the admin
index and the posts list answered 500. Here a fresh SQLite database is migrated, as `make run` does, the
pages ops open first are asked for by a signed-in superuser, and every periodic task beat runs is run once, in
a process of their own (the dev settings, as `make run` has them)."""

import subprocess
import sys

from django.conf import settings

PAGES = (
    "/admin/",
    "/admin/scheduling/scheduledpost/",
    # What the counts of "Layers now" link to.
    "/admin/scheduling/scheduledpost/?due=overdue",
    "/admin/scheduling/scheduledpost/?due=check_overdue",
    "/admin/webhooks/webhookdelivery/?late=yes",
    "/admin/accounts/event/?fanout=late",
    "/admin/accounts/socialaccount/",
    "/admin/leasing/leaserequest/",
    "/admin/leasing/poolaccount/",
    "/admin/billing/monthlybilling/",
)

SIGNED_IN_PAGES = f"""
import django
django.setup()
from django.test import Client
from django.test.utils import setup_test_environment
setup_test_environment()
from tests.staff import staff_login, superuser
client = staff_login(Client(raise_request_exception=False), superuser())
# A wallet short at the month's end: the monthly page then asks since when, in SQL of its own.
from accounts.services import organization_create
from billing.services import wallet_adjust
wallet_adjust(organization=organization_create(name="Short"), cents=-100, reason="seeded: past due")
for page in {PAGES!r}:
    print(page, client.get(page).status_code)
from django.conf import settings
token = settings.LAYERS_OPS_STATUS_TOKEN
print("/ops/status", Client().get("/ops/status", HTTP_AUTHORIZATION=f"Bearer {{token}}").status_code)
from config.celery import app
app.loader.import_default_modules()  # the tasks, as a worker finds them
app.conf.task_always_eager = True  # what a tick queues runs here too, and no broker is needed
for entry in settings.CELERY_BEAT_SCHEDULE.values():
    outcome = app.tasks[entry["task"]].apply()
    print("task", entry["task"], "ok" if outcome.successful() else repr(outcome.result))
"""


def run(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=180, check=False
    )


def migrated(tmp_path) -> dict:
    """The environment of a fresh SQLite database migrated as `make run` does."""
    import os

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.dev",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
    }
    migrated = run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], env)
    assert migrated.returncode == 0, migrated.stderr[-2000:]
    return env


def test_a_fresh_sqlite_database_migrates_and_serves_the_pages_ops_open_first(tmp_path):
    env = migrated(tmp_path)
    pages = run([sys.executable, "-c", SIGNED_IN_PAGES], {**env, "LAYERS_OPS_STATUS_TOKEN": "t" * 32})

    assert pages.returncode == 0, pages.stderr[-2000:]
    answered = dict(line.rsplit(" ", 1) for line in pages.stdout.splitlines() if line.startswith("/"))
    # /ops/status: every figure read; 503, as beat has never run on this database.
    assert answered == {**{page: "200" for page in PAGES}, "/ops/status": "503"}, (answered, pages.stderr[-2000:])
    tasks = [line.split(" ", 2)[1:] for line in pages.stdout.splitlines() if line.startswith("task ")]
    assert len(tasks) == len(settings.CELERY_BEAT_SCHEDULE)
    assert [task for task, outcome in tasks if outcome != "ok"] == [], tasks


KEYED_POSTS = """
import django
django.setup()
from datetime import timedelta
from django.db.models.functions import Now
from django.test.utils import setup_test_environment
setup_test_environment()
from rest_framework.test import APIClient
from accounts import services
from accounts.models import IdempotencyKey
org = services.organization_create(name="SQLite keys")
project = services.project_create(organization=org, name="demo")
_, raw = services.api_key_create(organization=org, return_domains=["localhost"], name="demo")
client = APIClient(raise_request_exception=False)
client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
body = {"mediaType": "video", "mediaUrls": ["https://cdn.acme.test/clip.mp4"]}
send = lambda: client.post(f"/v1/projects/{project.id}/content", body, format="json", HTTP_IDEMPOTENCY_KEY="demo-1")
first, again = send(), send()
print("replayed", again.status_code, again.get("Idempotent-Replayed"), again.json() == first.json())
claim = IdempotencyKey.objects.filter(organization=org, key="demo-1")
claim.update(status_code=None, response_body=None, created_at=Now() - timedelta(seconds=30))
print("in-flight", send().status_code)
claim.update(created_at=Now() - timedelta(minutes=2))
print("abandoned", send().status_code)
"""


def test_idempotency_keys_are_aged_on_sqlites_clock_too(tmp_path):
    # config/api/idempotency.py ages claims in SQL (Now() minus a window), which SQLite computes its own way.
    env = migrated(tmp_path)
    posts = run([sys.executable, "-c", KEYED_POSTS], env)

    assert posts.returncode == 0, posts.stderr[-2000:]
    answered = dict(line.split(" ", 1) for line in posts.stdout.splitlines())
    assert answered == {"replayed": "201 true True", "in-flight": "409", "abandoned": "201"}, posts.stderr[-2000:]
