import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tonsai.text import normalize

KA, KHA, NYO, TA, DA, RO = "\u1780", "\u1781", "\u1789", "\u178f", "\u178a", "\u179a"
COENG, AA, E, I = "\u17d2", "\u17b6", "\u17c1", "\u17b7"


@pytest.mark.parametrize("raw, expected, rule", [
    ("a\r\nb", "a\nb", "2: CRLF"),
    ("a\rb", "a\nb", "2: CR"),
    ("a\u2028b\u2029c", "a\nb\nc", "2: line/paragraph separators"),
    ("\ufeffab", "ab", "3: BOM"),
    (f"{KA}\u200b{KHA}", f"{KA}{KHA}", "3: zero width space"),
    ("a\u2060b\u00adc", "abc", "3: word joiner and soft hyphen"),
    ("a\x00b\x07c\x1bd\x7fe\x85f", "abcdef", "4: C0, DEL, C1 controls"),
    ("a\tb\nc", "a\tb\nc", "4: TAB and LF stay"),
    ("a\u00a0b", "a b", "5: NBSP"),
    ("e\u0301", "\u00e9", "6: NFC composes"),
    ("\uff21\u00b2\ufb01", "\uff21\u00b2\ufb01", "6: not NFKC"),
    ("\u17a3", "\u17a2", "7: U+17A3"),
    ("\u17a4", "\u17a2\u17b6", "7: U+17A4"),
    (f"{KA}\u17b4{KHA}\u17b5", f"{KA}{KHA}", "7: inherent vowels dropped"),
    ("\u17d8", "\u17d4\u179b\u17d4", "7: U+17D8"),
    ("\u17d3\u17dd\u17b2\u17a8", "\u17d3\u17dd\u17b2\u17a8", "7: kept characters"),
    (f"{KA}\u200c{AA}", f"{KA}\u200c{AA}", "8: ZWNJ before a dependent vowel stays"),
    (f"{KA}\u200c{KHA}", f"{KA}{KHA}", "8: ZWNJ before a consonant goes"),
    (f"{KA}\u200d{COENG}{KHA}", f"{KA}\u200d{COENG}{KHA}", "8: ZWJ before COENG stays"),
    (f"{KA}\u200d{AA}", f"{KA}{AA}", "8: ZWJ elsewhere goes"),
    (f"{KA}\u200c\u200c{AA}", f"{KA}\u200c{AA}", "8: a run of joiners keeps only a valid last one"),
    ("a\u200cb", "a\u200cb", "8: joiners outside Khmer are untouched"),
    ("cafÃ© dÃ©jÃ  vu", "café déjà vu", "1: mojibake repaired"),
    ("ß\x08¢", "\u07e2", "1 after 4: mojibake exposed by removing a control is repaired too"),
    ("\u201cquoted\u201d &amp; ﬁne", "\u201cquoted\u201d &amp; ﬁne", "1: no uncurling, unescaping or ligature folding"),
])
def test_rules(raw, expected, rule):
    assert normalize(raw) == expected, rule


def test_mojibake_of_khmer_is_repaired():
    khmer = "ប្រទេសកម្ពុជា"
    broken = khmer.encode("utf-8").decode("latin-1")  # what a reader that assumed Latin-1 sees
    assert broken != khmer
    assert normalize(broken) == khmer


def test_latin_text_only_nfc():
    text = "The quick brown fox\tjumps — over “the” lazy dog… naïve résumé ÆØÅ"
    assert normalize(text) == unicodedata.normalize("NFC", text)


def test_type_error_names_the_type():
    with pytest.raises(TypeError, match="bytes"):
        normalize(b"abc")
    with pytest.raises(TypeError, match="int"):
        normalize(3)


def test_lone_surrogates_become_replacement_character():
    assert normalize("a\ud800b") == "a\ufffdb"
    assert normalize("\ud83d\ude00") == "\U0001f600"  # a valid pair is joined


khmer_chars = st.sampled_from(
    [chr(c) for c in range(0x1780, 0x17FF)] + ["\u200b", "\u200c", "\u200d", " ", "\n", "\u00a0", "a", "\u00e9"])


@settings(max_examples=400, deadline=None)
@given(st.text(khmer_chars, max_size=40))
def test_idempotent_on_random_khmer(s):
    once = normalize(s)
    assert normalize(once) == once


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_idempotent_on_any_text(s):
    once = normalize(s)
    assert normalize(once) == once


def test_real_khmer_news_lines_never_grow(shared_data):
    lines = (shared_data / "khmer_news_kh_data_1000" / "khm_news_orig.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) > 100
    changed = 0
    for line in lines[:3000]:
        out = normalize(line)
        assert len(out) <= len(line)
        assert normalize(out) == out
        changed += out != line
    assert changed > 0  # real news carries ZWSP and other invisibles
