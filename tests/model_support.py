"""What the model-based tests (tests/*/test_*_life_model.py) share: how CI runs their state machines, and the
worker messages they hold back to run later, in any order, or lose."""

import os
from unittest import mock

from celery.app.task import Task
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

_original_apply_async = Task.apply_async


def run_in_ci(machine, *, steps: int, examples: int = 20) -> None:
    """Derandomized and without the example database: the same histories on every run, bounded for CI.

    To hunt locally, LAYERS_MODEL_HUNT=<examples> (and LAYERS_MODEL_STEPS=<steps>) runs that many randomized
    histories instead: how each model found its defects."""
    hunt = int(os.environ.get("LAYERS_MODEL_HUNT") or 0)
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=hunt or examples,
            stateful_step_count=int(os.environ.get("LAYERS_MODEL_STEPS") or steps) if hunt else steps,
            deadline=None,
            derandomize=not hunt,
            database=None,
            suppress_health_check=list(HealthCheck),
        ),
    )


def holding(names: set[str], held: list):
    """A patch (start() / stop()) under which the Celery tasks named in `names` are kept in `held`, as (task,
    args, kwargs), instead of run; every other task runs as the test settings run it (inline)."""

    def route(task, args=None, kwargs=None, **options):
        if task.name in names:
            held.append((task, tuple(args or ()), dict(kwargs or {})))
            return None
        return _original_apply_async(task, args, kwargs, **options)

    return mock.patch.object(Task, "apply_async", route)
