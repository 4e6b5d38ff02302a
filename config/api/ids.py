"""Opaque, typed ids (`prj_<uuid>`, `sa_<uuid>`, `lreq_<ULID>` …). The id stored in the database is the
public string itself, so a lookup is one primary-key match and nothing ever translates ids.
A string that does not have the exact shape of its type never reaches the database: it is a 404."""

import re
import secrets
import time
import uuid

from django.db import models
from ulid import ULID

_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_HEX32 = r"[0-9a-f]{32}"
_ULID = r"[0-9A-HJKMNP-TV-Z]{26}"


def _time_ordered_hex() -> str:
    """48-bit milliseconds + 80 random bits, as 32 hex digits (the layout of a UUIDv7 without its version
    bits): ids of rows written together sit together in the primary-key index, which keeps bulk inserts
    into a large table cheap."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


# prefix → (generator, regex of the part after the prefix)
KINDS = {
    "org": (lambda: uuid.uuid4().hex, _HEX32),
    "prj": (lambda: str(uuid.uuid4()), _UUID),
    "key": (lambda: uuid.uuid4().hex, _HEX32),
    "sa": (lambda: str(uuid.uuid4()), _UUID),
    "pi": (lambda: uuid.uuid4().hex, _HEX32),
    "st": (lambda: secrets.token_hex(20), r"[0-9a-f]{40}"),  # 160 random bits: unguessable
    "lreq": (lambda: str(ULID()), _ULID),
    "cnt": (lambda: uuid.uuid4().hex, _HEX32),
    "sp": (lambda: uuid.uuid4().hex, _HEX32),
    "evt": (lambda: str(ULID()), _ULID),
    "we": (lambda: uuid.uuid4().hex, _HEX32),
    "whd": (lambda: uuid.uuid4().hex, _HEX32),
    "pool": (lambda: uuid.uuid4().hex, _HEX32),
    "lay": (lambda: uuid.uuid4().hex, _HEX32),
    "le": (_time_ordered_hex, _HEX32),  # ledger entries; billing's bulk SQL makes the same shape
}
PATTERNS = {prefix: re.compile(rf"\A{prefix}_{rx}\Z") for prefix, (_, rx) in KINDS.items()}


def new_id(prefix: str) -> str:
    return f"{prefix}_{KINDS[prefix][0]()}"


def is_valid(prefix: str, value) -> bool:
    return isinstance(value, str) and PATTERNS[prefix].match(value) is not None


class PrefixedIdField(models.CharField):
    """Primary key holding the public id; generates one of its prefix on insert."""

    def __init__(self, *args, prefix: str, **kwargs):
        self.prefix = prefix
        kwargs.setdefault("max_length", 64)
        kwargs.setdefault("primary_key", True)
        kwargs.setdefault("editable", False)
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        kwargs["prefix"] = self.prefix
        for key, default in (("max_length", 64), ("primary_key", True), ("editable", False)):
            if kwargs.get(key) == default:
                kwargs.pop(key)
        return name, path, args, kwargs

    def pre_save(self, model_instance, add):
        value = getattr(model_instance, self.attname)
        if not value:
            value = new_id(self.prefix)
            setattr(model_instance, self.attname, value)
        return value

    def get_default(self):
        return new_id(self.prefix)


class IdConverter:
    """URL converter: a path segment that is not an id of the route's type makes the route not match
    (→ 404 NOT_FOUND), so views only ever see well-formed ids."""

    prefix = ""

    def __init__(self):
        self.regex = f"{self.prefix}_{KINDS[self.prefix][1]}"

    def to_python(self, value):
        return value

    def to_url(self, value):
        return value


def converter(prefix: str) -> type[IdConverter]:
    return type(f"{prefix.title()}IdConverter", (IdConverter,), {"prefix": prefix})
