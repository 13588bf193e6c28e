"""Golden decisions of the per-document work of the prepare stage on real data.

normalize() + count_scripts() + first_reason() run over a fixed sample of ../shared/data (every
16th document of the ten files bench/bench_docs.py reads, plus the documents below that hit the rarer
reasons) and must reproduce what the implementation of commit cf7d20f recorded: the counts per reason,
the reason of each rare document, and hashes of the normalized texts, script counts and reasons in
order. A change that alters any decision or any normalized byte fails here; if the change is meant
(a new NORMALIZER_VERSION or new thresholds), record the new values and say why in the commit.
"""

from __future__ import annotations

import collections
import hashlib
import json
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.data.corpus import en_docs, km_docs
from tonsai.data.filters import (FilterThresholds, _repeat_starts, _repeat_starts_numpy, first_reason,
                                 repeated_lines, repeated_ngrams, units)
from tonsai.data.sources import ReadStats, Source, iter_documents
from tonsai.text import RoutingThresholds, count_scripts, normalize

FILES = {
    "km": ["khmer_news_kh_data_1000/khm_news_orig.txt", "khmer_news_kh_data_1000/articles.jsonl",
           "oscar_km_crf_segmented_sample/oscar_kh_1.seg.txt", "ntrex128_khm_eng_dev/khm_Khmr.txt",
           "sib200_flores_khm_eng_dev/khm_Khmr.txt"],
    "en": ["english_wikitext2_raw/wikitext2.test.txt", "english_wikitext2_raw/wikitext2.valid.txt",
           "english_tinyshakespeare/input.txt", "ntrex128_khm_eng_dev/eng_Latn.txt",
           "sib200_flores_khm_eng_dev/eng_Latn.txt"],
}
STRIDE = 16
RARE = {
    "km:khm_news_orig.txt:khm_news_orig.txt:3122": "script_en_in_km_source",
    "km:khm_news_orig.txt:khm_news_orig.txt:3767": "script_en_in_km_source",
    "km:khm_news_orig.txt:khm_news_orig.txt:4893": "too_many_urls",
    "km:khm_news_orig.txt:khm_news_orig.txt:5381": "too_many_urls",
    "km:khm_news_orig.txt:khm_news_orig.txt:6434": "script_en_in_km_source",
    "km:khm_news_orig.txt:khm_news_orig.txt:6459": "invalid_khmer_clusters",
    "km:khm_news_orig.txt:khm_news_orig.txt:8822": "script_en_in_km_source",
    "km:khm_news_orig.txt:khm_news_orig.txt:10659": "script_en_in_km_source",
    "km:articles.jsonl:articles.jsonl:56": "too_many_urls",
    "km:articles.jsonl:articles.jsonl:112": "repeated_lines",
    "km:articles.jsonl:articles.jsonl:134": "repeated_lines",
    "km:articles.jsonl:articles.jsonl:279": "repeated_lines",
    "km:articles.jsonl:articles.jsonl:312": "repeated_lines",
    "km:oscar_kh_1.seg.txt:oscar_kh_1.seg.txt:81": "invalid_khmer_clusters",
    "km:oscar_kh_1.seg.txt:oscar_kh_1.seg.txt:160": "invalid_khmer_clusters",
    "km:oscar_kh_1.seg.txt:oscar_kh_1.seg.txt:420": "replacement_chars",
    "km:oscar_kh_1.seg.txt:oscar_kh_1.seg.txt:424": "too_many_digits",
    "km:oscar_kh_1.seg.txt:oscar_kh_1.seg.txt:578": "too_many_urls",
    "km:oscar_kh_1.seg.txt:oscar_kh_1.seg.txt:1573": "invalid_khmer_clusters",
    "km:oscar_kh_1.seg.txt:oscar_kh_1.seg.txt:2106": "script_other_in_km_source",
    "km:oscar_kh_1.seg.txt:oscar_kh_1.seg.txt:2879": "script_en_in_km_source",
    "km:oscar_kh_1.seg.txt:oscar_kh_1.seg.txt:3120": "invalid_khmer_clusters",
    "km:oscar_kh_1.seg.txt:oscar_kh_1.seg.txt:4065": "replacement_chars",
    "km:oscar_kh_1.seg.txt:oscar_kh_1.seg.txt:4311": "too_many_urls",
    "km:khm_Khmr.txt:khm_Khmr.txt:882": "script_en_in_km_source",
    "en:wikitext2.test.txt:wikitext2.test.txt:1939": "too_many_digits",
    "en:wikitext2.test.txt:wikitext2.test.txt:2072": "too_many_digits",
    "en:wikitext2.test.txt:wikitext2.test.txt:2078": "too_many_digits",
    "en:wikitext2.valid.txt:wikitext2.valid.txt:2681": "too_many_digits",
    "en:wikitext2.valid.txt:wikitext2.valid.txt:2945": "too_many_digits",
    "en:input.txt:input.txt:4436": "too_few_words",
}
EXPECTED_COUNTS = {
    "None": 2834, "too_short": 686, "repeated_ngrams": 3, "script_mixed_in_km_source": 13,
    "too_many_symbols": 13, "repeated_lines": 7, "script_en_in_km_source": 7, "too_many_digits": 6,
    "invalid_khmer_clusters": 5, "too_many_urls": 5, "replacement_chars": 2, "script_other_in_km_source": 1,
    "too_few_words": 1,
}
EXPECTED_DOCUMENTS, EXPECTED_CHARS = 3583, 542605
EXPECTED_TEXT_SHA256 = "08f231e7f7c866f99707962e80ad03a4217730d0f6fc3554a3d9c0e466b2657c"
EXPECTED_REASON_SHA256 = "dea70f2a7bdb31596135f037e33cb6234e6bcd0da33aa1453559f5f4eb2946dc"
EXPECTED_SCRIPT_SHA256 = "6b392c32d9bc3077326c79f2e954e7141bb3ff838d11c09fea2ce75ed06f81b2"


def test_decisions_on_real_sample_match_the_recorded_ones(shared_data):
    routing, thresholds = RoutingThresholds(), FilterThresholds()
    counts: collections.Counter = collections.Counter()
    texts, scripts, reasons = hashlib.sha256(), hashlib.sha256(), hashlib.sha256()
    rare_seen, chars = {}, 0
    for lang, files in FILES.items():
        for rel in files:
            for i, doc in enumerate(iter_documents(Source(str(shared_data / rel), lang), ReadStats())):
                if i % STRIDE and doc.id not in RARE:
                    continue
                text = normalize(doc.text).strip()
                c = count_scripts(text)
                reason = doc.skip_reason or first_reason(text, c, lang, routing, thresholds)
                if doc.id in RARE:
                    rare_seen[doc.id] = reason
                counts[str(reason)] += 1
                chars += len(text)
                texts.update(f"{text}\0".encode())
                scripts.update(f"{c.khmer},{c.latin},{c.digit},{c.punct},{c.other};".encode())
                reasons.update(f"{reason}\0".encode())
    assert rare_seen == RARE
    assert dict(counts) == EXPECTED_COUNTS
    assert (sum(counts.values()), chars) == (EXPECTED_DOCUMENTS, EXPECTED_CHARS)
    assert scripts.hexdigest() == EXPECTED_SCRIPT_SHA256, "count_scripts() changed on real text"
    assert texts.hexdigest() == EXPECTED_TEXT_SHA256, "normalize() output changed on real text"
    assert reasons.hexdigest() == EXPECTED_REASON_SHA256, "a filter decision changed on real text"


def test_whitespace_class_is_regex_whitespace():
    import regex

    from tonsai.data.filters import WHITESPACE

    ours, theirs = re.compile(f"[{WHITESPACE}]"), regex.compile(r"\s")
    assert [c for c in range(0x110000) if ours.match(chr(c))] == [c for c in range(0x110000) if theirs.match(chr(c))]


_unit_chars = st.sampled_from([chr(c) for c in range(0x1780, 0x17e0)] + ["\u200c", "\u200d", "\x1c", "\u00a0", "\u3000"]
                              + list("ab1 .\n\t"))


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(_unit_chars, max_size=60), st.text(st.characters(max_codepoint=0x7f), max_size=60)))
def test_units_equal_the_regex_definition(s):
    import regex

    spec = regex.compile(r"[\u1780-\u17b3](?:\u17d2[\u1780-\u17b3]|[\u17b4-\u17d1\u17d3\u17dd\u200c\u200d])*"
                         r"|[^\s\u1780-\u17b3]+")
    assert units(s) == spec.findall(s)


def _reference_repeated_ngrams(us, max_frac, n=5):
    """The plain loop (as in commit cf7d20f)."""
    if len(us) < 4 * n:
        return None
    seen, covered = set(), [False] * len(us)
    for i in range(len(us) - n + 1):
        g = tuple(us[i:i + n])
        if g in seen:
            for j in range(i, i + n):
                covered[j] = True
        else:
            seen.add(g)
    return sum(covered) / len(us)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from("abc"), min_size=0, max_size=700), st.integers(2, 13))
def test_repeated_ngrams_cover_what_the_plain_loop_covers(us, n):
    # three symbols: many repeats; lists of 300+ units take the numpy path (n-gram ids by doubling
    # where 300**n passes 2**63: n >= 8)
    frac = _reference_repeated_ngrams(us, 0.3, n)
    for limit in (0.0, 0.3, 0.9):
        expected = None if frac is None or frac <= limit else "repeated_ngrams"
        assert repeated_ngrams(us, limit, n) == expected
    if len(us) >= 4 * n:
        assert _repeat_starts(us, n) == _repeat_starts_numpy(us, n)


def test_word_units_count_khmer_syllables():
    assert units("ប្រទេសកម្ពុជា is here") == ["ប្រ", "ទេ", "ស", "ក", "ម្ពុ", "ជា", "is", "here"]


def test_repetition_and_ratio_filters_give_reasons():
    t = FilterThresholds()
    routing = RoutingThresholds()

    def reason(text, lang="en"):
        return first_reason(text, count_scripts(text), lang, routing, t)

    assert reason("\n".join(["same line here ok"] * 4 + ["another line"])) == "repeated_lines"
    assert reason(" ".join(["buy cheap watches now today"] * 6)) == "repeated_ngrams"
    assert reason("ទិញនាឡិកាថោកនៅថ្ងៃនេះ" * 10, "km") == "repeated_ngrams"
    assert reason("Call 012 345 678 or 098 765 432 or 011 222 333 now") == "too_many_digits"
    assert reason("Hello ::: ### *** !!! ??? ... --- +++ === world") == "too_many_symbols"
    assert reason("see https://example.com/a/very/long/path/to/some/page/index.html ok") == "too_many_urls"
    assert reason(en_docs(1)[0]) is None
    assert reason(km_docs(1)[0], "km") is None
    assert repeated_lines("a\nb\nc", 0.3) is None
    assert repeated_ngrams(units(km_docs(1)[0]), 0.3) is None


def test_khmer_text_is_checked_for_repeated_12_grams_of_syllables(shared_data):
    """About five words in either script: 5-grams of syllables (two Khmer words, a name or a title)
    dropped a quarter of the clean news articles of ../shared/data."""
    from tonsai.data.filters import NGRAM_KHMER_SYLLABLES, NGRAM_WORDS, ngram_units

    assert ngram_units(count_scripts(km_docs(1)[0])) == NGRAM_KHMER_SYLLABLES == 12
    assert ngram_units(count_scripts(en_docs(1)[0])) == NGRAM_WORDS == 5
    path = shared_data / "khmer_news_kh_data_1000" / "articles.jsonl"
    articles = [normalize(json.loads(line)["text"]) for line in path.open(encoding="utf-8") if line.strip()]
    us = [units(a) for a in articles]
    dropped = {n: sum(repeated_ngrams(u, 0.3, n) is not None for u in us) for n in (5, 12)}
    assert dropped == {5: 245, 12: 55}, dropped  # the figures in tonsai/data/filters.py
