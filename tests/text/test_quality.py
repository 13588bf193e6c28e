import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tonsai.manifest import read_manifest, write_manifest
from tonsai.text import clusters, is_valid_syllable, normalize, quality_signals
from tonsai.text import quality as Q
from tonsai.text.script import count_scripts
from tonsai.text.khmer import SYLLABLE_CHAR

LEGACY = "ebIm:anRbeTskm<úCa enAkñúgtMbn; GasIu¬GaeKñy_ rdæFanIKW PñMeBj ehIyRbCaCn"


@pytest.mark.parametrize("cluster, valid", [
    ("ក", True), ("ក្រុ", True), ("ស្ត្រី", True), ("ឲ្យ", True), ("ម៉ឺ", True), ("ចាំ", True),
    ("ពោះ", True), ("ក៌", True), ("ក\u200c\u17b6", True), ("A", True), ("៤", True),
    (" \u17b6", False),           # a vowel sign with no base
    ("ក\u17d2", False),           # COENG with nothing below
    ("ន\u17c1\u17bb", False),     # two dependent vowels
    ("ក្ក្ក្ក", False),          # three subscripts
])
def test_syllable_validity(cluster, valid):
    assert is_valid_syllable(cluster) is valid


def test_signals_and_flags():
    assert quality_signals("ប្រទេសកម្ពុជា").flags == []
    q = quality_signals("abc \ufffd\ufffd def")
    assert q.replacement_rate == pytest.approx(2 / 10) and q.flags == ["replacement_chars"]
    bad = quality_signals("ក \u17b6 ខ \u17b6")
    assert bad.khmer_clusters == 4 and bad.invalid_cluster_rate == 0.5
    assert "invalid_khmer_clusters" in bad.flags
    assert quality_signals(LEGACY).flags == ["legacy_font_suspect"]
    assert quality_signals("YouTube iPhone École «Miss pageant» are names, not legacy text").flags == []


def test_real_corpora_are_clean(shared_data):
    files = ["khmer_news_kh_data_1000/khm_news_orig.txt", "english_wikitext2_raw/wikitext2.valid.txt",
             "english_tinyshakespeare/input.txt"]
    for name in files:
        lines = [normalize(line) for line in (shared_data / name).read_text(encoding="utf-8").splitlines()[:3000]]
        flagged = [line for line in lines if line.strip() and quality_signals(line).flags]
        assert len(flagged) <= 0.001 * len(lines) + 1, (name, flagged[:3])
    news = normalize((shared_data / files[0]).read_text(encoding="utf-8"))
    assert quality_signals(news).invalid_cluster_rate < 0.001


def test_stage_warns_on_other_normalizer_version(tmp_path, caplog):
    m = write_manifest(tmp_path, "prepare", {})
    (tmp_path / "manifest.json").write_text(
        (tmp_path / "manifest.json").read_text().replace(m["normalizer_version"], "tonsai-norm-0"))
    with caplog.at_level(logging.WARNING):
        read_manifest(tmp_path, "prepare")
    assert "normalizer tonsai-norm-0" in caplog.text


# what quality.py computes with caches, Counters and a whole-text pre-check, written plainly
def _reference_counts(text):
    khmer = [c for c in clusters(text) if SYLLABLE_CHAR.search(c)]
    words = Q._LATIN_WORD.findall(text)
    return (sum(not is_valid_syllable(c) for c in khmer), len(khmer)), \
        (sum(1 for w in words if Q._GARBLED.search(w)), len(words))


_quality_chars = st.sampled_from(
    [chr(c) for c in range(0x1780, 0x17ff, 3)] + ["\u17d2", "\u17b6", "\u17c1", "\u200c", "\u200d", "\ufffd"]
    + list("aAbBzZ;:<>=+@|~^ \n\t.,-") + ["\u00a1", "\u00ac", "\u00b3", "\u00d7", "\u00e9", "\u00c9", "\u03b1", "\u0391"]
    # marks that attach to a space, Prepend characters that attach what follows, regional indicators
    + ["\u0301", "\u0903", "\u0600", "\U000110bd", "\U0001f1e6", "\U0001f600"])


@settings(max_examples=400, deadline=None)
@given(st.text(_quality_chars, max_size=80))
def test_fast_paths_agree_with_the_plain_computation(s):
    (invalid, total), (garbled, words) = _reference_counts(s)
    assert Q.invalid_cluster_counts(s) == (invalid, total)
    assert Q.legacy_font_counts(s) == (garbled, words)
    flags = quality_signals(s).flags
    assert Q.first_flag(s) == (flags[0] if flags else None)
    assert Q.first_flag(s, khmer_chars=count_scripts(s).khmer) == (flags[0] if flags else None)
    if total == 0 and not any("\u1780" <= c <= "\u17ff" for c in s):
        assert Q.first_flag(s, khmer=False) == Q.first_flag(s)


# well-formed syllables (each part of VALID_SYLLABLE drawn or left out), and what may stand between
# them: spaces, Latin, Khmer punctuation, and characters that join a cluster (marks, joiners,
# Prepend, a bare COENG, Khmer letters VALID_SYLLABLE does not start with)
_syllables = st.builds(
    lambda base, robat, subs, shifter, zwnj, vowel, signs, final: base + robat + "".join(subs) + shifter
    + (zwnj + vowel if vowel else "") + "".join(signs) + final,
    st.sampled_from("កងញដរសអឥឫឳ"),
    st.sampled_from(["", "\u17cc"]),
    st.lists(st.sampled_from(["\u17d2\u1780", "\u17d2\u179a", "\u200d\u17d2\u1794", "\u17d2\u17a2"]), max_size=2),
    st.sampled_from(["", "\u17c9", "\u17ca"]), st.sampled_from(["", "\u200c"]),
    st.sampled_from(["", "\u17b6", "\u17b7", "\u17bb", "\u17c1", "\u17c4", "\u17c5"]),
    st.lists(st.sampled_from("\u17c6\u17cb\u17cd\u17d1\u17d3\u17dd"), max_size=2), st.sampled_from(["", "\u17c7"]))
_between = st.sampled_from([" ", "", "", "a", "Ab.", "\n", "\u17d4", "\u17db", "\u17e1", "\u0301", "\u0903",
                            "\u0600", "\U000110bd", "\u200c", "\u200d", "\u17d2", "\u17a3", "\u17b4", "\u17b6",
                            "\u17d2\u17a5", "\U0001f44d\U0001f3fb", "\U0001f1e6\U0001f1e8", "\ufe0f"])


@settings(max_examples=600, deadline=None)
@given(st.lists(st.one_of(_syllables, _between), max_size=40))
def test_counting_in_one_pass_agrees_with_the_cluster_count(pieces):
    """The one-pass way of invalid_cluster_counts (well-formed syllables taken out, nothing that
    joins a cluster left) gives what counting the \\X clusters one by one gives."""
    s = "".join(pieces)
    (invalid, total), _ = _reference_counts(s)
    fast = Q._all_valid(s)
    assert fast is None or (invalid, total) == (0, fast)
    assert Q.invalid_cluster_counts(s) == (invalid, total)


def test_every_character_that_joins_a_khmer_cluster_is_one_the_one_pass_count_looks_for():
    """_all_valid is exact only if nothing outside a well-formed syllable can join its \\X cluster:
    every code point below U+30000 that \\X puts into one cluster with a Khmer letter, before or
    after it, is in _CLUSTER_JOINER (in regex 2026.11.15 the Prepend class missed three)."""
    import regex

    joiners = [c for c in map(chr, range(0x30000)) if not "\ud800" <= c <= "\udfff"
               and (len(regex.findall(r"\X", c + "\u1780")) == 1 or len(regex.findall(r"\X", "\u1780" + c)) == 1)]
    assert len(joiners) > 2000
    assert [f"U+{ord(c):04X}" for c in joiners if not Q._CLUSTER_JOINER.match(c)] == []
    for c in "\u1cf5\u1cf6\U00011a3a\u0600":
        text = c + "\u1780\u17b6"
        assert Q._all_valid(text) is None and Q.invalid_cluster_counts(text) == _reference_counts(text)[0] == (1, 1)


def test_text_of_well_formed_syllables_is_counted_in_one_pass():
    text = "ព្រះរាជាណាចក្រកម្ពុជា ស្ត្រី ២០២៦ (Cambodia) ។ ក៏ដោយ"
    (invalid, total), _ = _reference_counts(text)
    assert invalid == 0 and Q._all_valid(text) == total == 13
    assert Q._all_valid("ក\u0301") is None and Q._all_valid("\u0600ក") is None  # a mark after, a Prepend before
    assert Q._all_valid("ក\u17b6\u17b6") is None and Q.invalid_cluster_counts("ក\u17b6\u17b6") == (1, 1)


def test_legacy_flag_through_first_flag():
    assert Q.first_flag(LEGACY, khmer=False) == "legacy_font_suspect"
    # with the Khmer character count given: legacy text beside a little Khmer is still flagged,
    # Khmer with fewer characters outside Khmer than five words need is not looked at
    mixed = LEGACY + " កម្ពុជា"
    assert Q.first_flag(mixed, khmer_chars=count_scripts(mixed).khmer) == "legacy_font_suspect"
    khmer = "ព្រះរាជាណាចក្រកម្ពុជា " + "ebIm:an RbeTskm< "
    assert Q.first_flag(khmer, khmer_chars=count_scripts(khmer).khmer) is None is Q.first_flag(khmer)
    assert Q.first_flag("YouTube iPhone École «Miss pageant» are names, not legacy text", khmer=False) is None
