"""A JSON reader for JSON from outside whose bad forms all raise ValueError: the sandbox's request bodies and
the JSON a form field carries; the platforms' and managed providers' answers and Instagram's
X-Business-Use-Case-Usage header in the clients. Outside the sandbox package, which the clients must not need."""

import json


def json_loads(text: bytes | str):
    """json.loads, raising ValueError for JSON nested too deeply too: Python's decoder gives up on "[[[[…" a
    few thousand deep with a RecursionError, which the views' `except ValueError` let through as a 500
    (and the Instagram client's, out of a call whose answer it had)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("The JSON is nested too deeply.") from None
