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
    (f"{KA}\u17bb{COENG}{RO}", f"{KA}{COENG}{RO}\u17bb", "9: subscript before a below vowel"),
    (f"{KA}{AA}{COENG}{KHA}", f"{KA}{COENG}{KHA}{AA}", "9: subscript before AA"),
    (f"{KA}\u17c6{AA}", f"{KA}{AA}\u17c6", "9: AA before other signs"),
    (f"{KA}\u17c7{I}", f"{KA}{I}\u17c7", "9: final signs last"),
    (f"{KA}{I}\u17cc", f"{KA}\u17cc{I}", "9: robat right after the base"),
    (f"{KA}{COENG}{RO}{COENG}\u179f", f"{KA}{COENG}\u179f{COENG}{RO}", "9: subscript RO last"),
    (f"{KA}{COENG}{DA}", f"{KA}{COENG}{TA}", "9: subscript DA becomes TA"),
    (f"{KA}{COENG}{COENG}{KHA}", f"{KA}{COENG}{KHA}", "9: repeated COENG"),
    (f"{KA}{E}\u17b8", f"{KA}\u17be", "9: split vowel OE composed"),
    (f"{KA}{E}{AA}", f"{KA}\u17c4", "9: split vowel OO composed"),
    (f"{KA}\u17be{AA}", f"{KA}\u17c4\u17b8", "9: split vowel OE + AA"),
    (f"\u1798\u17bb{I}", f"\u1798\u17c9{I}", "9: U + above vowel on MO becomes muusikatoan"),
    (f"{NYO}\u17bb\u17b8", f"{NYO}\u17c9\u17b8", "9: NYO takes muusikatoan (SIL lists U+1780 by mistake)"),
    (f"\u179f\u17bb{I}", f"\u179f\u17ca{I}", "9: U + above vowel on SA becomes triisap"),
    (f"{KA}{I}{I}", f"{KA}{I}", "9: duplicated non-spacing mark dropped"),
    (f"{KA}{AA}{AA}", f"{KA}{AA}{AA}", "9: duplicated spacing vowel kept"),
    (f"{KA}\u200c{AA}{KHA}", f"{KA}\u200c{AA}{KHA}", "8+9: ZWNJ stays with its vowel"),
    (f"{KA}\u200d{COENG}{KHA}{AA}", f"{KA}\u200d{COENG}{KHA}{AA}", "8+9: ZWJ stays with its subscript"),
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


def test_share_of_reordered_syllables_on_real_news(shared_data):
    """KHMER.md: 0.40% of syllables and 19% of lines change on real news, two thirds subscript DA->TA."""
    from tonsai.text.syllable import SYLLABLE, reorder_syllable

    text = (shared_data / "khmer_news_kh_data_1000" / "khm_news_orig.txt").read_text(encoding="utf-8")
    lines = text.splitlines()[:4000]
    raw = [s for line in lines for s in SYLLABLE.findall(line)]
    changed = [s for s in raw if reorder_syllable(s) != s]
    assert 0.002 < len(changed) / len(raw) < 0.012
    assert 0.5 < sum("\u17d2\u178a" in s for s in changed) / len(changed) < 0.8
    lines_changed = sum(any(reorder_syllable(s) != s for s in SYLLABLE.findall(line)) for line in lines)
    assert 0.10 < lines_changed / len(lines) < 0.30
    # after normalize, every syllable is canonical
    assert all(reorder_syllable(s) == s for line in lines for s in SYLLABLE.findall(normalize(line)))


def _plain_normalize(text):
    """normalize() as commit cf7d20f wrote it (translate(), SYLLABLE.sub per syllable), to check the
    faster paths against."""
    import importlib

    import ftfy

    N = importlib.import_module("tonsai.text.normalize")  # the module (tonsai.text.normalize is also the function)
    from tonsai.text.syllable import SYLLABLE, reorder_syllable

    def once(t):
        if N._SURROGATE.search(t):
            t = N._SURROGATE.sub("\ufffd", ftfy.fixes.fix_surrogates(t))
        if N._MOJIBAKE_HINT.search(t):
            t = ftfy.fix_text(t, N._FTFY_CONFIG)
        t = t.replace("\r\n", "\n").translate(N._TABLE)
        if not t.isascii():
            t = unicodedata.normalize("NFC", t)
            t = N._JOINERS_AFTER_KHMER.sub(N._keep_valid_joiner, t)
            t = SYLLABLE.sub(lambda m: reorder_syllable(m.group(0)), t)
        return t

    for _ in range(N._MAX_PASSES):
        out = once(text)
        if out == text or not N._MOJIBAKE_HINT.search(out):
            return out
        text = out
    return text


_any_chars = st.one_of(khmer_chars, st.sampled_from(["\r", "\x00", "\x85", "\u00ad", "\ufeff", "\u2028",
                                                      "\u17a3", "\u17d8", "\u00c3", "\u00a9", "\ud800"]),
                       st.characters())


@settings(max_examples=400, deadline=None)
@given(st.text(_any_chars, max_size=50))
def test_fast_paths_equal_the_plain_pipeline(s):
    assert normalize(s) == _plain_normalize(s)
