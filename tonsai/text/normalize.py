"""The one canonical form of text in tonsai (../shared/KHMER.md section 1).

Data preparation, tokenizer training, evaluation and generation all call :func:`normalize`, so the
model sees the same bytes at every stage. The rules run in this order:

1. Mojibake repair with encoding fixes only (ftfy, everything else switched off). It runs only
   when the text holds a character in U+00C0..U+00FF: every UTF-8 text mis-decoded as Latin-1 or
   cp1252 contains one (the lead bytes C2..F4 decode there), so clean Khmer and ASCII skip it.
2. Line endings: CRLF, CR, U+2028 and U+2029 become LF.
3. Invisible format characters are dropped: U+FEFF, U+200B, U+2060, U+00AD.
4. C0 controls except TAB and LF, DEL and C1 controls are dropped.
5. NBSP U+00A0 becomes a plain space.
6. Unicode NFC (never NFKC: full-width letters, superscripts and ligatures stay).
7. Deprecated Khmer characters get their recommended replacements.
8. Joiners after a Khmer character survive only where they change rendering: ZWNJ directly
   before a dependent vowel, ZWJ directly before COENG.

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

from tonsai.text.syllable import reorder

NORMALIZER_VERSION = "tonsai-norm-2"

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
_MOJIBAKE_HINT = re.compile("[\u00c0-\u00ff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_MAX_PASSES = 4


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
_TABLE_CHARS = re.compile("[" + "".join(f"\\U{cp:08x}" for cp in sorted(_TABLE)) + "]")
# anything rules 1-5 act on: a surrogate, a mojibake hint, CR or a character of the table
_RULES_1_TO_5 = re.compile("[\ud800-\udfff\u00c0-\u00ff" + _TABLE_CHARS.pattern[1:-1] + "]")
# 8. a run of joiners after a Khmer character, and the character that follows it
_JOINERS_AFTER_KHMER = re.compile("(?<=[\u1780-\u17ff])[\u200c\u200d]+(?=(.?))", re.DOTALL)


def _keep_valid_joiner(m: re.Match) -> str:
    last, following = m.group(0)[-1], m.group(1)
    if last == "\u200c" and following and "\u17b6" <= following <= "\u17c5":
        return last
    if last == "\u200d" and following == "\u17d2":
        return last
    return ""


def normalize(text: str) -> str:
    """Return ``text`` in tonsai's canonical form. Idempotent: ``normalize(normalize(x)) == normalize(x)``.

    Raises TypeError for anything but ``str`` (bytes must be decoded first: decide the encoding
    and the error policy where the bytes are read).
    """
    if not isinstance(text, str):
        raise TypeError(
            f"normalize() expects str, got {type(text).__name__}"
            + (" (decode bytes with .decode('utf-8') first)" if isinstance(text, (bytes, bytearray)) else "")
        )
    for _ in range(_MAX_PASSES):
        out = _normalize_once(text)
        # Removing characters (rule 3-5) can bring two halves of a mojibake sequence together
        # ("ß\x08¢" -> "ß¢"), which rule 1 would repair on a second call. Go round again until
        # the text is a fixed point, so that normalize() stays idempotent.
        if out == text or not _MOJIBAKE_HINT.search(out):
            return out
        text = out
    return text


def _normalize_once(text: str) -> str:
    # One scan decides whether rules 1-5 have anything to do (most text: nothing); ASCII text has no
    # surrogates or mojibake hints, and only the table's control characters to look for.
    if text.isascii():
        return _apply_table(text.replace("\r\n", "\n") if "\r" in text else text)
    if _RULES_1_TO_5.search(text):
        text = _rules_1_to_5(text)
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
        if "\u200c" in text or "\u200d" in text:
            text = _JOINERS_AFTER_KHMER.sub(_keep_valid_joiner, text)
        text = reorder(text)
    return text


def _apply_table(text: str) -> str:
    first = _TABLE_CHARS.search(text)
    if first:
        for c in set(_TABLE_CHARS.findall(text, first.start())):
            text = text.replace(c, _REPLACEMENTS[c])
    return text


def _rules_1_to_5(text: str) -> str:
    if _SURROGATE.search(text):
        text = ftfy.fixes.fix_surrogates(text)
        text = _SURROGATE.sub("\ufffd", text)
    if _MOJIBAKE_HINT.search(text):
        text = ftfy.fix_text(text, _FTFY_CONFIG)
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    return _apply_table(text)
