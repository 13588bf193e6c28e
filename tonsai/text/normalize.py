"""The one canonical form of text in tonsai (../shared/KHMER.md section 1).

Data preparation, tokenizer training, evaluation and generation all call :func:`normalize`, so the
model sees the same bytes at every stage. The rules run in this order:

1. Mojibake repair with encoding fixes only (ftfy, everything else switched off). It runs only
   on the lines that hold a character in U+00C0..U+00FF: every UTF-8 text mis-decoded as Latin-1
   or cp1252 contains one (the lead bytes C2..F4 decode there), so clean Khmer and ASCII lines
   skip it (ftfy itself works line by line); also on a line where a C1 control or soft hyphen
   sits before a combining diacritic (dropping it lets NFC compose such a letter). The characters of rules 2-5 that no mis-decoding
   produces (C0 controls, DEL, U+200B, U+2060, U+FEFF, line separators) and those of rule 7 are
   handled before it, with NFC, so that ftfy sees the text the other rules leave.
2. Line endings: CRLF, CR, U+2028 and U+2029 become LF.
3. Invisible format characters are dropped: U+FEFF, U+200B, U+2060, U+00AD.
4. C0 controls except TAB and LF, DEL and C1 controls are dropped.
5. NBSP U+00A0 becomes a plain space.
6. Unicode NFC (never NFKC: full-width letters, superscripts and ligatures stay).
7. Deprecated Khmer characters get their recommended replacements.
8. Joiners after a Khmer character survive only where they change rendering: ZWNJ directly
   before a dependent vowel, ZWJ directly before COENG and the consonant it subscripts.

Lone surrogates (which cannot be written as UTF-8) become U+FFFD; valid surrogate pairs are
joined first. Latin text is untouched beyond NFC.

9. Every Khmer syllable is put in canonical character order (:mod:`tonsai.text.syllable`).

:data:`NORMALIZER_VERSION` changes whenever the output of :func:`normalize` can change, and every
manifest records it.
"""

from __future__ import annotations

import re
import unicodedata

import ftfy

from tonsai.text.khmer import BLOCK, ZWJ, ZWNJ
from tonsai.text.syllable import reorder

NORMALIZER_VERSION = "tonsai-norm-3"

_FTFY_CONFIG = ftfy.TextFixerConfig(
    unescape_html=False,
    remove_terminal_escapes=False,
    fix_encoding=True,
    restore_byte_a0=True,
    replace_lossy_sequences=True,
    decode_inconsistent_utf8=True,
    fix_c1_controls=False,
    fix_latin_ligatures=False,
    fix_character_width=False,
    uncurl_quotes=False,
    fix_line_breaks=False,
    fix_surrogates=True,
    remove_control_chars=False,
    normalization=None,
    explain=False,
)
_SURROGATE = re.compile("[\ud800-\udfff]")
_MAX_PASSES = 4
# Characters per piece of a long text. Every rule is local to a line: ftfy fixes line by line, LF
# composes with nothing under NFC and ends every Khmer syllable, and rule 8 looks one character
# behind and two ahead, never across a LF. So normalize(a + b) == normalize(a) + normalize(b)
# whenever ``a`` ends with LF, and a long text goes through in pieces whose syllables and gaps
# (about 0.6 of a Python string per character) fit in the CPU caches. On 1M characters of Khmer
# news: 64k-character pieces ran at 1.8-2.8M chars/s, 8k at 3.3-4.9M, 2k at 4.2-4.5M, lines 3.3M.
_CHUNK = 1 << 12


def _build_table() -> dict[int, str | None]:
    table: dict[int, str | None] = {}
    # 2. line endings (CRLF is replaced before the table runs)
    for cp in (0x0D, 0x2028, 0x2029):
        table[cp] = "\n"
    # 3. invisible format characters
    for cp in (0xFEFF, 0x200B, 0x2060, 0x00AD):
        table[cp] = None
    # 4. controls: C0 except TAB (09) and LF (0A), DEL, C1
    for cp in [*range(0x00, 0x09), *range(0x0B, 0x0D), *range(0x0E, 0x20), *range(0x7F, 0xA0)]:
        table[cp] = None
    # 5. no-break space
    table[0x00A0] = " "
    # 7. deprecated Khmer
    table[0x17A3] = "\u17a2"
    table[0x17A4] = "\u17a2\u17b6"
    table[0x17B4] = None
    table[0x17B5] = None
    table[0x17D8] = "\u17d4\u179b\u17d4"
    return table


_TABLE = _build_table()
# What the table changes, as str.replace() arguments: translate() looks every character of a
# non-ASCII text up in a dict (about 12M chars/s on Khmer), where finding the few characters that
# occur and replacing each runs at memory speed. No replacement holds a character of the table, so
# replacing one character after another gives what translate() gives.
_REPLACEMENTS = {chr(cp): r or "" for cp, r in _TABLE.items()}
assert not any(c in _REPLACEMENTS for r in _REPLACEMENTS.values() for c in r)


def _char_class(cps) -> str:
    return "[" + "".join(f"\\U{cp:08x}" for cp in sorted(cps)) + "]"


_TABLE_CHARS = re.compile(_char_class(_TABLE))
# The table's characters that mojibake is made of (C1 controls, NBSP, soft hyphen: what bytes
# 80..BF decode to in Latin-1) stay until rule 1 has run; the others go before it.
_LATE = {cp for cp in _TABLE if 0x80 <= cp <= 0xBF}
_EARLY_CHARS = re.compile(_char_class(set(_TABLE) - _LATE))
# Anything rules 1-7 act on: a surrogate, a mojibake hint, a character of the table (CR included),
# or a combining diacritic (U+0300..U+036F), with which NFC can compose a letter of U+00C0..U+00FF.
_RULES_1_TO_7 = re.compile("[\ud800-\udfff\u00c0-\u00ff\u0300-\u036f" + _TABLE_CHARS.pattern[1:-1] + "]")
# Without these, no line can hold a mojibake hint, before or after the other rules.
_NEEDS_REPAIR = re.compile("[\u00c0-\u00ff\u0300-\u036f]")
# The lines ftfy sees: those with a hint, and those where dropping a C1 control or soft hyphen
# lets NFC compose a letter of U+00C0..U+00FF ("A\\x85\\u0303" -> "Ã").
_REPAIR_LINE = re.compile("[\u00c0-\u00ff]|[\u0080-\u009f\u00ad][\u0300-\u036f]")
# 8. a run of joiners after a Khmer character, and the two characters that follow it
_JOINERS_AFTER_KHMER = re.compile(f"(?<=[{BLOCK}])[{ZWNJ}{ZWJ}]+(?=(.?.?))", re.DOTALL)


def _keep_valid_joiner(m: re.Match) -> str:
    last, following = m.group(0)[-1], m.group(1)
    if last == "\u200c" and following and "\u17b6" <= following[0] <= "\u17c5":
        return last
    if last == "\u200d" and following[:1] == "\u17d2" and following[1:] and "\u1780" <= following[1] <= "\u17a2":
        return last
    return ""


_MAX_ROUNDS = 4  # NFC and rule 9 after each other: one extra round settles every case found so far


def normalize(text: str) -> str:
    """Return ``text`` in tonsai's canonical form, in one pass over the text (time linear in its length).

    Idempotent (``normalize(normalize(x)) == normalize(x)``) by construction, not by running twice:
    each rule's output is left alone by every rule. Rules 2-5 only delete or replace characters
    with ones the table does not hold; NFC runs after every rule that can bring combining marks
    together (the table, and rule 8 when it drops a joiner between COENG or U+17DD and another
    mark; rule 8 runs again if NFC moved anything); the joiners rule 8 keeps are followed by a dependent vowel, or by COENG and the
    consonant it subscripts, which NFC never moves (the vowel and the consonant have combining
    class 0); rule 9 changes only Khmer syllables and leaves each a canonical syllable
    (:func:`tonsai.text.syllable.reorder_syllable` says why) that rules 1-8 do not touch.

    The one rule that is not a fixed point of the others by itself is the mojibake repair: ftfy
    decides from the text around a sequence, and dropping a control character or a soft hyphen
    (rules 3-4) can join the two halves of a sequence it then recognises. So on the lines that
    hold a mojibake hint (and only there), rules 1-6 repeat until the line stops changing or
    holds no hint (at most four rounds; ftfy works line by line, so this is its own unit).

    Raises TypeError for anything but ``str`` (bytes must be decoded first: decide the encoding
    and the error policy where the bytes are read).
    """
    if not isinstance(text, str):
        raise TypeError(
            f"normalize() expects str, got {type(text).__name__}"
            + (" (decode bytes with .decode('utf-8') first)" if isinstance(text, (bytes, bytearray)) else "")
        )
    if len(text) <= _CHUNK:
        return _normalize(text)
    # Every rule is local to a line (see _CHUNK): a long text goes through in pieces cut after a
    # line feed, so that the work per character does not grow with the length of the text.
    out = []
    pos = 0
    while pos < len(text):
        cut = text.find("\n", pos + _CHUNK) + 1 or len(text)
        out.append(_normalize(text[pos:cut]))
        pos = cut
    return "".join(out)


def _normalize(text: str) -> str:
    # ASCII text has no surrogates, mojibake hints or Khmer: only CRLF and the table's controls.
    if text.isascii():
        return _apply_table(text.replace("\r\n", "\n") if "\r" in text else text, _TABLE_CHARS)
    if _RULES_1_TO_7.search(text):  # one scan decides whether rules 1-7 have anything to do
        text = _rules_1_to_7(text)
        if text.isascii():
            return text
    else:
        text = unicodedata.normalize("NFC", text)
    while "\u200c" in text or "\u200d" in text:
        dropped = _JOINERS_AFTER_KHMER.sub(_keep_valid_joiner, text)
        if len(dropped) == len(text):
            break
        # A dropped joiner can bring two combining marks out of canonical order, and NFC moving
        # them can put a Khmer mark before another joiner ("COENG ZWNJ U+0334 ZWJ"): rule 8 again
        # until NFC moves nothing. Each round drops a joiner, so this ends; real text needs one.
        text = unicodedata.normalize("NFC", dropped)
        if text == dropped:
            break
    out = reorder(text)
    # Rule 9 moves U+17DD (combining class 230) behind a dependent vowel; a combining mark of another
    # script after the syllable ("KA U+17DD AA U+0327") then meets U+17DD, and NFC would swap the two on
    # a second call. NFC again, and rule 9 on what it moved, until NFC leaves the text alone (one more
    # round where this happens; is_normalized is a cheap scan elsewhere).
    for _ in range(_MAX_ROUNDS):
        if unicodedata.is_normalized("NFC", out):
            return out
        out = reorder(unicodedata.normalize("NFC", out))
    return out


def _rules_1_to_7(text: str) -> str:
    if _SURROGATE.search(text):
        text = _SURROGATE.sub("\ufffd", ftfy.fixes.fix_surrogates(text))
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    if not _NEEDS_REPAIR.search(text):  # most text: no line for ftfy, the rules in one table pass
        return unicodedata.normalize("NFC", _apply_table(text, _TABLE_CHARS))
    text = unicodedata.normalize("NFC", _apply_table(text, _EARLY_CHARS))
    if _REPAIR_LINE.search(text):
        text = _repair_mojibake(text)
    # the C1 controls, NBSP and soft hyphens of the other lines (NFC again: a dropped control
    # can bring two combining marks out of order)
    return unicodedata.normalize("NFC", _apply_table(text, _TABLE_CHARS))


def _apply_table(text: str, chars: re.Pattern) -> str:
    first = chars.search(text)
    if first:
        for c in set(chars.findall(text, first.start())):
            text = text.replace(c, _REPLACEMENTS[c])
    return text


def _repair_mojibake(text: str) -> str:
    """Rule 1 on the lines that :data:`_REPAIR_LINE` finds; the other lines are left as they are.

    ftfy fixes text one line at a time (lines up to ``max_decode_length``), so fixing only these
    lines gives what fixing the whole text gives wherever a hint decides, and keeps a long text
    with a few accented letters from paying ftfy's cost on every line.
    """
    out = []
    pos = 0
    m = _REPAIR_LINE.search(text)
    while m:
        start = text.rfind("\n", pos, m.start()) + 1 or pos
        end = text.find("\n", m.end()) + 1 or len(text)
        out.append(text[pos:start])
        out.append(_repair_line(text[start:end]))
        pos = end
        m = _REPAIR_LINE.search(text, pos)
    out.append(text[pos:])
    return "".join(out)


def _repair_line(line: str) -> str:
    for _ in range(_MAX_PASSES):
        fixed = ftfy.fix_text(line, _FTFY_CONFIG)
        fixed = unicodedata.normalize("NFC", _apply_table(fixed.replace("\r\n", "\n"), _TABLE_CHARS))
        # Dropping a C1 control or a soft hyphen can join two halves of a mojibake sequence
        # ("ß\x85¢" -> "ß¢"): repeat until the line is a fixed point or has nothing for ftfy.
        if fixed == line or not _REPAIR_LINE.search(fixed):
            return fixed
        line = fixed
    return line
