"""Webhook sends wait on partners' servers, so the relay's tasks go to a queue of their own and publishing
stays on the default one; so does the bulk work staff hand to workers from the admin. `make run` starts a worker
for each, so that no queue is left unconsumed (a task routed where no worker listens would never run)."""

import os
import re
import shlex
import subprocess

import pytest
from django.conf import settings

from config.celery import app

WEBHOOK_TASKS = [
    "accounts.webhooks.tasks.webhook_fan_out",
    "accounts.webhooks.tasks.webhook_deliver",
    "accounts.webhooks.tasks.webhook_send",
    "accounts.webhooks.tasks.webhooks_tick",
]
PUBLISHING_TASKS = ["scheduling.tasks.dispatch_due_posts", "scheduling.tasks.publish_posts"]
# The rest of a staff action over a whole list (accounts/admin_bulk.py), and the revokes an admin revoke or an
# off-boarding hands to a worker: a 200,000-row resend is 99 tasks queued at once, 50,000 revoked accounts 25
# tasks of 2,000, each account making platform calls (one task per account before: still routed, for a deploy).
BULK_TASKS = [
    "scheduling.tasks.posts_retry_by_staff",
    "scheduling.tasks.posts_cancel_by_staff",
    "accounts.webhooks.tasks.deliveries_resend_by_staff",
    "leasing.tasks.leases_release_by_staff",
    "accounts.tasks.social_account_revoke_by_staff",
    "accounts.tasks.social_accounts_revoke_by_staff",
    "accounts.tasks.social_accounts_revoke_offboarded",
]


@pytest.fixture(autouse=True, scope="module")
def tasks_loaded():
    app.loader.import_default_modules()  # what a worker does at start: every app's tasks registered


def queue_of(task_name: str) -> str:
    return app.amqp.router.route({}, task_name)["queue"].name


@pytest.mark.parametrize("task_name", WEBHOOK_TASKS)
def test_the_webhook_relay_runs_on_its_own_queue(task_name):
    assert task_name in app.tasks
    assert queue_of(task_name) == settings.LAYERS_WEBHOOK_QUEUE == "webhooks"


@pytest.mark.parametrize("task_name", PUBLISHING_TASKS)
def test_publishing_stays_on_the_default_queue(task_name):
    assert task_name in app.tasks
    assert queue_of(task_name) == app.conf.task_default_queue


@pytest.mark.parametrize("task_name", BULK_TASKS)
def test_staff_bulk_work_runs_on_its_own_queue_which_a_worker_of_make_run_and_of_the_readme_consumes(task_name):
    # On the default queue, the tasks of one "select all" were queued ahead of every publish queued after the
    # click, and the publishing threads took them first: a 40,000-post retry held publishing 18-47 s.
    assert task_name in app.tasks
    assert queue_of(task_name) == "bulk"
    assert settings.LAYERS_BULK_QUEUE == "bulk"
    assert "bulk" in workers_of_make_run()
    readme = (settings.BASE_DIR / "README.md").read_text()
    production = readme[readme.index("**Production**") : readme.index("## Architecture")]
    documented = re.findall(r"`celery -A config worker [^`]+`", production)
    assert any(re.search(r"-Q (\S+,)?bulk\b", command) for command in documented), documented


def workers_of_make_run(env: dict | None = None) -> set[str]:
    """The queues the workers `make run` would start consume (its recipe, expanded but not run)."""
    recipe = subprocess.run(
        ["make", "-n", "run"], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=120, check=True
    ).stdout
    consumed = set()
    for line in recipe.splitlines():
        if "celery -A config worker" not in line:
            continue
        args = shlex.split(line.rstrip("& \\"))
        assert "-Q" in args, line  # a worker without -Q would consume the default queue only
        consumed.update(args[args.index("-Q") + 1].split(","))
    return consumed


def test_make_run_starts_a_worker_for_every_queue():
    consumed = workers_of_make_run()
    # Every registered task of the project (Celery's own excluded), wherever it is routed.
    ours = [name for name in app.tasks if not name.startswith("celery.")]
    assert set(WEBHOOK_TASKS + PUBLISHING_TASKS + BULK_TASKS) <= set(ours)
    unconsumed = {name: queue_of(name) for name in ours if queue_of(name) not in consumed}
    assert unconsumed == {}, consumed


def test_make_run_listens_on_the_webhook_queue_named_in_dot_env(tmp_path):
    # The settings read .env; the Makefile only saw the shell's environment, so a queue named in .env had
    # no worker and no webhook was ever sent.
    env_file = tmp_path / ".env"
    env_file.write_text("LAYERS_WEBHOOK_QUEUE=hooks\n")
    env = {k: v for k, v in os.environ.items() if k not in ("LAYERS_WEBHOOK_QUEUE", "DJANGO_SETTINGS_MODULE")}
    assert "hooks" in workers_of_make_run({**env, "LAYERS_ENV_FILE": str(env_file)})


def test_the_readmes_production_commands_start_workers_and_beat_as_make_run_does():
    # Production ran workers without --concurrency or -l because the README's commands lacked them.
    recipe = subprocess.run(
        ["make", "-n", "run"], cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=120, check=True
    ).stdout
    started = set()
    for line in recipe.splitlines():
        if "/celery -A config " in line:
            args = shlex.split(line.rstrip("& \\"))
            if "-n" in args:  # the node name: make run's own, for two workers on one machine
                del args[args.index("-n") : args.index("-n") + 2]
            started.add(" ".join(["celery", *args[1:]]))
    readme = (settings.BASE_DIR / "README.md").read_text()
    production = readme[readme.index("**Production**") : readme.index("## Architecture")]
    documented = set(re.findall(r"`(celery -A config [^`]+)`", production))
    assert len(started) == 4 and documented == started, (documented, started)


def test_make_run_binds_the_port_its_settings_give_the_oauth_callbacks(tmp_path):
    # PORT in .env made LAYERS_PUBLIC_URL (callbacks, the banner) name that port while gunicorn bound 8000:
    # every authorize URL sent customers to a port nothing listened on.
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=18599\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PORT", "DJANGO_SETTINGS_MODULE", "LAYERS_PUBLIC_URL")}

    def bound(*args: str, **extra: str) -> str:
        recipe = subprocess.run(
            ["make", "-n", "run", *args],
            cwd=settings.BASE_DIR,
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        (line,) = [line for line in recipe.splitlines() if "gunicorn config.wsgi" in line]
        return shlex.split(line.rstrip("& \\"))[-1]

    assert bound(LAYERS_ENV_FILE=str(env_file)) == "127.0.0.1:18599"
    assert bound("PORT=8765", LAYERS_ENV_FILE=str(env_file)) == "127.0.0.1:8765"  # the command line wins
    assert bound() == "127.0.0.1:8000"
