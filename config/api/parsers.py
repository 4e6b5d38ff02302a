import re

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

# Half of a UTF-16 pair. JSON lets a body write one (`"\ud800"`) and Python decodes it, but it is no
# character: it cannot be stored, nor echoed back in an error, nor written as UTF-8.
LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# What PostgreSQL's text and jsonb cannot hold.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def any_string_matches(value, pattern: re.Pattern) -> bool:
    """Whether a string anywhere in the JSON-like `value` (dict keys included) matches `pattern`. Walked
    without recursion: a body may be nested as deeply as the JSON decoder allows."""
    stack = [value]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if pattern.search(value):
                return True
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False


class JSONObjectParser(JSONParser):
    """Bodies are JSON objects: an array, a string, invalid or absurdly nested JSON, or a string that is not
    Unicode text (a lone surrogate) is 400 MALFORMED_REQUEST."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:  # "[[[[…" a few thousand deep: Python's decoder gives up, not a ValueError
            raise ParseError("The request body is nested too deeply.")
        if not isinstance(data, dict):
            raise ParseError("The request body must be a JSON object.")
        if any_string_matches(data, LONE_SURROGATE):
            raise ParseError("The request body holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text.")
        return data
