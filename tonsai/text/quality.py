"""Quality signals per document (KHMER.md section 2), computed on normalized text.

- ``replacement_rate``: share of characters that are U+FFFD (decoding damage); flag above 0.1%.
- ``invalid_cluster_rate``: share of Khmer clusters (:func:`tonsai.text.segment.clusters`) that are
  not well-formed syllables (:func:`tonsai.text.syllable.is_valid_syllable`); flag above 2%.
- ``legacy_font_score``: share of Latin-looking words that look like pre-Unicode Khmer typed for a
  Limon/ABC font, where Khmer glyphs sit on Latin code points and text reads as gibberish such as
  ``RbeTskm<úCa``. Script ratios cannot see it. A word counts when it has 3+ characters and has
  ASCII punctuation between two letters (``m:an``), or a Latin-1 symbol such as ``¬`` or ``³``
  between two letters, or at least two lowercase-to-uppercase flips (``ehIyRbCa``; one flip is
  a brand name like ``YouTube``). A document is suspect when at least 5 such Latin-looking words
  outnumber its Khmer clusters and at least 30% of them look garbled. Measured: no line of
  WikiText-2, Tiny Shakespeare or the Khmer news is flagged (the news carries French names and
  «quoted» English titles). This is a heuristic: no real legacy-font corpus was at hand to tune it.

The prepare stage asks :func:`first_flag`, which gives ``quality_signals(text).flags[0]`` while
computing only what decides it (tests/text/test_quality.py checks both against a plain
per-cluster, per-word computation).
"""

from __future__ import annotations

import collections
import dataclasses
import operator
import re

import regex

from tonsai.text.segment import clusters
from tonsai.text.khmer import BLOCKS, SYLLABLE_CHAR
from tonsai.text.syllable import VALID_SYLLABLE, is_valid_syllable

REPLACEMENT_FLAG = 0.001
INVALID_CLUSTER_FLAG = 0.02
LEGACY_SCORE_FLAG = 0.3
LEGACY_MIN_WORDS = 5

_LATIN_WORD = regex.compile(rf"[^\s{BLOCKS}]{{3,}}")
_GARBLED = regex.compile(
    r"\p{L}[;:\[\]{}|\\`~^@<>=+\u00a1-\u00bf\u00d7\u00f7]+\p{L}"  # punctuation or Latin-1 symbol between letters
    r"|\p{Ll}\p{Lu}.*\p{Ll}\p{Lu}"                               # two lower-to-upper flips in a word
)


@dataclasses.dataclass(frozen=True)
class QualitySignals:
    replacement_rate: float
    khmer_clusters: int
    invalid_cluster_rate: float
    legacy_words: int
    legacy_font_score: float

    @property
    def flags(self) -> list[str]:
        """Names of the signals over their thresholds."""
        out = []
        if self.replacement_rate > REPLACEMENT_FLAG:
            out.append("replacement_chars")
        if self.invalid_cluster_rate > INVALID_CLUSTER_FLAG:
            out.append("invalid_khmer_clusters")
        if (self.legacy_words >= LEGACY_MIN_WORDS and self.legacy_words > self.khmer_clusters
                and self.legacy_font_score >= LEGACY_SCORE_FLAG):
            out.append("legacy_font_suspect")
        return out


# A necessary condition for a _GARBLED match in some word, checked on the whole text in one pass:
# the first alternative needs a letter, a symbol and a letter in a row, the second a lowercase
# letter followed by an uppercase one (Khmer letters may match here too: it only has to be loose).
# On ASCII text \p{L} is [A-Za-z], \p{Ll} [a-z] and \p{Lu} [A-Z], and Python's re is faster.
_MAYBE_GARBLED = regex.compile(
    r"\p{L}[;:\[\]{}|\\`~^@<>=+\u00a1-\u00bf\u00d7\u00f7]+\p{L}|\p{Ll}\p{Lu}")
_MAYBE_GARBLED_ASCII = re.compile(r"[A-Za-z][;:\[\]{}|\\`~^@<>=+]+[A-Za-z]|[a-z][A-Z]")


def _maybe_garbled(text: str) -> bool:
    pattern = _MAYBE_GARBLED_ASCII if text.isascii() else _MAYBE_GARBLED
    return pattern.search(text) is not None


# Caches, per distinct cluster: 1 when it holds a Khmer letter or sign, 1 when it is such a cluster
# and not a valid syllable; per distinct space-separated piece of text: its (invalid, total) counts.
# Counting a document's pieces and clusters with collections.Counter (in C) and weighting the counts
# keeps Python out of the per-cluster loop; each cache starts afresh when full.
_is_khmer: dict[str, int] = {}
_is_invalid: dict[str, int] = {}
_piece_invalid: dict[str, int] = {}
_piece_total: dict[str, int] = {}
_CACHE_LIMIT = 100_000
# pieces are longer than clusters (a Khmer phrase between spaces), and only the documents that
# _all_valid does not settle come here: 20,000 of them (about 4 MB) is enough to catch repeats
# (100,000 held 20 MB at the end of the 10x corpus, the document step's largest growth over 1x)
_PIECE_CACHE_LIMIT = 20_000


def _weighted(counts: collections.Counter, weights: dict[str, int]) -> int:
    return sum(map(operator.mul, counts.values(), map(weights.__getitem__, counts)))


def _piece_counts(piece: str) -> tuple[int, int]:
    found = clusters(piece)  # a piece is short: summing the weights beats counting first
    distinct = set(found)
    new = distinct.difference(_is_khmer)
    if new:
        if len(_is_khmer) + len(new) > _CACHE_LIMIT:
            _is_khmer.clear()
            _is_invalid.clear()
            new = distinct
        for c in new:
            k = _is_khmer[c] = 1 if SYLLABLE_CHAR.search(c) else 0
            _is_invalid[c] = 1 if k and not is_valid_syllable(c) else 0
    return sum(map(_is_invalid.__getitem__, found)), sum(map(_is_khmer.__getitem__, found))


# What can join a grapheme cluster from outside a well-formed syllable: Khmer letters and signs,
# and any character that \X attaches to its neighbour (combining marks, spacing marks, joiners,
# prepended characters), from the regex package's own tables; \X also joins U+1CF5, U+1CF6 and
# U+11A3A to a following letter, which its Prepend class leaves out
# (tests/text/test_quality.py checks every code point below U+30000 against \X itself).
_CLUSTER_JOINER = regex.compile(
    r"[\u1780-\u17d3\u17dd\p{Grapheme_Cluster_Break=Extend}\p{Grapheme_Cluster_Break=SpacingMark}"
    r"\p{Grapheme_Cluster_Break=ZWJ}\p{Grapheme_Cluster_Break=Prepend}\u1cf5\u1cf6\U00011a3a]")


def _all_valid(text: str) -> int | None:
    r"""The number of Khmer clusters of ``text`` when none is invalid and that shows in one pass,
    else None. Take out every well-formed syllable (leftmost, longest): when no Khmer letter or
    sign and nothing that joins a cluster is left, each syllable taken out was one whole \X
    cluster (it starts at a base that nothing before it joins, and nothing after it could have
    extended it), and every Khmer cluster was one of them. 99% of the Khmer documents of
    ../shared/data take this way, at about twice the speed of counting the clusters one by one
    on a first pass over the corpus (tests/text/test_quality.py checks it against that count)."""
    rest, n = VALID_SYLLABLE.subn("", text)
    return n if _CLUSTER_JOINER.search(rest) is None else None


def invalid_cluster_counts(text: str) -> tuple[int, int]:
    """(invalid, total) Khmer clusters of ``text``.

    Counted per piece between spaces (U+0020), each distinct piece once: a third of the Khmer news
    is distinct pieces. The sums are those of the whole text: a cluster never holds Khmer on both
    sides of a space (only a Prepend character, which is not Khmer, joins the space that follows
    it), and a space that starts a cluster of marks makes it invalid just as the marks alone are.
    """
    total = _all_valid(text)
    if total is not None:
        return 0, total
    pieces = collections.Counter(text.split(" "))
    new = set(pieces).difference(_piece_total)
    if new:
        if len(_piece_total) + len(new) > _PIECE_CACHE_LIMIT:
            _piece_invalid.clear()
            _piece_total.clear()
            new = set(pieces)
        for piece in new:
            _piece_invalid[piece], _piece_total[piece] = _piece_counts(piece)
    return _weighted(pieces, _piece_invalid), _weighted(pieces, _piece_total)


def legacy_font_counts(text: str) -> tuple[int, int]:
    """(garbled-looking, total) Latin-looking words of ``text``."""
    words = _LATIN_WORD.findall(text)
    if not _maybe_garbled(text):
        return 0, len(words)
    return sum(1 for w in words if _GARBLED.search(w)), len(words)


def first_flag(text: str, khmer: bool = True, khmer_chars: int | None = None) -> str | None:
    """The first of :attr:`QualitySignals.flags` for ``text``, or None: the same answer as
    ``quality_signals(text).flags[0]``, computing only what decides it. ``khmer=False`` says the
    text holds no Khmer character (its cluster counts are then 0 without looking);
    ``khmer_chars``, when known, is its number of characters in the Khmer blocks."""
    if text and text.count("\ufffd") / len(text) > REPLACEMENT_FLAG:
        return "replacement_chars"
    invalid, total = invalid_cluster_counts(text) if khmer else (0, 0)
    if (invalid / total if total else 0.0) > INVALID_CLUSTER_FLAG:
        return "invalid_khmer_clusters"
    # a Latin-looking word is 3+ characters outside the Khmer blocks, so there are at most a third
    # as many as such characters
    most_words = (len(text) - khmer_chars) // 3 if khmer_chars is not None else None
    return "legacy_font_suspect" if _legacy_suspect(text, total, most_words) else None


def _legacy_suspect(text: str, khmer_clusters: int, most_words: int | None = None) -> bool:
    # Cheap ways out, in the order that suits the text: too few characters outside Khmer for
    # enough Latin-looking words (most Khmer text: no pass over it), a text without Khmer clusters
    # is usually Latin (the whole-text pre-check is fast there), one with clusters rarely has more
    # Latin-looking words than clusters (and the word pattern is fast on Khmer). No garbled word
    # means a score of 0, under the flag.
    if most_words is not None and (most_words < LEGACY_MIN_WORDS or most_words <= khmer_clusters):
        return False
    clean_passes = LEGACY_SCORE_FLAG > 0
    if clean_passes and not khmer_clusters and not _maybe_garbled(text):
        return False
    words = _LATIN_WORD.findall(text)
    if len(words) < LEGACY_MIN_WORDS or len(words) <= khmer_clusters:
        return False
    if clean_passes and khmer_clusters and not _maybe_garbled(text):
        return False
    return sum(1 for w in words if _GARBLED.search(w)) / len(words) >= LEGACY_SCORE_FLAG


def quality_signals(text: str) -> QualitySignals:
    invalid, total = invalid_cluster_counts(text)
    garbled, words = legacy_font_counts(text)
    return QualitySignals(
        replacement_rate=text.count("\ufffd") / len(text) if text else 0.0,
        khmer_clusters=total,
        invalid_cluster_rate=invalid / total if total else 0.0,
        legacy_words=words,
        legacy_font_score=garbled / words if words else 0.0,
    )
