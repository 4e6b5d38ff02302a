"""Running code side by side on real PostgreSQL: threads, each with its own database connection."""

import threading

from django.db import connection


def run_in_threads(*targets):
    """Start every target at the same moment, each on its own connection; return their results in order,
    failing with the errors any of them raised."""
    barrier = threading.Barrier(len(targets))
    errors: list[BaseException] = []
    results: list = [None] * len(targets)

    def wrap(i, target):
        try:
            barrier.wait()
            results[i] = target()
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=wrap, args=(i, t)) for i, t in enumerate(targets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [], errors
    return results
