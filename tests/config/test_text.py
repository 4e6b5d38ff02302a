"""config/text: what cannot be stored is made U+FFFD, and a cut never splits what a reader sees as one
character (the end-to-end cases: tests/scheduling/test_publishing.py, tests/accounts/test_oauth_connect.py)."""

import pytest

from config.text import shorten, storable

FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # 👨‍👩‍👧: three emoji joined by U+200D
FLAG = "\U0001f1eb\U0001f1f7"  # 🇫🇷
THUMBS = "\U0001f44d\U0001f3fd"  # 👍🏽
E_ACUTE = "e\u0301"  # é in NFD
HEART = "\u2764\ufe0f"  # ❤️
KEYCAP = "1\ufe0f\u20e3"  # 1️⃣
ENGLAND = "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"  # 🏴 and its tags
HANGUL = "\u1112\u1161\u11ab"  # 한 in NFD
GRAPHEMES = [FAMILY, FLAG, THUMBS, E_ACUTE, HEART, KEYCAP, ENGLAND, HANGUL]


@pytest.mark.parametrize("grapheme", GRAPHEMES)
@pytest.mark.parametrize("start", range(1, 8))
def test_a_cut_falls_between_graphemes_and_says_so(grapheme, start):
    text = "a" * start + grapheme * 10
    for limit in range(start + 1, len(text)):
        cut = shorten(text, limit)
        assert len(cut) <= limit and cut.endswith("…")
        kept = cut.removesuffix("…")
        assert text.startswith(kept)
        rest = kept[start:]
        assert rest == grapheme * (len(rest) // len(grapheme)), (limit, cut)


def test_a_run_of_flags_is_cut_between_pairs_however_long():
    flags = "\U0001f1eb\U0001f1f7\U0001f1e9\U0001f1ea\U0001f1ef\U0001f1f5"  # 🇫🇷🇩🇪🇯🇵
    assert [shorten(flags, n, mark="") for n in range(2, 7)] == [flags[:2], flags[:2], flags[:4], flags[:4], flags]


def test_text_that_fits_is_returned_as_it_is():
    assert shorten(FAMILY * 2, 10) == FAMILY * 2
    assert shorten("", 1) == ""


def test_without_a_mark_the_cut_fills_the_room():
    assert shorten("handle" + FAMILY, 8, mark="") == "handle"
    assert shorten("h" * 200, 128, mark="") == "h" * 128


def test_a_grapheme_longer_than_the_room_is_cut_where_the_room_ends():
    stacked = "Z" + "\u0301" * 400
    assert shorten(stacked, 300) == stacked[:299] + "…"


@pytest.mark.parametrize(
    "text, stored",
    [
        ("refused: \ud83d", "refused: \ufffd"),
        ("\udc00\ud83d\ude00", "\ufffd\ufffd\ufffd"),  # a pair left as two code points is two halves too
        ("a\x00b", "a\ufffdb"),
        (FAMILY + FLAG + "\u202eRTL\u202c\ufeff", FAMILY + FLAG + "\u202eRTL\u202c\ufeff"),  # storable as it is
    ],
)
def test_what_postgresql_cannot_store_is_made_the_replacement_character(text, stored):
    assert storable(text) == stored
    storable(text).encode("utf-8")  # no surrogate left


@pytest.mark.parametrize(("limit", "mark"), [(0, "…"), (2, "..."), (1, "…")])
def test_a_limit_with_no_room_for_the_mark_is_never_exceeded(limit, mark):
    # Review: the mark alone was returned, longer than the limit ("..." for a limit of 2).
    cut = shorten("abcdef", limit, mark=mark)
    assert len(cut) <= limit and "abcdef".startswith(cut.removesuffix(mark)), cut
