"""Serializer building blocks shared by every app's serializers."""

import copy
import json
import math
import re
from datetime import UTC, datetime
from functools import cache

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.settings import api_settings


@extend_schema_field(OpenApiTypes.INT64)
class Int64Field(serializers.IntegerField):
    """An integer that can pass 2^31 (cents of a balance, a video's views): documented as int64, so that
    clients generated for typed languages do not read it into a 32-bit integer."""


# RFC 3339's date-time (section 5.6), in ASCII digits: seconds required, any number of fraction digits,
# `Z` or a ±hh:mm offset. A space for the "T" is the RFC's own allowance; "t" and "z" are case-insensitive.
_DATE_TIME = r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ]([0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?)"
RFC3339 = re.compile(_DATE_TIME + r"([Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])")
# The same without its timezone: a partner's mistake worth its own message.
_RFC3339_NAIVE = re.compile(_DATE_TIME)


def parse_rfc3339(text: str) -> datetime | None:
    """The aware datetime RFC 3339 `text` stands for, or None. Python's and Django's parsers read much more
    (other scripts' digits, a NUL, ISO 8601's week dates and basic format, minutes of offset past 59
    carried into the hour, offsets with seconds): every timestamp a partner sends is checked here first."""
    match = RFC3339.fullmatch(text)
    if match is None:
        return None
    date, time, offset = match.groups()
    try:
        return datetime.fromisoformat(f"{date}T{time}{'+00:00' if offset in ('Z', 'z') else offset}")
    except ValueError:  # in the grammar but no time: month 13, hour 24, a leap second
        return None


class AwareDateTimeField(serializers.DateTimeField):
    """RFC 3339 timestamp that must carry its timezone (`Z` or an offset). DRF would silently read a
    naive timestamp in the server's timezone; a partner's scheduling mistake must be an error instead."""

    default_error_messages = {
        "naive": "Must include a timezone (e.g. 2026-04-20T17:00:00Z).",
        "invalid": "Must be an RFC 3339 timestamp with a timezone, e.g. 2026-04-20T17:00:00Z or "
        "2026-04-20T19:00:00.250+02:00.",
        # RFC 3339 writes a leap second :60: the timestamp is well formed, and "not RFC 3339" would be untrue.
        # None is planned, and a time that may never exist decides nothing well: said, not taken.
        "leap_second": "A leap second (:60) is not taken: send :59, or the next minute's :00.",
        # DRF's "Datetime value out of range." (a time past year 9999 or before year 1 once in UTC) named no range.
        "overflow": "Must fall within the years 0001 to 9999 once converted to UTC.",
    }

    def to_internal_value(self, value):
        if isinstance(value, str):
            # Whitespace around the value (a templated body's newline) is forgiven, as it always was: JSON's
            # own whitespace only, and nothing inside the timestamp.
            text = value.strip(" \t\r\n")
            parsed = parse_rfc3339(text)
            if parsed is None:
                if (match := RFC3339.fullmatch(text)) and match.group(2)[6:8] == "60":
                    self.fail("leap_second")
                self.fail("naive" if _RFC3339_NAIVE.fullmatch(text) else "invalid")
            value = parsed
        return super().to_internal_value(value)


# --- What a partner reads when a value is refused ---------------------------------------------------
# DRF's own messages speak Python: `"True" is not a valid choice.`, `Expected a list of items but got type
# "dict".`, `Invalid data. Expected a dictionary, but got str.`, and an empty list was said three ways. The
# partner wrote JSON, so every message names JSON's values and types, says what to send, and says one mistake
# one way on every endpoint. Set once here for every field of every input (PartnerMessages, which
# StrictSerializer and every list's filters use), so a field added later speaks the same without a word of
# its own; a field's own error_messages, and a project field's own defaults, still win.

# The JSON type a value decoded from JSON (or the name of its Python type, as DRF passes it) stands for.
_JSON_TYPES = {
    "dict": "an object",
    "list": "an array",
    "str": "a string",
    "bool": "a boolean",
    "int": "a number",
    "float": "a number",
    "NoneType": "null",
}
# What a message quotes of the partner's value: enough to recognise it, not a megabyte back.
EXCERPT_LIMIT = 100


def json_type(value) -> str:
    """The JSON type of `value` as a message names it: "an object", "a string", …"""
    return _JSON_TYPES.get(type(value).__name__, "another type")


def json_excerpt(value) -> str:
    """`value` written as the partner wrote it, in JSON (`true`, `{"name": "tiktok"}`, `"TikTok"`), cut after
    EXCERPT_LIMIT characters. A value nested too deeply to write back is named by its type."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return json_type(value)
    return text if len(text) <= EXCERPT_LIMIT else text[:EXCERPT_LIMIT] + "…"


class JsonMessage(str):
    """A message template DRF fills with what the partner sent: `{input}` (the value) is written as JSON, not
    with Python's str() (`True`, `{'name': 'tiktok'}`), and `{input_type}` / `{datatype}`, which DRF fills with
    a Python type name ("dict"), become the JSON type ("an object"). DRF fills every template by calling its
    `format`; the text stays a str for everything else."""

    def format(self, *args, **kwargs):
        for key in ("input_type", "datatype"):
            if key in kwargs:
                kwargs[key] = _JSON_TYPES.get(str(kwargs[key]), "another type")
        if "input" in kwargs:
            kwargs["input"] = json_excerpt(kwargs["input"])
        return super().format(*args, **kwargs)


def _items(count: int) -> str:
    return f"{count} item" if count == 1 else f"{count} items"


def _messages(field) -> dict[str, str]:
    """The partner's wording of the messages `field` can give, by DRF's keys."""
    if isinstance(field, serializers.ChoiceField):
        accepted = ", ".join(str(choice) for choice in field.choices).replace("{", "{{").replace("}", "}}")
        messages = {"invalid_choice": JsonMessage(f"{{input}} is not one of: {accepted}.")}
        if isinstance(field, serializers.MultipleChoiceField):
            messages |= {
                "not_a_list": JsonMessage("Expected a JSON array, not {input_type}."),
                "empty": f"Give at least {_items(1)}.",
            }
        return messages
    if isinstance(field, serializers.ListField | serializers.ListSerializer):
        return {
            "not_a_list": JsonMessage("Expected a JSON array, not {input_type}."),
            "empty": f"Give at least {_items(1)}.",
            # Written with the field's own bounds: "1 item", "35 items".
            "min_length": f"Give at least {_items(field.min_length or 0)}.",
            "max_length": f"Give at most {_items(field.max_length or 0)}.",
        }
    if isinstance(field, serializers.DictField):
        return {"not_a_dict": JsonMessage("Expected a JSON object, not {input_type}."), "empty": "Give at least 1 key."}
    if isinstance(field, serializers.Serializer):
        return {"invalid": JsonMessage("Expected a JSON object, not {datatype}.")}
    if isinstance(field, serializers.URLField):
        return {**_string_messages(), "invalid": "Not a valid URL."}
    if isinstance(field, serializers.CharField):
        return _string_messages()
    if isinstance(field, serializers.IntegerField):
        return {
            # DRF fails "invalid" without the value (fields.IntegerField.to_internal_value): no {input} here, or
            # filling the message raised KeyError, a 500 for `"count": 1.5`.
            "invalid": "Expected a JSON integer.",
            "max_string_length": "Expected a JSON integer.",
            "min_value": "Must be at least {min_value}.",
            "max_value": "Must be at most {max_value}.",
        }
    if isinstance(field, serializers.BooleanField):
        return {"invalid": JsonMessage("Expected true or false, not {input}.")}
    return {}


def _string_messages() -> dict[str, str]:
    return {
        "invalid": "Expected a JSON string.",  # what StrictSerializer's check says, with the type it was sent
        "max_length": "Must be at most {max_length} characters.",
        "min_length": "Must be at least {min_length} characters.",
    }


def _drf_defaults(field) -> dict:
    """The messages DRF itself gives `field` (its own classes' defaults, not a project subclass's)."""
    defaults: dict = {}
    for cls in reversed(type(field).__mro__):
        if cls.__module__.startswith("rest_framework."):
            defaults.update(cls.__dict__.get("default_error_messages", {}))
    return defaults


def partner_field(field):
    """`field` built again with the partner's wording (_messages) wherever it would give DRF's own, and so
    its child (a list's items, a nested object's fields through their own PartnerMessages). Built again with
    DRF's `error_messages` argument rather than edited: DRF turns some messages into validators as it builds a
    field (a list's lengths, a URL), and those must carry the same words."""
    drf = _drf_defaults(field)
    ours = {key: text for key, text in _messages(field).items() if key in drf and field.error_messages[key] == drf[key]}
    child = getattr(field, "child", None)
    if not ours and child is None:
        return field
    kwargs = dict(field._kwargs)
    if "child" in kwargs:
        # A copy: the child was bound to `field` as it was built, and a field is bound to one parent only.
        kwargs["child"] = partner_field(copy.deepcopy(child))
    kwargs["error_messages"] = {**kwargs.get("error_messages", {}), **ours}
    return type(field)(*field._args, **kwargs)


def partner_fields(fields: dict) -> dict:
    return {name: partner_field(field) for name, field in fields.items()}


class PartnerMessages(serializers.Serializer):
    """Every field of this serializer, nested ones included, speaks as _messages says."""

    default_error_messages = {"invalid": JsonMessage("Expected a JSON object, not {datatype}.")}

    def get_fields(self):
        return partner_fields(super().get_fields())


@cache
def with_partner_messages(serializer_class: type) -> type:
    """`serializer_class` speaking as PartnerMessages does (for list filters, declared as plain serializers)."""
    if issubclass(serializer_class, PartnerMessages):
        return serializer_class
    return type(
        serializer_class.__name__, (PartnerMessages, serializer_class), {"__module__": serializer_class.__module__}
    )


def _wrong_json_type(field, value) -> str | None:
    """Why `value` is not of the JSON type `field` takes, or None. DRF's fields convert: a text field turns
    the number 1e309 into the caption "inf", an integer field reads "12", "١٢" (other scripts' digits) or
    true as a count, a boolean field "false" as false and 1 as true. A partner's JSON says what it means: a number
    is not text, text is not a number, and only true and false are booleans."""
    if value is None:
        return None  # the field's own allow_null decides
    if isinstance(field, serializers.CharField) and not isinstance(value, str):
        return f"Expected a JSON string, not {json_type(value)}."
    if isinstance(field, serializers.BooleanField) and not isinstance(value, bool):
        # DRF reads "true", "yes", 1 and "on" as true: a PATCH `"enabled": "false"` must not enable anything.
        return f"Expected true or false, not {json_excerpt(value)}."
    if isinstance(field, serializers.IntegerField):
        if isinstance(value, bool | str | list | dict):
            return f"Expected an integer, not {json_type(value)}."
        if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            return "Expected an integer, not a number with a fraction or out of range."
    return None


class StrictSerializer(PartnerMessages):
    """Refuses fields it does not know (a typo must not be silently ignored) and values of the wrong JSON
    type (see _wrong_json_type). `rejected_fields` maps fields with a specific reason to that reason."""

    rejected_fields: dict[str, str] = {}
    # A PATCH body's fields are all optional, but `{}` would change nothing and answer 200 as if it had: it must
    # carry at least this many (the schema says so as minProperties: config.api.schema.StrictSerializerScheme).
    min_fields = 0

    def to_internal_value(self, data):
        if isinstance(data, dict):
            if len(data) < self.min_fields:
                raise serializers.ValidationError(
                    {api_settings.NON_FIELD_ERRORS_KEY: [f"Send at least one of: {', '.join(self.fields)}."]}
                )
            errors = {}
            for key, value in data.items():
                field = self.fields.get(key)
                if field is None:
                    errors[key] = [self.rejected_fields.get(key, "Unknown field.")]
                elif reason := _wrong_json_type(field, value):
                    errors[key] = [reason]
                elif isinstance(field, serializers.ListField) and isinstance(value, list):
                    items = {i: [why] for i, item in enumerate(value) if (why := _wrong_json_type(field.child, item))}
                    if items:
                        errors[key] = items
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)


def datetime_output(value: datetime | None) -> str | None:
    """A timestamp as every answer writes it, or None: RFC 3339 in UTC with `Z` and exactly three fraction
    digits, `2026-04-20T17:00:00.000Z`, the microseconds cut (never rounded: a time is never written later
    than it was). One shape for every value of every field: DRF's isoformat wrote `…:00Z` at a whole second
    and `…:00.500000Z` otherwise, and a client reading one shape failed on the other (Swift's
    ISO8601DateFormatter reads one or the other as its .withFractionalSeconds is set; Java's `ss.SSSX` no
    six digits). Three digits are what JavaScript's Date.toISOString writes and what those parsers, Go's
    time.RFC3339 and Python's fromisoformat all read. Nothing a partner sends back is compared at the
    microsecond: cursors carry their own exact time (config/api/pagination.py), events are polled by
    position.

    Written out rather than with a DateTimeField: the field looks up the current timezone on every call (a
    context-local read), which was a tenth of a page's time. The API's timezone is always UTC (TIME_ZONE,
    never activated otherwise): a naive value is read in it."""
    if value is None:
        return None
    value = value.replace(tzinfo=None) if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="milliseconds") + "Z"  # isoformat cuts to milliseconds, it does not round


def to_the_millisecond(value: datetime) -> datetime:
    """`value` cut to the millisecond, as datetime_output writes it. A time that decides something a partner
    can check (a ledger entry's order, a release against the month that starts) is stored so: the time the
    partner reads is then the time that decided, not one up to a millisecond later."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


class TimestampField(serializers.DateTimeField):
    """An output timestamp (createdAt, scheduledFor, …), written as datetime_output writes it. Every output
    serializer declares its times with it (tests/config/test_timestamp_shape.py checks), so a row written
    out by hand and a row written field by field read the same."""

    def to_representation(self, value):
        return value if isinstance(value, str) else datetime_output(value)
