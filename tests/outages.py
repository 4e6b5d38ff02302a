"""A broker that refuses every message, for tests of what a committed change does when its follow-up task
cannot be queued: patched over a task's `.delay`, it raises what kombu raises when the broker refuses the
connection (the reliability tests kill a real one; these tests need the refusal at one precise call)."""

from kombu.exceptions import OperationalError


def broker_down(*args, **kwargs):
    raise OperationalError("[Errno 111] Connection refused")
