"""What the model-based tests (tests/*/test_*_life_model.py, tests/webhooks/test_delivery_model.py) share: how CI
runs their state machines, the frozen clock and numbering every example starts with, and the worker messages
they hold back to run later, in any order, or lose."""

import functools
import itertools
import os
from datetime import datetime
from unittest import mock

import time_machine
from celery.app.task import Task
from hypothesis import HealthCheck, seed, settings
from hypothesis.stateful import RuleBasedStateMachine, run_state_machine_as_test

_original_apply_async = Task.apply_async


def run_in_ci(machine, *, steps: int, histories: int, examples: int = 20) -> None:
    """Derandomized and without the example database: the same histories on every run, bounded for CI.

    `histories` is the seed they come from. Derandomized, hypothesis would seed from a digest of the machine
    class's source, so any edit to the class (a comment, a helper moved to ModelMachine) would change which
    histories CI runs; pinned, only a change to what the rules draw or do changes them. Each model's value is the
    digest its class had before ModelMachine, so CI still runs the histories it ran then (but the webhook
    delivery model's: the partner's PATCH rules, added since, draw other histories from the same seed).

    To hunt locally, LAYERS_MODEL_HUNT=<examples> (and LAYERS_MODEL_STEPS=<steps>) runs that many randomized
    histories instead (the seed is not used): how each model found its defects."""
    hunt = int(os.environ.get("LAYERS_MODEL_HUNT") or 0)
    run_state_machine_as_test(
        machine if hunt else seed(histories)(functools.partial(machine)),
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


def every_row(client, path: str, **params) -> dict[str, dict]:
    """Every row a partner's list shows, page after page (its cursors followed to the end), by id."""
    out, cursor = {}, None
    while True:
        response = client.get(path, {"limit": 200, **params, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.content
        body = response.json()
        out.update({row["id"]: row for row in body["data"]})
        cursor = body["nextCursor"]
        if not cursor:
            return out


def run_held(task, args, kwargs) -> None:
    """Run a held message in this thread, as a worker would, raising what it raised. Not `.get()` alone: the
    result is already there (apply runs it), and Celery refuses a plain get() once a worker has run in this
    process (an earlier test's): "Never call result.get() within a task!", in the full suite only."""
    task.apply(args=args, kwargs=kwargs).get(disable_sync_subtasks=False)


class ModelMachine(RuleBasedStateMachine):
    """A model's state machine, set up the same way in every model: each example gets the next number (counted per
    machine, from 0, so the derandomized histories name the same things on every run), starts on its own frozen
    clock (`self.traveller` moves it), and has the worker messages named in HELD kept in `self.held`.

    A subclass says where its clock starts (`starts_at`, with `self.n` already set), builds its example in
    `_begin` (under that clock), and ends in `_end` what later examples, which share the database, must not work
    on. If `_begin` raises, `_end` is not run (there is nothing whole to end): the clock and the routing are
    stopped and the error goes on. Nothing here is a rule, so the rules and the order hypothesis draws them in
    are the subclass's alone."""

    HELD: frozenset[str] = frozenset()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._examples = itertools.count()

    def __init__(self):
        super().__init__()
        self.n = next(self._examples)
        self.clock = time_machine.travel(self.starts_at(), tick=False)
        self.traveller = self.clock.start()
        self.held: list[tuple] = []
        # A model holding nothing leaves apply_async unpatched, as it always has.
        self.routing = holding(self.HELD, self.held) if self.HELD else None
        if self.routing is not None:
            self.routing.start()
        try:
            self._begin()
        except BaseException:
            self._release()
            raise

    def starts_at(self) -> datetime:
        raise NotImplementedError

    def _begin(self) -> None:
        pass

    def _end(self) -> None:
        pass

    def _take_held(self, index: int) -> tuple | None:
        """The held message a worker takes, any of them (`index` picks which): (task, args, kwargs), or None when
        none is held."""
        return self.held.pop(index % len(self.held)) if self.held else None

    def _release(self) -> None:
        """Undo what the machine patched; a subclass that patches more stops it here, then calls this."""
        if self.routing is not None:
            self.routing.stop()
        self.clock.stop()

    def teardown(self):
        try:
            self._end()
        finally:
            self._release()
