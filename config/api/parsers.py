import codecs
import json
import re

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from config.api.fields import json_type

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


class _RepeatedKeys:
    """`object_pairs_hook` for the JSON decoder: builds each object as the decoder would (a dict) and notes
    every key written more than once in one object, at any depth, in the order they are met."""

    def __init__(self):
        self.keys: dict[str, None] = {}  # a set that keeps its order: a body may repeat many thousand keys

    def __call__(self, pairs: list[tuple[str, object]]) -> dict:
        obj = dict(pairs)
        if len(obj) < len(pairs):  # only then is there anything to look for
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    self.keys[key] = None
                seen.add(key)
        return obj


# A repeated key is quoted in the message as JSON writes it (quotes and control characters escaped), a very
# long one cut, and at most NAMES_LIMIT are named: the message names them, it need not carry a megabyte back.
NAME_LIMIT = 100
NAMES_LIMIT = 20


def _quoted(key: str) -> str:
    quoted = json.dumps(key[:NAME_LIMIT], ensure_ascii=False)
    return quoted if len(key) <= NAME_LIMIT else quoted[:-1] + '…"'


class _NotAJsonNumber(ValueError):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def _refuse_constant(name: str):
    """`parse_constant` for the JSON decoder: NaN, Infinity and -Infinity are Python's, not JSON's (RFC 8259 6)."""
    raise _NotAJsonNumber(name)


class JSONObjectParser(JSONParser):
    """Bodies are JSON objects: an array, a string, invalid or absurdly nested JSON, a string that is not
    Unicode text (a lone surrogate), or an object with a key written twice is 400 MALFORMED_REQUEST.

    A repeated key is refused as the other ways of writing a body that does not say one thing are: RFC 8259
    (4) leaves such an object's meaning to each decoder, Python's keeping the last copy and others the first, so
    `{"mediaType": "image", "mediaType": "video"}` was silently a video. It is the JSON text that is ambiguous,
    found by the decoder before any field is read, hence the parser's 400 rather than a field's 422; the message
    names every such key (a query parameter given twice is a 422 because the query is read field by field)."""

    def parse(self, stream, media_type=None, parser_context=None):
        # DRF's JSONParser.parse, with the hook that notes repeated keys, and always read as UTF-8: RFC 8259
        # (8.1, 11) says JSON is UTF-8 and a charset parameter has "no effect on compliant recipients". DRF
        # decoded by the label, so a UTF-8 body sent as `charset=ISO-8859-1` was stored as "CafÃ©" (and each
        # CJK character grew to three); a body really written in Latin-1 is not UTF-8 and is refused (400).
        repeated = _RepeatedKeys()
        try:
            decoded = codecs.getreader("utf-8")(stream)
            data = json.load(
                decoded, parse_constant=_refuse_constant if self.strict else None, object_pairs_hook=repeated
            )
        except RecursionError:  # "[[[[…" a few thousand deep: Python's decoder gives up, not a ValueError
            raise ParseError("The request body is nested too deeply.")
        # Where the body stops being JSON, in the partner's terms: Python's own wording ("JSON parse error -
        # Expecting property name enclosed in double quotes: line 1 column 2 (char 1)", "'utf-8' codec can't
        # decode byte 0xe9…") named its internals and counted characters from 0.
        except UnicodeDecodeError as exc:
            raise ParseError(f"The request body is not UTF-8 text (at byte offset {exc.start}).")
        except json.JSONDecodeError as exc:
            raise ParseError(f"The request body is not valid JSON: line {exc.lineno}, column {exc.colno}.")
        except _NotAJsonNumber as exc:
            raise ParseError(f"The request body is not valid JSON: {exc.name} is not a JSON number.")
        except ValueError:
            raise ParseError("The request body is not valid JSON.")
        if not isinstance(data, dict):
            raise ParseError(f"The request body must be a JSON object, not {json_type(data)}.")
        if any_string_matches(data, LONE_SURROGATE):
            raise ParseError("The request body holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text.")
        if repeated.keys:
            keys = list(repeated.keys)
            several = len(keys) > 1
            names = ", ".join(_quoted(key) for key in keys[:NAMES_LIMIT])
            if len(keys) > NAMES_LIMIT:
                names += f" (and {len(keys) - NAMES_LIMIT} more)"
            raise ParseError(
                f"The request body gives the key{'s' if several else ''} {names} more than once in one object: "
                "send each key once."
            )
        return data
