"""Readers of single fields of a platform's answer, for values that are handed on (to the database, to
partners as externalId / externalUrl, back to the platform in a request): each returns the value in the one
shape Layers keeps, or None when the answer holds something else. A platform's JSON may carry any type where
its documentation promises one: read loosely (str(), bool(), int()), a list became a post's id as its Python
repr, a string's first character became the id, "false" turned a creator's comments off, a number the
database cannot hold made the write fail at every run. A value these readers refuse is unknown, never guessed.

Apart from base.py (whose as_int reads codes and counts loosely where nothing is handed on) so that its
callers are the ones that hand values on."""

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager

from config.api.returnurl import url_shape_problem

from .base import PlatformUnavailable

# PostgreSQL's bigint, the columns a post's figures are stored in; also TikTok's int64 post ids.
INT64_MAX = 2**63 - 1
# The longest platform id Layers stores (ScheduledPost.publish_id / external_id hold 128): twice what
# PLATFORMS.md documents for TikTok's publish_id (at most 64); Instagram's ids are 17-18 digits.
MAX_ID_LENGTH = 128
# An id that is put in request paths (Instagram's /{container-id}, /{media-id}/insights): no "/", "?", "%",
# spaces or control characters, and no "." or ".." segment (it would ask about another object).
_PATH_ID = re.compile(r"\A[0-9A-Za-z][0-9A-Za-z_.~-]*\Z")
_DIGITS = re.compile(r"\A[0-9]{1,19}\Z")
# A TikTok handle (letters, digits, "_" and "."; TikTok allows 24), which a post's public URL is built with.
_TIKTOK_HANDLE = re.compile(r"\A[A-Za-z0-9_.]{1,64}\Z")
# A permalink is some 40 characters; the posts' external_url column holds 1024. Anything near that is no
# permalink, and the storing side checks the column itself (scheduling.services._storable_outcome).
MAX_URL_LENGTH = 1024
# What reading a value of an unexpected type raises: .get on a list, [0] on a number or an object, int("1.0").
UNREADABLE = (AttributeError, IndexError, KeyError, OverflowError, TypeError, ValueError)


def platform_id(value, *, in_paths: bool = True) -> str | None:
    """An id the platform gave for something it made (a container, a media, a publish id), as a string, or
    None: a string or an integer (JSON numbers: Instagram's ids are digits), of at most MAX_ID_LENGTH
    printable characters, and of _PATH_ID's when the id is put `in_paths`. Not a boolean (True is an int in
    Python), a float (an int64 past 2**53 has lost digits) or anything nested."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH or not value.isprintable():
        return None
    if in_paths and not _PATH_ID.match(value):
        return None
    return value


def int64_id(value) -> str | None:
    """A decimal int64 id (TikTok's public post ids: "a list of int64"), as its decimal string, or None: a
    non-negative int up to INT64_MAX, or a string of ASCII digits with that value. Not a boolean, a float (past
    2**53 its last digits are lost: another post's id), a string of other characters, or anything nested."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and _DIGITS.match(value):
        value = int(value)
    if isinstance(value, int) and 0 <= value <= INT64_MAX:
        return str(value)
    return None


def count(value) -> int | None:
    """A count (views, likes, a quota) as an int, or None where the answer gives none readably: an int, a float
    with a whole value (1e20 in JSON), or a string of digits with an optional sign. Neither a boolean nor an
    infinite or fractional number. The range is the caller's: it knows what it stores, and whose figure it is."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]{1,40}", value.strip()):
        return int(value)
    return None


def flag(value, *, unreadable: bool) -> bool:
    """A yes/no setting: a JSON boolean, "true" / "false" in any case, 1 / 0; False when absent (null); and
    `unreadable` for anything else, the caller's safe side. bool() read the string "false" as True."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return unreadable


def https_url(value) -> str | None:
    """A URL the platform gave for a post (Instagram's permalink), kept only when it is an absolute https URL of
    at most MAX_URL_LENGTH characters that every parser reads alike (url_shape_problem, the check a managed
    provider's URL gets): it reaches partners as externalUrl, in the API and webhooks, where a `javascript:`
    URL is a script in their dashboards."""
    if not isinstance(value, str) or not value or len(value) > MAX_URL_LENGTH:
        return None
    return value if url_shape_problem(value, schemes=("https",)) is None else None


def tiktok_handle(value) -> str | None:
    """A TikTok username as a post's public URL may be built with (`https://www.tiktok.com/@<username>/…`), or
    None: a "/" or a space in it would make the URL another page's."""
    return value if isinstance(value, str) and _TIKTOK_HANDLE.match(value) else None


@contextmanager
def unreadable_answer(what: str, *, outcome_unknown: bool | None = None) -> Iterator[None]:
    """Raise what reading an answer in a shape nobody foresaw raises (UNREADABLE) as the typed error of an
    answer that cannot be read: PlatformUnavailable, code bad_response, which every caller handles (asked again,
    given up on in time). Untyped, it escaped the resolver at every check and left a live post `publishing` for
    ever, or ended a publishing run as if its worker had died. `outcome_unknown`: as PlatformError's, for the
    request the answer was to (False where nothing was created yet)."""
    try:
        yield
    except UNREADABLE as exc:
        raise PlatformUnavailable(
            f"{what}: an answer Layers cannot read ({type(exc).__name__})",
            code="bad_response",
            outcome_unknown=outcome_unknown,
        ) from exc
