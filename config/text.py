"""Text from outside made storable, and text cut to a column's length without breaking what a reader sees.

- `storable`: PostgreSQL's text refuses a NUL (psycopg raises DataError) and UTF-8 has no encoding for a
  surrogate code point (psycopg raises UnicodeEncodeError). A platform that cuts its own text by UTF-16
  units (as TikTok counts) leaves half of an emoji's surrogate pair behind, which Python's JSON decoder hands
  on as a lone surrogate: storing such a refusal raised, and the post it ended stayed `publishing`.
  Everything else, JSON carries and PostgreSQL stores.
- `shorten`: a cut at N code points splits what a reader sees as one character (a grapheme): a family
  emoji is several emoji joined by U+200D, a flag a pair of regional indicators, "é" in NFD a letter and a
  combining mark. The partner then reads "👨\u200d" or a lone regional indicator in error.message. The cut
  backs off to the grapheme's start instead. Not all of Unicode's segmentation rules (UAX #29; the project
  has no library for them): the extenders, joiners, regional indicator pairs and conjoining Hangul jamo that
  a cut falls inside in practice.
"""

import re
import unicodedata

UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"
ELLIPSIS = "…"

ZWJ = "\u200d"
# Categories that attach to the character before them: nonspacing, enclosing (the keycap's U+20E3) and
# spacing combining marks. The variation selectors (U+FE0F: "as an emoji") are nonspacing marks.
_MARKS = frozenset({"Mn", "Me", "Mc"})


def storable(text: str) -> str:
    """`text` with each character PostgreSQL text cannot hold (NUL, a lone surrogate) made U+FFFD."""
    return UNSTORABLE.sub(REPLACEMENT, text)


def shorten(text: str, limit: int, *, mark: str = ELLIPSIS) -> str:
    """`text` if it has at most `limit` code points (what a CharField counts); otherwise its start, cut where
    one grapheme ends, followed by `mark`, `limit` code points at most in all. A single grapheme longer than
    the whole room (hundreds of stacked combining marks) is cut where the room ends: nothing else fits."""
    if len(text) <= limit:
        return text
    if limit < len(mark):  # no room for the mark itself: the column's limit wins
        mark = ""
    room = limit - len(mark)
    end = room
    while end > 0 and not _boundary(text, end):
        end -= 1
    return text[: end or room] + mark


def _boundary(text: str, i: int) -> bool:
    """Whether a cut between text[i - 1] and text[i] leaves both graphemes whole."""
    before, after = text[i - 1], text[i]
    if before == "\r" and after == "\n":
        return False
    if before == ZWJ or _extends(after):
        return False
    if _regional(before) and _regional(after):
        # Flags pair up from the start of a run of regional indicators: a cut after an odd count splits one.
        run = 0
        while i - 1 - run >= 0 and _regional(text[i - 1 - run]):
            run += 1
        return run % 2 == 0
    return not _joined_jamo(before, after)


def _extends(ch: str) -> bool:
    """Attaches to what precedes it: a combining mark or variation selector, a joiner, an emoji skin tone
    modifier (U+1F3FB–1F3FF), a tag character (the subdivision flags: England is 🏴 and tags)."""
    code = ord(ch)
    return (
        unicodedata.category(ch) in _MARKS
        or ch in (ZWJ, "\u200c")
        or 0x1F3FB <= code <= 0x1F3FF
        or 0xE0020 <= code <= 0xE007F
    )


def _regional(ch: str) -> bool:
    return 0x1F1E6 <= ord(ch) <= 0x1F1FF


def _jamo(ch: str) -> str | None:
    """The conjoining Hangul jamo kind of `ch`: "L" (leading consonant), "V" (vowel), "T" (trailing), "S"
    (a precomposed syllable), or None. A Korean name in NFD is sequences of L V (T)."""
    code = ord(ch)
    if 0x1100 <= code <= 0x115F or 0xA960 <= code <= 0xA97C:
        return "L"
    if 0x1160 <= code <= 0x11A7 or 0xD7B0 <= code <= 0xD7C6:
        return "V"
    if 0x11A8 <= code <= 0x11FF or 0xD7CB <= code <= 0xD7FB:
        return "T"
    if 0xAC00 <= code <= 0xD7A3:
        return "S"
    return None


def _joined_jamo(before: str, after: str) -> bool:
    first, second = _jamo(before), _jamo(after)
    if first is None or second is None:
        return False
    if first == "L":
        return second in ("L", "V", "S")
    return second in ("V", "T") if first in ("V", "S") else second == "T"
