import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tonsai.manifest import read_manifest, write_manifest
from tonsai.text import clusters, is_valid_syllable, normalize, quality_signals
from tonsai.text import quality as Q
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
    if total == 0 and not any("\u1780" <= c <= "\u17ff" for c in s):
        assert Q.first_flag(s, khmer=False) == Q.first_flag(s)


def test_legacy_flag_through_first_flag():
    assert Q.first_flag(LEGACY, khmer=False) == "legacy_font_suspect"
    assert Q.first_flag("YouTube iPhone École «Miss pageant» are names, not legacy text", khmer=False) is None
