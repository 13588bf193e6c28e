"""Canonical order of the characters inside a Khmer orthographic syllable (KHMER.md section 1, rule 9).

Khmer allows several typing orders that render the same; this module picks one. A syllable is a
base (consonant U+1780..U+17A2 or independent vowel U+17A5..U+17B3) followed by its signs; a
consonant after COENG (subscript) or ZWJ belongs to the same syllable. Inside a syllable the
characters are stable-sorted by class:

    base < robat < COENG+consonant < register shifters < ZWNJ < pre/split vowels < below vowels
    < above vowels < AA < other signs < final signs < ZWJ

with these units kept whole: COENG with its consonant, ZWJ with the COENG subscript it precedes,
and ZWNJ with the vowel it precedes (joiners stay where they do their job; SIL's published code
moves them). Subscript RO sorts after the other subscripts. Before the sort, repeated COENGs and
joiners right after a COENG are removed, a COENG with no consonant after it is removed (it has
nothing to subscript; sorted, it would end up beside a mark or before the next syllable's
consonant and change again on the next call), and subscript DA becomes subscript TA (they render
identically). After the sort: an adjacent exact duplicate of a non-spacing mark other than COENG
is dropped (duplicated spacing vowels are visible and stay); vowel sign U written with an above
vowel becomes the register shifter the onset takes (U+17C9 for the consonants listed in
``SHIFTER_17C9_ONSETS``, which include NYO U+1789, U+17CA for the rest); split vowels are
composed (U+17C1+U+17B8 -> U+17BE, U+17C1+U+17B6 -> U+17C4, U+17BE+U+17B6 -> U+17C4+U+17B8, a
below vowel may sit between). :func:`reorder_syllable` says why the result is a fixed point.

Results are cached per syllable: real text has under 2,000 distinct marked syllables per MB.
"""

from __future__ import annotations

import re
import unicodedata

from tonsai.text.khmer import BASES, COENG, CONSONANTS, SYLLABLE_CHAR, SYLLABLE_CHARS, ZWJ, ZWNJ

U, RO, DA, TA = "\u17bb", "\u179a", "\u178a", "\u178f"


def _class_of(c: str) -> int:
    cp = ord(c)
    if 0x1780 <= cp <= 0x17A2 or 0x17A5 <= cp <= 0x17B3:
        return 0  # base
    if cp == 0x17CC:
        return 1  # robat
    if cp == 0x17D2:
        return 2  # coeng (with its consonant)
    if cp in (0x17C9, 0x17CA):
        return 3  # register shifters
    if c == ZWNJ:
        return 4
    if 0x17BE <= cp <= 0x17C5:
        return 5  # pre and split vowels
    if 0x17BB <= cp <= 0x17BD:
        return 6  # below vowels
    if 0x17B7 <= cp <= 0x17BA:
        return 7  # above vowels
    if cp == 0x17B6:
        return 8  # AA
    if cp in (0x17C6, 0x17CB, 0x17D3, 0x17DD) or 0x17CD <= cp <= 0x17D1:
        return 9  # other signs
    if cp in (0x17C7, 0x17C8):
        return 10  # final signs
    if c == ZWJ:
        return 11
    return 9  # anything else that reached a syllable (U+17B4/5 are deleted earlier)


_CONSONANT = f"[{CONSONANTS}]"
# one syllable: a base, then signs, subscripts (COENG or ZWJ + consonant) and joiners
SYLLABLE = re.compile(
    f"[{BASES}](?:\u200d?{COENG}{_CONSONANT}|\u200d{_CONSONANT}|[\u17b6-\u17d3\u17dd\u200c\u200d])+"
)
_UNIT = re.compile(f"\u200d?{COENG}{_CONSONANT}|\u200d{_CONSONANT}|\u200c[\u17b6-\u17c5]|.", re.DOTALL)

# bases that take U+17C9 to shift register (the others take U+17CA)
SHIFTER_17C9_ONSETS = frozenset(
    "\u1784\u1789\u178e\u1793\u1794" + "".join(map(chr, range(0x1798, 0x179E))) + "\u17a1"
    + "".join(map(chr, range(0x17A3, 0x17B4)))
)
_U_TRIGGERS = re.compile("[\u17b7-\u17ba\u17be\u17bf\u17dd\u17d0]|\u17b6\u17c6")
_U_WITH_ZWNJ = re.compile(f"\u200c?{U}")
# Step 1: deletions and substitutions that do not depend on the order of the units.
_COENG_RUN = re.compile(f"{COENG}[{COENG}\u200c\u200d]*")  # repeated COENG, joiners right after COENG
_BARE_COENG = re.compile(f"\u200d?{COENG}(?!{_CONSONANT})")  # a COENG with no consonant to subscript
# Step 5: split vowels, on sorted text (a below vowel may sit between the two halves).
_COMPOSE = [
    (re.compile("\u17c1([\u17bb-\u17bd]?)\u17b8"), "\u17be\\1"),
    (re.compile("\u17c1([\u17bb-\u17bd]?)\u17b6"), "\u17c4\\1"),
    (re.compile("\u17be([\u17bb-\u17bd]?)\u17b6"), "\u17c4\\1\u17b8"),
]


def _unit_key(unit: str) -> tuple[int, int]:
    if unit[0] == ZWNJ and len(unit) > 1:
        return _class_of(unit[1]), 0
    if COENG in unit and len(unit) > 1 and unit[-1] != COENG:
        return 2, 1 if unit[-1] == RO else 0
    if unit[0] == ZWJ and len(unit) == 2:  # ZWJ + consonant: a subscript written with ZWJ
        return 2, 0
    return _class_of(unit[0]), 0


def _sort(syl: str) -> str:
    units = _UNIT.findall(syl)
    return units[0] + "".join(sorted(units[1:], key=_unit_key))


def _dedupe_marks(s: str) -> str:
    out = [s[0]]
    for c in s[1:]:
        if c == out[-1] and c != COENG and unicodedata.category(c) == "Mn":
            continue
        out.append(c)
    return "".join(out)


def _u_to_shifter(s: str) -> str:
    """Vowel sign U written with an above vowel is the register shifter the onset takes."""
    if U not in s or not _U_TRIGGERS.search(s):
        return s
    shifter = "\u17c9" if s[0] in SHIFTER_17C9_ONSETS else "\u17ca"
    return _sort(_U_WITH_ZWNJ.sub(shifter, s))


def reorder_syllable(syl: str) -> str:
    """Canonical form of one syllable (a match of :data:`SYLLABLE` in text that rule 8 has cleaned).

    Idempotent by construction: every step leaves what the earlier steps produce in place, so the
    result is a fixed point of all of them and a second call changes nothing.

    1. Clean: COENG runs become one COENG and joiners right after it go; subscript DA becomes TA;
       a COENG with no consonant after it goes (with a ZWJ before it), except at the very end
       (below). Afterwards every COENG has its consonant, and later steps neither delete a
       consonant nor add a COENG or a joiner.
    2. Stable sort of the units by class. Steps 3-5 keep the order sorted (3 and 4 delete, 4
       re-sorts, 5 puts each composed vowel in the class of the vowel it replaces, with nothing
       of a lower class after it).
    3. Drop adjacent duplicate non-spacing marks.
    4. Every U (with a ZWNJ before it) becomes the register shifter, if the syllable holds a
       trigger (an above vowel, say): once it fires no U is left, and steps 3 and 5 add no
       trigger (composition only turns a trigger into another: E+II -> OE, OE+AA -> OO+II), so
       a syllable it left alone stays alone. Removing U can bring two equal marks together (the
       new shifter beside a typed one, say): step 3 runs again after it.
    5. Compose split vowels. The compositions make no new duplicate or trigger, and none makes
       the input of another that runs before it (E+II -> OE feeds OE+AA, which runs later).
    6. A COENG that ended the syllable with nothing to subscript (a word cut short: "ល្" at the
       end of a truncated line) comes back last, where the next call finds it again: the next
       character is no consonant, or it would have been the subscript. After U+17DD it goes
       instead: NFC puts COENG (combining class 9) before U+17DD (230) and it would move.
    The output is one syllable again (it starts with its base and cannot absorb the next
    character), and holds only joiners that rule 8 keeps.
    """
    s = _COENG_RUN.sub(COENG, syl).replace(f"{COENG}{DA}", f"{COENG}{TA}")
    cut_short = s[-1] == COENG
    s = _BARE_COENG.sub("", s)
    s = _dedupe_marks(_sort(s))
    s = _dedupe_marks(_u_to_shifter(s))
    for pattern, repl in _COMPOSE:
        s = pattern.sub(repl, s)
    return s + COENG if cut_short and s[-1] != "\u17dd" else s


_cache: dict[str, str] = {}  # every syllable seen -> its canonical form
_changes: dict[str, str] = {}  # the syllables of _cache whose canonical form differs
_CACHE_LIMIT = 200_000
# SYLLABLE with a group, so that split() returns the text between syllables and the syllables
_SPLIT = re.compile(f"({SYLLABLE.pattern})")
_PIECE = 1 << 12
_OUTSIDE_SYLLABLES = re.compile(f"[^{SYLLABLE_CHARS}{ZWNJ}{ZWJ}]")  # ends any syllable, starts none


# Text whose every syllable is already canonical, in the most common shapes: a base, robat,
# subscripts (RO last, no DA: subscript DA becomes TA), a register shifter, one dependent vowel
# (ZWNJ before it allowed; U only without a sign that would turn it into a shifter), one other
# sign, a final sign, each optional and in class order; between syllables, anything a syllable
# cannot take in. Each such syllable is a fixed point of reorder_syllable (its units are sorted,
# and no step finds anything to delete, turn or compose), so such text comes back as is.
_CANONICAL_TEXT = re.compile(
    "(?:[\u1780-\u17b3]\u17cc?(?:\u17d2[\u1780-\u1789\u178b-\u1799\u179b-\u17a2]){0,2}(?:\u17d2\u179a)?"
    "[\u17c9\u17ca]?(?:\u200c?(?:[\u17b6-\u17ba\u17bc-\u17c5]|\u17bb(?![\u17d0\u17dd])))?"
    "[\u17c6\u17cb\u17cd-\u17d1\u17d3\u17dd]?[\u17c7\u17c8]?"
    f"|[^{SYLLABLE_CHARS}{ZWNJ}{ZWJ}]++)*+")


def reorder(text: str) -> str:
    """Put every Khmer syllable of ``text`` in canonical order (non-Khmer text is untouched).

    Same result as ``SYLLABLE.sub(canonical form)``, without a Python call per syllable: text in the
    common canonical shapes (:data:`_CANONICAL_TEXT`) comes back after one regex pass; otherwise the text is
    split at its syllables (odd items), only syllables never seen before are put in order, and
    when no syllable changes (most lines of real text) the text comes back as is. A long text goes
    in pieces of about 4k characters, cut before a character no syllable holds: the split makes
    about 0.6 of a string per character, and pieces keep them in the CPU caches (and a text of
    10M characters with no line break from holding 6M strings at once).
    """
    if _CANONICAL_TEXT.fullmatch(text):  # one pass; 78% of the Khmer documents of ../shared/data
        return text
    if len(text) <= 2 * _PIECE:
        return _reorder(text)
    out = []
    pos = 0
    while pos < len(text):
        m = _OUTSIDE_SYLLABLES.search(text, pos + _PIECE)
        cut = m.start() if m else len(text)
        out.append(_reorder(text[pos:cut]))
        pos = cut
    return "".join(out)


def _reorder(text: str) -> str:
    parts = _SPLIT.split(text)
    syls = parts[1::2]
    if not syls:
        return text
    distinct = set(syls)
    new = distinct.difference(_cache)
    if new:
        if len(_cache) + len(new) > _CACHE_LIMIT:  # start afresh rather than grow without bound
            _cache.clear()
            _changes.clear()
        for syl in new:
            out = _cache[syl] = reorder_syllable(syl)
            if out != syl:
                _changes[syl] = out
    if not any(map(_changes.__contains__, distinct)):
        return text
    parts[1::2] = map(_changes.get, syls, syls)
    return "".join(parts)


# A well-formed syllable in canonical order: base, optional robat, up to two subscripts, an
# optional register shifter, at most one dependent vowel (ZWNJ allowed before it), up to two other
# signs, an optional final sign.
VALID_SYLLABLE = re.compile(
    "[\u1780-\u17a2\u17a5-\u17b3]\u17cc?(?:\u200d?\u17d2[\u1780-\u17a2]){0,2}[\u17c9\u17ca]?"
    "(?:\u200c?[\u17b6-\u17c5])?[\u17c6\u17cb\u17cd-\u17d1\u17d3\u17dd]{0,2}[\u17c7\u17c8]?"
)


def is_valid_syllable(cluster: str) -> bool:
    """Whether a cluster of normalized text is a well-formed Khmer orthographic syllable.

    Only clusters that hold a Khmer letter or sign are judged (others return True): a sign with no
    base (after a space, say), two dependent vowels, three subscripts or a COENG with nothing below
    it is invalid. Unnormalized text can fail only because of its order: normalize first.
    """
    if not SYLLABLE_CHAR.search(cluster):
        return True
    return VALID_SYLLABLE.fullmatch(cluster) is not None
