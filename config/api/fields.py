"""Serializer building blocks shared by every app's serializers."""

import re
from datetime import UTC, datetime

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers


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
    }

    def to_internal_value(self, value):
        if isinstance(value, str):
            # Whitespace around the value (a templated body's newline) is forgiven, as it always was: JSON's
            # own whitespace only, and nothing inside the timestamp.
            text = value.strip(" \t\r\n")
            parsed = parse_rfc3339(text)
            if parsed is None:
                self.fail("naive" if _RFC3339_NAIVE.fullmatch(text) else "invalid")
            value = parsed
        return super().to_internal_value(value)


def _wrong_json_type(field, value) -> str | None:
    """Why `value` is not of the JSON type `field` takes, or None. DRF's fields convert: a text field turns
    the number 1e309 into the caption "inf", an integer field reads "12", "١٢" (other scripts' digits) or
    true as a count. A partner's JSON says what it means: a number is not text, text is not a number."""
    if value is None:
        return None  # the field's own allow_null decides
    if isinstance(field, serializers.CharField) and not isinstance(value, str):
        return "Not a valid string."
    if isinstance(field, serializers.IntegerField) and isinstance(value, (bool, str)):
        return "A valid integer is required."
    return None


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not know (a typo must not be silently ignored) and values of the wrong JSON
    type (see _wrong_json_type). `rejected_fields` maps fields with a specific reason to that reason."""

    rejected_fields: dict[str, str] = {}

    def to_internal_value(self, data):
        if isinstance(data, dict):
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
    """A timestamp exactly as DRF's DateTimeField outputs it (RFC 3339 in UTC with `Z`), or None, for the
    output serializers whose rows are written out by hand (list endpoints: see their to_representation).

    Written out rather than delegated to a DateTimeField: the field looks up the current timezone on every
    call (a context-local read), which was a tenth of a page's time. The API's timezone is always UTC
    (TIME_ZONE, never activated otherwise); tests/perf/test_output_equivalence.py compares the two."""
    if value is None:
        return None
    # DRF reads a naive value in the current timezone (UTC); isoformat, then "+00:00" → "Z".
    text = (value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text
