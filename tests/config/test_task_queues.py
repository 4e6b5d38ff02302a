"""Webhook sends wait on partners' servers, so the relay's tasks go to a queue of their own and publishing
stays on the default one; `make run` starts a worker for each, so that no queue is left unconsumed (a task
routed where no worker listens would never run)."""

import re
import shlex
from pathlib import Path

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


def test_make_run_starts_a_worker_for_every_queue():
    makefile = (Path(settings.BASE_DIR) / "Makefile").read_text()
    recipe = makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    variables = {
        "$(WEBHOOK_QUEUE)": re.search(r"^WEBHOOK_QUEUE := \$\(or \$\(LAYERS_WEBHOOK_QUEUE\),(\w+)\)", makefile, re.M)[1]
    }
    consumed = set()
    for line in recipe.splitlines():
        if "celery -A config worker" not in line:
            continue
        for name, value in variables.items():
            line = line.replace(name, value)
        args = shlex.split(line.rstrip("& \\"))
        assert "-Q" in args, line  # a worker without -Q would consume the default queue only
        consumed.update(args[args.index("-Q") + 1].split(","))
    # Every registered task of the project (Celery's own excluded), wherever it is routed.
    ours = [name for name in app.tasks if not name.startswith("celery.")]
    assert set(WEBHOOK_TASKS + PUBLISHING_TASKS) <= set(ours)
    unconsumed = {name: queue_of(name) for name in ours if queue_of(name) not in consumed}
    assert unconsumed == {}, consumed
