from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


class JSONObjectParser(JSONParser):
    """Bodies are JSON objects: an array, a string, invalid or absurdly nested JSON is 400 MALFORMED_REQUEST."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:  # "[[[[…" a few thousand deep: Python's decoder gives up, not a ValueError
            raise ParseError("The request body is nested too deeply.")
        if not isinstance(data, dict):
            raise ParseError("The request body must be a JSON object.")
        return data
