"""Hypothesis strategies that build Khmer-structured text, for the normalizer's property tests.

``st.text()`` over the Khmer block rarely builds what real typing produces: a base followed by a
subscript, a register shifter, two dependent vowels typed one after the other, a sign typed twice,
a joiner between a consonant and its COENG. These strategies build such clusters on purpose, in a
random order of their parts (the reordering rule's input), repeat marks, and mix the clusters with
Latin words, digits, punctuation, spaces, line breaks, invisible and control characters and
mojibake, so that every rule of tonsai.text.normalize meets its neighbours.
"""

from __future__ import annotations

from hypothesis import strategies as st

CONSONANTS = [chr(c) for c in range(0x1780, 0x17A3)]  # KA..QA
INDEPENDENT_VOWELS = [chr(c) for c in range(0x17A3, 0x17B4)]  # includes the deprecated U+17A3, U+17A4
COENG, ZWNJ, ZWJ, ZWSP = "\u17d2", "\u200c", "\u200d", "\u200b"
ROBAT = "\u17cc"
SHIFTERS = ["\u17c9", "\u17ca"]
DEPENDENT_VOWELS = [chr(c) for c in range(0x17B6, 0x17C6)]  # AA..AU: spacing, above, below (U among them), split
SIGNS = ["\u17c6", "\u17c7", "\u17c8", "\u17cb", "\u17cd", "\u17ce", "\u17cf", "\u17d0", "\u17d1", "\u17d3", "\u17dd"]
INHERENT = ["\u17b4", "\u17b5"]  # deprecated, deleted by rule 7
PUNCT_DIGITS = ["\u17d4", "\u17d5", "\u17d6", "\u17d8", "\u17db", "\u17e0", "\u17e5", "\u17f0", "\u19e0"]
JOINERS = [ZWNJ, ZWJ, ZWSP, "\u2060", "\ufeff", "\u00ad"]
OTHER = [" ", "\n", "\t", "\r", "\r\n", "\u00a0", "\u2028", "\x00", "\x1b", "\x7f", "\x85", "\ud800", "\ufffd"]
MOJIBAKE = [s.encode("utf-8").decode("latin-1") for s in ("é", "ក", "“", "ប្រ", "à")] + ["Ã", "©", "ß", "¢", "â€"]
LATIN = st.lists(st.sampled_from(list("abcdefghijklmnopqrstuvwxyzAZ0189.,;'\"-") + ["é", "e\u0301", "ß", "ﬁ"]),
                 min_size=1, max_size=8).map("".join)

# The parts a cluster can carry after its base, each a string (a subscript is COENG + consonant,
# sometimes after a ZWJ or with a repeated COENG; a vowel is sometimes after a ZWNJ), drawn in any
# order (the reordering rule's input) and sometimes typed two or three times.
SUBSCRIPTS = [z + COENG * n + c for z in ("", ZWJ) for n in (1, 2) for c in CONSONANTS]
VOWELS = [z + v for z in ("", ZWNJ) for v in DEPENDENT_VOWELS + INHERENT]
marks = st.one_of(st.sampled_from(SUBSCRIPTS), st.sampled_from(VOWELS), st.sampled_from(VOWELS),
                  st.sampled_from(SIGNS + SHIFTERS + [ROBAT, COENG]), st.sampled_from(JOINERS))
repeated_marks = st.tuples(marks, st.sampled_from([1, 1, 1, 2, 3])).map(lambda t: t[0] * t[1])


def clusters() -> st.SearchStrategy[str]:
    """A base and up to six parts in random order, a part sometimes repeated (repeated dependent
    vowels, repeated signs, repeated subscripts)."""
    return st.tuples(st.sampled_from(CONSONANTS + CONSONANTS + INDEPENDENT_VOWELS),
                     st.lists(repeated_marks, max_size=6)).map(lambda t: t[0] + "".join(t[1]))


pieces = st.one_of(
    clusters(), clusters(), clusters(), clusters(),  # mostly Khmer
    LATIN,
    st.sampled_from(PUNCT_DIGITS + OTHER + MOJIBAKE + JOINERS),
    marks,  # a mark with no base (after a space, at the start of a line)
)


def khmer_text(max_pieces: int = 12) -> st.SearchStrategy[str]:
    """Text of Khmer clusters mixed with Latin words, digits, punctuation, whitespace, invisible and
    control characters and mojibake."""
    return st.lists(pieces, max_size=max_pieces).map("".join)


# Characters whose rules meet: Khmer letters and marks (COENG and U+17DD have combining classes 9
# and 230), joiners, combining diacritics of other classes (U+0334: 1, U+093C: 7, U+0327: 202,
# U+0300: 230), C1 controls, soft hyphen and NBSP (what mojibake is made of), mojibake letters,
# controls, a lone surrogate and line breaks.
EDGE_CHARS = ["\u1780", "\u1781", "\u17d2", "\u17dd", "\u17b7", "\u17bb", "\u17c1", "\u17b6", ZWNJ, ZWJ, ZWSP,
              "\u0300", "\u0301", "\u0303", "\u0327", "\u093c", "\u0334", "\x85", "\x9c", "\xad", "\xa0", "\x08",
              "\x00", "\r", "\n", " ", "A", "a", "C", "e", "Ã", "Â", "â", "€", "©", "ß", "¢", "á", "ž", "Œ",
              "\ud800", "\u2028"]


def edge_text(max_size: int = 30) -> st.SearchStrategy[str]:
    """Short text over :data:`EDGE_CHARS`, where one rule's output can become another's input."""
    return st.text(st.sampled_from(EDGE_CHARS), max_size=max_size)
