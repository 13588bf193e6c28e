"""Khmer characters: the code point ranges and patterns that tonsai's text, data, safety and eval
modules match, in one place (../shared/KHMER.md section 1).

Ranges are strings to put inside a character class (``f"[^{BLOCKS}]"``), so that a module can
build its own pattern from them with Python's ``re`` or the ``regex`` package; the compiled
patterns here use ``re`` (the classes need no Unicode property, and ``re`` is the faster of the
two on a plain class).
"""

from __future__ import annotations

import re

BLOCK = "\u1780-\u17ff"              # the Khmer block: letters, signs, digits, punctuation
SYMBOLS = "\u19e0-\u19ff"            # the Khmer Symbols block (lunar dates)
BLOCKS = BLOCK + SYMBOLS             # every Khmer character
CONSONANTS = "\u1780-\u17a2"
BASES = "\u1780-\u17b3"              # consonants and independent vowels: each starts a syllable
SYLLABLE_CHARS = "\u1780-\u17d3\u17dd"  # letters, vowels and signs: what a syllable is made of
DIGITS = "\u17e0-\u17e9"

COENG, ZWNJ, ZWJ = "\u17d2", "\u200c", "\u200d"

KHMER_CHAR = re.compile(f"[{BLOCKS}]")
SYLLABLE_CHAR = re.compile(f"[{SYLLABLE_CHARS}]")
