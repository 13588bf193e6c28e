"""Script analysis and language routing per document (../shared/KHMER.md section 2).

Characters are counted by class: Khmer (U+1780..U+17FF and U+19E0..U+19FF, Khmer digits and
punctuation included), Latin letters, digits, punctuation and symbols, and other letters.
Whitespace and invisible characters are not counted. The Khmer share is Khmer characters over all
letters (Khmer + Latin + other letters); routing thresholds are configurable.
"""

from __future__ import annotations

import dataclasses
import re

import regex

from tonsai.text.khmer import BLOCKS, DIGITS, SYMBOLS

_KHMER = regex.compile(f"[{BLOCKS}]")
_LATIN = regex.compile(r"\p{Script=Latin}")
_DIGIT = regex.compile(rf"[0-9\p{{Nd}}--[{DIGITS}]]", flags=regex.V1)
_PUNCT = regex.compile(rf"[\p{{P}}\p{{S}}--[{BLOCKS}]]", flags=regex.V1)
_OTHER_LETTER = regex.compile(rf"[\p{{L}}\p{{M}}--[{BLOCKS}\p{{Script=Latin}}]]", flags=regex.V1)


@dataclasses.dataclass(frozen=True)
class ScriptCounts:
    khmer: int
    latin: int
    digit: int
    punct: int
    other: int

    @property
    def letters(self) -> int:
        return self.khmer + self.latin + self.other

    @property
    def khmer_share(self) -> float:
        """Khmer characters over all letters (0.0 when there are no letters)."""
        return self.khmer / self.letters if self.letters else 0.0

    @property
    def latin_share(self) -> float:
        return self.latin / self.letters if self.letters else 0.0


# ASCII members of each class (tests/text/test_script.py checks them against the patterns above)
_ASCII_LATIN = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ASCII_DIGIT = b"0123456789"
_ASCII_PUNCT = b"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
_ASCII = bytes(range(128))
# characters that are neither ASCII nor Khmer: the only ones the patterns must look at one by one
_REST = re.compile(f"[^\x00-\x7f{BLOCKS}]")
_KHMER_SYMBOLS = re.compile(f"[{SYMBOLS}]")


def _removed(data: bytes, chars: bytes) -> int:
    return len(data) - len(data.translate(None, chars))


def count_scripts(text: str) -> ScriptCounts:
    """Count the characters of ``text`` by script class.

    Counted on the UTF-8 bytes where that is exact: an ASCII byte is always an ASCII character, and
    U+1780..U+17FF are exactly the characters that start with bytes E1 9E or E1 9F. Only the
    characters that are neither ASCII nor Khmer go through the Unicode property patterns, which
    cost about 10x more per character.
    """
    data = text.encode("utf-8", "surrogatepass")
    latin, digit, punct = _removed(data, _ASCII_LATIN), _removed(data, _ASCII_DIGIT), _removed(data, _ASCII_PUNCT)
    if len(data) == len(text):  # pure ASCII
        return ScriptCounts(khmer=0, latin=latin, digit=digit, punct=punct, other=0)
    khmer = data.count(b"\xe1\x9e") + data.count(b"\xe1\x9f")
    if b"\xe1\xa7" in data:  # U+19C0..U+19FF: only U+19E0.. are Khmer (symbols)
        khmer += len(_KHMER_SYMBOLS.findall(text))
    other = 0
    non_ascii = len(text) - _removed(data, _ASCII)
    if non_ascii > khmer:
        rest = "".join(_REST.findall(text))
        latin += _LATIN.subn("", rest)[1]
        digit += _DIGIT.subn("", rest)[1]
        punct += _PUNCT.subn("", rest)[1]
        other = _OTHER_LETTER.subn("", rest)[1]
    return ScriptCounts(khmer=khmer, latin=latin, digit=digit, punct=punct, other=other)


@dataclasses.dataclass(frozen=True)
class RoutingThresholds:
    """Defaults from KHMER.md section 2 (1st percentile of real Khmer news is 0.77)."""

    khmer_min_share: float = 0.60
    khmer_min_chars: int = 30
    mixed_min_share: float = 0.20
    latin_min_share: float = 0.60


def route(counts: ScriptCounts, t: RoutingThresholds = RoutingThresholds()) -> str:
    """Return ``"km"``, ``"en"``, ``"mixed"`` or ``"other"`` for a document's script counts."""
    share = counts.khmer_share
    if share >= t.khmer_min_share and counts.khmer >= t.khmer_min_chars:
        return "km"
    if share >= t.mixed_min_share:
        return "mixed"
    if counts.latin_share >= t.latin_min_share:
        return "en"
    return "other"
