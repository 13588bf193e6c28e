from hypothesis import given, settings
from hypothesis import strategies as st

from tonsai.text import RoutingThresholds, ScriptCounts, count_scripts, route
from tonsai.text import script as S


def test_counts_by_class():
    c = count_scripts("ខ្ញុំស្រឡាញ់ ABC 12, ok! Ωμέγα")
    assert c.khmer == 12  # 6 base letters, 6 signs
    assert c.latin == 5
    assert c.digit == 2
    assert c.punct == 2
    assert c.other == 5


def test_routing():
    assert route(count_scripts("ប្រទេសកម្ពុជាស្ថិតនៅក្នុងតំបន់អាស៊ីអាគ្នេយ៍។")) == "km"
    assert route(count_scripts("Cambodia is located in Southeast Asia.")) == "en"
    assert route(count_scripts("ប្រទេសកម្ពុជា Cambodia is a country")) == "mixed"
    assert route(count_scripts("Καλημέρα κόσμε")) == "other"
    assert route(count_scripts("12345 !!!")) == "other"


def test_short_khmer_is_not_routed_to_km():
    short = count_scripts("កម្ពុជា")
    assert route(short) != "km"
    assert route(short, RoutingThresholds(khmer_min_chars=1)) == "km"


# count_scripts counts on UTF-8 bytes where it can; the Unicode patterns are the definition
_mixed_chars = st.one_of(
    st.sampled_from([chr(c) for c in [*range(0x1780, 0x1800), *range(0x19c0, 0x1a00)]]),
    st.characters(max_codepoint=0x7f), st.characters(min_codepoint=0x80, max_codepoint=0x3000),
    st.characters(codec="utf-8"), st.sampled_from(["\ud800", "\udfff", "\U0001d400"]))


@settings(max_examples=300, deadline=None)
@given(st.text(_mixed_chars, max_size=60))
def test_counts_equal_the_pattern_counts(s):
    expected = ScriptCounts(*(p.subn("", s)[1] for p in (S._KHMER, S._LATIN, S._DIGIT, S._PUNCT, S._OTHER_LETTER)))
    assert count_scripts(s) == expected


def test_ascii_byte_classes_match_the_patterns():
    for c in map(chr, range(128)):
        b = c.encode()
        assert (b in S._ASCII_LATIN) == bool(S._LATIN.match(c)), repr(c)
        assert (b in S._ASCII_DIGIT) == bool(S._DIGIT.match(c)), repr(c)
        assert (b in S._ASCII_PUNCT) == bool(S._PUNCT.match(c)), repr(c)
        assert not S._OTHER_LETTER.match(c) and not S._KHMER.match(c)
