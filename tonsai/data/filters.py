"""Document filters. Each takes a normalized document and returns ``None`` to keep it or a short
reason string to drop it; the prepare stage counts every drop by reason.

Word-like units (:func:`units`) work for Khmer, which writes no spaces between words: a run of
Khmer letters is split into orthographic syllables (a base with its signs and COENG subscripts),
everything else at whitespace. A Khmer word is one to three such syllables. The split is a regex
(several million characters per second), not khmer-nltk's CRF (16k characters per second), so it
can run on every document of a 100B-token corpus.
"""

from __future__ import annotations

import dataclasses
import itertools
import operator
import re

import numpy as np
import regex

from tonsai.text.khmer import BASES, COENG, ZWJ, ZWNJ
from tonsai.text.quality import first_flag
from tonsai.text.script import RoutingThresholds, ScriptCounts, route

# the characters that the regex package's \s matches (Unicode White_Space); Python's re would also
# match U+001C..U+001F, so the class is spelled out (tests/data/test_filters.py checks it)
WHITESPACE = ("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000")
# a Khmer syllable: base consonant or independent vowel, then subscripts (COENG + consonant), signs,
# joiners; or a run of anything else up to whitespace. Python's re runs it about 1.7x faster than regex.
_UNIT = re.compile(
    f"[{BASES}](?:{COENG}[{BASES}]|[\u17b4-\u17d1\u17d3\u17dd{ZWNJ}{ZWJ}])*"
    f"|[^{WHITESPACE}{BASES}]+"
)
_URL = regex.compile(r"(?:https?://|www\.)\S+", flags=regex.IGNORECASE)


_ASCII_NOT_WHITESPACE_FOR_REGEX = re.compile("[\x1c-\x1f]")  # str.split() splits there, regex's \s does not


def units(text: str) -> list[str]:
    """Word-like units: Khmer syllables, and whitespace-separated pieces of any other script."""
    if text.isascii() and not _ASCII_NOT_WHITESPACE_FOR_REGEX.search(text):
        return text.split()  # the same pieces, about 5x faster
    return _UNIT.findall(text)


@dataclasses.dataclass(frozen=True)
class FilterThresholds:
    """Defaults follow Gopher (Rae et al., 2021) where it has one. What they drop on the shared data
    besides too_short and script routing (documents = lines, articles for the .jsonl): Khmer news
    11 repeated_ngrams, 2 too_many_urls, 1 invalid_khmer_clusters of 9,815 lines; Khmer news
    articles 35 repeated_lines, 20 repeated_ngrams, 1 too_many_urls of 1,000; OSCAR sample 7
    repeated_ngrams, 4 invalid_khmer_clusters, 2 too_many_urls, 2 replacement_chars, 1
    too_many_digits of 5,000; WikiText-2 test 92 too_many_symbols (mostly ``= = Heading = =``
    lines), 3 too_many_digits, 2 repeated_ngrams of 2,891; Tiny Shakespeare 1 too_few_words of
    32,777."""

    min_chars: int = 20
    min_units: int = 3
    max_dup_line_frac: float = 0.30   # share of lines that repeat an earlier line (Gopher: 0.30)
    max_dup_ngram_frac: float = 0.30  # share of units inside a repeated unit 5-gram
    max_digit_frac: float = 0.30      # digits over non-space characters
    max_symbol_frac: float = 0.30     # punctuation and symbols over non-space characters
    max_url_frac: float = 0.20        # characters inside URLs over all characters


def too_short(text: str, min_chars: int) -> str | None:
    """Drop documents with fewer than ``min_chars`` non-space characters."""
    n = len(text) - text.count(" ") - text.count("\n") - text.count("\t")
    return "too_short" if n < min_chars else None


def too_few_units(us: list[str], min_units: int) -> str | None:
    return "too_few_words" if len(us) < min_units else None


def repeated_lines(text: str, max_frac: float) -> str | None:
    """Drop documents where more than ``max_frac`` of the non-empty lines repeat an earlier line."""
    if text.count("\n") < 2:  # at most two lines
        return None
    lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
    if len(lines) < 3:
        return None
    dup = len(lines) - len(set(lines))
    return "repeated_lines" if dup / len(lines) > max_frac else None


_NUMPY_MIN_UNITS = 300  # below this, numpy's per-call cost exceeds what it saves
# Repeated n-grams are counted over about five words (Gopher's 5-grams). A Khmer unit is a
# syllable, and a Khmer word is 2.4 syllables on average (the CRF-segmented OSCAR sample of
# ../shared/data), so Khmer text is checked for repeated 12-grams of syllables. With 5-grams of
# syllables (about two words: a name, a ministry's title) 245 of the 1,000 clean news articles of
# ../shared/data went over the 0.30 share and were dropped; with 12-grams 55, 39 of them articles
# whose body appears twice (a share of about 0.5). WikiText-2's test articles (5-grams of words):
# 3 of 2,891.
NGRAM_WORDS = 5
NGRAM_KHMER_SYLLABLES = 12


def ngram_units(counts: ScriptCounts) -> int:
    """The n of :func:`repeated_ngrams` for a text: 12 syllables where most letters are Khmer,
    5 words otherwise."""
    return NGRAM_KHMER_SYLLABLES if 2 * counts.khmer > counts.letters else NGRAM_WORDS


def repeated_ngrams(us: list[str], max_frac: float, n: int = NGRAM_WORDS) -> str | None:
    """Drop documents where more than ``max_frac`` of the units sit in a unit ``n``-gram seen
    earlier in the same document (spam, boilerplate, a looping scraper); ``n``: :func:`ngram_units`."""
    if len(us) < 4 * n:
        return None
    if len(us) >= _NUMPY_MIN_UNITS:
        starts = _repeat_starts_numpy(us, n)
    else:
        starts = _repeat_starts(us, n)
    # each repeat covers its n units; sorted starts overlap only with their neighbours
    covered = sum(min(n, b - a) for a, b in zip(starts, starts[1:])) + n if starts else 0
    return "repeated_ngrams" if covered / len(us) > max_frac else None


def _repeat_starts(us: list[str], n: int) -> list[int]:
    """Positions where a unit n-gram seen earlier starts, in order."""
    grams = list(zip(*(us[k:] for k in range(n))))  # the n-gram starting at each unit
    if len(set(grams)) == len(grams):
        return []
    # first position of each n-gram (dict keeps the last value given: walk backwards)
    first = dict(zip(reversed(grams), range(len(grams) - 1, -1, -1)))
    return list(itertools.compress(itertools.count(), map(operator.ne, map(first.__getitem__, grams),
                                                          itertools.count())))


def _repeat_starts_numpy(us: list[str], n: int) -> list[int]:
    """Same as :func:`_repeat_starts`, each n-gram coded as one integer: every unit gets the
    position of its first occurrence (< m), an n-gram the base-m number of its n codes while
    m**n < 2**63, else an id built by :func:`_gram_ids` (exact either way)."""
    m = len(us)
    seen: dict[str, int] = {}
    codes = np.fromiter(map(seen.setdefault, us, itertools.count()), dtype=np.int64, count=m)
    if m ** n < 2 ** 63:
        keys = codes[:m - n + 1].copy()
        for j in range(1, n):
            keys *= m
            keys += codes[j:m - n + 1 + j]
    else:
        keys = _gram_ids(codes, n)
    uniq, first = np.unique(keys, return_index=True)  # first: where each distinct n-gram first occurs
    if len(uniq) == len(keys):
        return []
    repeat = np.ones(len(keys), dtype=bool)
    repeat[first] = False
    return np.flatnonzero(repeat).tolist()


def _gram_ids(codes: np.ndarray, n: int) -> np.ndarray:
    """Ids of the n-grams starting at each position (equal ids exactly for equal n-grams), by
    doubling: the ids of 2k-grams are the ranks of the pairs (k-gram here, k-gram k further on),
    each pair one int64 below m**2; n is put together from its binary digits."""
    def join(a: np.ndarray, la: int, b: np.ndarray) -> np.ndarray:
        size = min(len(a), len(b) - la)
        key = a[:size] * (int(b.max()) + 1) + b[la:la + size]
        return np.unique(key, return_inverse=True)[1].astype(np.int64)

    power, plen = codes, 1
    out, olen = None, 0
    while True:
        if n & plen:
            out, olen = (power, plen) if out is None else (join(out, olen, power), olen + plen)
        if 2 * plen > n:
            return out
        power, plen = join(power, plen, power), 2 * plen


def symbol_ratios(text: str, counts: ScriptCounts, t: FilterThresholds) -> str | None:
    """Digits, symbols/punctuation and URLs as shares of the document's characters."""
    nonspace = counts.letters + counts.digit + counts.punct
    if nonspace == 0:
        return "no_letters"
    if counts.digit / nonspace > t.max_digit_frac:
        return "too_many_digits"
    if counts.punct / nonspace > t.max_symbol_frac:
        return "too_many_symbols"
    if "http" in text or "www." in text:
        url_chars = sum(len(m) for m in _URL.findall(text))
        if url_chars / max(1, len(text)) > t.max_url_frac:
            return "too_many_urls"
    return None


def script_mismatch(counts: ScriptCounts, declared: str, thresholds: RoutingThresholds) -> str | None:
    """Drop documents whose script routing disagrees with the language declared for their source."""
    routed = route(counts, thresholds)
    return None if routed == declared else f"script_{routed}_in_{declared}_source"


def bad_quality(text: str, counts: ScriptCounts | None = None) -> str | None:
    """Drop documents over a quality threshold of :mod:`tonsai.text.quality` (U+FFFD rate,
    invalid Khmer clusters, legacy-font suspicion); the reason names the first flag raised.

    With ``counts`` showing no Khmer character, the Khmer cluster check (the slow part on English
    text) is skipped: its rate is 0 there by definition."""
    return first_flag(text, khmer=counts is None or counts.khmer > 0, khmer_chars=None if counts is None else counts.khmer)


def quality_reason(text: str, counts: ScriptCounts, t: FilterThresholds) -> str | None:
    """The quality filters after length and script routing, in order; the first reason or None."""
    us = units(text)
    return (too_few_units(us, t.min_units) or symbol_ratios(text, counts, t)
            or repeated_lines(text, t.max_dup_line_frac)
            or repeated_ngrams(us, t.max_dup_ngram_frac, ngram_units(counts)) or bad_quality(text, counts))


def first_reason(text: str, counts: ScriptCounts, declared: str, routing: RoutingThresholds,
                 t: FilterThresholds) -> str | None:
    """Run every filter in a fixed order (cheapest first) and return the first reason, or None
    (the prepare stage runs the same order as datatrove blocks: tonsai.data.blocks)."""
    return too_short(text, t.min_chars) or script_mismatch(counts, declared, routing) or quality_reason(text, counts, t)
