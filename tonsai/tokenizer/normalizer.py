"""tonsai's normalization inside tokenizer.json, for users who call the tokenizer on raw text.

A ``tokenizers`` normalizer is a chain of literal or regex replacements without back-references,
so it can carry every character-level rule of :func:`tonsai.text.normalize` but not all of them:

- carried: line endings (rule 2), invisible format characters (3), controls (4), NBSP (5), NFC
  (6), deprecated Khmer characters (7), stray ZWJ/ZWNJ after Khmer (8, one joiner at a time), and
  the parts of the syllable rule 9 that need no reordering: subscript DA -> TA, split vowel
  composition, subscript RO moved after another subscript, vowel sign U to the onset's register
  shifter when nothing stands between them;
- not carried: mojibake repair (1), the general reordering of signs inside a syllable (a vowel
  typed before a subscript, say), and duplicate-mark removal.

On normalized text the chain changes nothing, so training and the pipeline (which normalize with
tonsai first) are unaffected. On raw text, tests/tokenizer/test_normalizer.py measures how often the
chain gives exactly ``normalize(raw)``: 98.8% of the raw lines of the shared Khmer news (NFC alone:
about a third). For exact results, normalize with ``tonsai.text.normalize`` first.
"""

from __future__ import annotations

from tokenizers import Regex, normalizers

from tonsai.text.syllable import SHIFTER_17C9_ONSETS

COENG = "\u17d2"
_CONSONANTS = [chr(c) for c in range(0x1780, 0x17A3)]


def khmer_normalizer():
    """The ``tokenizers`` normalizer described in the module docstring."""
    steps = [
        normalizers.Replace("\r\n", "\n"),
        normalizers.Replace(Regex("[\r\u2028\u2029]"), "\n"),
        normalizers.Replace(Regex("[\ufeff\u200b\u2060\u00ad\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"), ""),
        normalizers.Replace("\u00a0", " "),
        normalizers.NFC(),
        normalizers.Replace("\u17a3", "\u17a2"),
        normalizers.Replace("\u17a4", "\u17a2\u17b6"),
        normalizers.Replace(Regex("[\u17b4\u17b5]"), ""),
        normalizers.Replace("\u17d8", "\u17d4\u179b\u17d4"),
        normalizers.Replace(Regex("(?<=[\u1780-\u17ff])\u200c(?![\u17b6-\u17c5])"), ""),
        normalizers.Replace(Regex("(?<=[\u1780-\u17ff])\u200d(?!\u17d2)"), ""),
    ]
    # rule 9 acts inside a syllable only. A base character (consonant, subscript consonant or
    # independent vowel) right before the sequence proves it is inside one; without back-references
    # or variable-length lookbehind, sequences further from their base are left to normalize().
    in_syllable = "(?<=[\u1780-\u17b3])"
    steps += [normalizers.Replace(Regex(in_syllable + a), b) for a, b in (
        (COENG + "\u178a", COENG + "\u178f"),
        ("\u17c1\u17b8", "\u17be"),
        ("\u17c1\u17b6", "\u17c4"),
        ("\u17be\u17b6", "\u17c4\u17b8"),
    )]
    # vowel sign U written with an above vowel becomes the onset's register shifter (onset directly
    # before it; with a robat or subscript in between it stays, as the docstring says)
    after_u = "(?=[\u17b7-\u17ba\u17be\u17bf\u17dd\u17d0]|\u17b6\u17c6)"
    takes_17c9 = "".join(sorted(SHIFTER_17C9_ONSETS))
    takes_17ca = "".join(c for c in map(chr, range(0x1780, 0x17B4)) if c not in SHIFTER_17C9_ONSETS)
    steps += [normalizers.Replace(Regex(f"(?<=[{takes_17c9}])\u17bb{after_u}"), "\u17c9"),
              normalizers.Replace(Regex(f"(?<=[{takes_17ca}])\u17bb{after_u}"), "\u17ca")]
    ro = COENG + "\u179a"
    steps += [normalizers.Replace(Regex(in_syllable + ro + COENG + c), COENG + c + ro)
              for c in _CONSONANTS if c != "\u179a"]
    return normalizers.Sequence(steps)
