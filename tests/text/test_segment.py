from hypothesis import given, settings
from hypothesis import strategies as st

from tonsai.text import clusters, normalize, word_count, words

mixed = st.lists(st.sampled_from(
    [chr(c) for c in range(0x1780, 0x17DE)] + [" ", "  ", "\n", "\t", "a", "B", "1", "។", "\u00e9"]),
    max_size=40).map("".join)


def test_clusters_keep_consonant_stacks_whole():
    assert clusters("ស្ត្រីក្រុម") == ["ស្ត្រី", "ក្រុ", "ម"]
    assert clusters("ab ក") == ["a", "b", " ", "ក"]


@settings(max_examples=300, deadline=None)
@given(mixed)
def test_clusters_are_lossless(s):
    assert "".join(clusters(s)) == s


def test_words_segment_khmer_and_keep_whitespace():
    text = "ខ្ញុំស្រឡាញ់  ប្រទេសកម្ពុជា។\nHello   world 123\tភ្នំពេញ"
    out = words(text)
    assert "".join(out) == text
    assert out[:3] == ["ខ្ញុំ", "ស្រឡាញ់", "  "]
    assert "\n" in out and "\t" in out and "123" in out
    assert word_count(text) == 9


@settings(max_examples=60, deadline=None)
@given(mixed)
def test_words_are_lossless(s):
    assert "".join(words(s)) == s


def test_words_lossless_on_real_news(shared_data):
    lines = (shared_data / "khmer_news_kh_data_1000" / "khm_news_orig.txt").read_text(encoding="utf-8").splitlines()
    sample = "\n".join(normalize(line) for line in lines[:40])
    out = words(sample)
    assert "".join(out) == sample
    # real Khmer text has several characters per word, not one word per cluster
    n_words = sum(not w.isspace() for w in out)
    assert len(clusters(sample)) > 1.5 * n_words


def test_khmer_nltk_banner_is_silenced_and_its_warnings_print_once():
    """khmer-nltk's "Loaded model" banner printed twice (once with ANSI colour codes) in any app that
    logs at INFO; now it prints not at all, and the library's warnings reach the app's logging once."""
    import subprocess
    import sys

    code = ("import logging; logging.basicConfig(level=logging.INFO, format='%(name)s: %(message)s')\n"
            "from tonsai.text.segment import words\n"
            "assert len(words('ខ្ញុំស្រឡាញ់ប្រទេសកម្ពុជា')) > 1\n"
            "logging.getLogger('khmer-nltk').warning('probe')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "Loaded model" not in r.stderr and "\x1b[" not in r.stderr
    assert r.stderr.count("probe") == 1 and "khmer-nltk: probe" in r.stderr
