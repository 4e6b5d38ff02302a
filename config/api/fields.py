"""Serializer building blocks shared by every app's serializers."""

from datetime import UTC, datetime

from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers


@extend_schema_field(OpenApiTypes.INT64)
class Int64Field(serializers.IntegerField):
    """An integer that can pass 2^31 (cents of a balance, a video's views): documented as int64, so that
    clients generated for typed languages do not read it into a 32-bit integer."""


class AwareDateTimeField(serializers.DateTimeField):
    """RFC 3339 timestamp that must carry its timezone (`Z` or an offset). DRF would silently read a
    naive timestamp in the server's timezone; a partner's scheduling mistake must be an error instead."""

    default_error_messages = {"naive": "Must include a timezone (e.g. 2026-04-20T17:00:00Z)."}

    def to_internal_value(self, value):
        if isinstance(value, str):
            value = value.strip()
            if len(value) > 10 and value[10] == "t":  # RFC 3339 allows lower-case "t" and "z"
                value = f"{value[:10]}T{value[11:]}"
            if value.endswith("z"):
                value = value[:-1] + "Z"
            # The parser DRF itself uses (it also reads "2026-04-20T7:00:00", which datetime.fromisoformat
            # refuses): whatever DRF would accept must be checked for its timezone here.
            try:
                parsed = parse_datetime(value)
            except ValueError:
                parsed = None
            if parsed is not None and parsed.tzinfo is None:
                self.fail("naive")
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
