"""The sandbox's one JSON reader, for request bodies and the JSON a form field carries."""

import json


def json_loads(text: bytes | str):
    """json.loads, raising ValueError for JSON nested too deeply too: Python's decoder gives up on "[[[[…" a
    few thousand deep with a RecursionError, which the views' `except ValueError` let through as a 500."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("The JSON is nested too deeply.") from None
