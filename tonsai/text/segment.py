"""Segmenting text into Khmer clusters and into words (KHMER.md section 3).

- :func:`clusters` splits into extended grapheme clusters with the ``regex`` package (``\\X``),
  which keeps a Khmer consonant together with its subscripts (COENG + consonant) and signs.
  Lossless on any text: ``"".join(clusters(t)) == t``. Fast (millions of chars/s): fine for corpora.
- :func:`words` segments Khmer into words with khmer-nltk's CRF model and everything else at
  whitespace. khmer-nltk itself is lossy (it collapses runs of spaces and drops newlines); tonsai
  aligns its tokens back onto the input and emits every whitespace run as its own token, so
  ``"".join(words(t)) == t`` for any text. It is slow (about 18k chars/s): use it for word-level
  metrics and filters on samples, never to pre-segment a pretraining corpus (and never before BPE).
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Callable

import regex

from tonsai.text.khmer import SYLLABLE_CHAR

# khmernltk is imported in _khmer_word_tokenizer, the first time Khmer words are asked for: importing
# it installs a console handler on its logger, which that function removes right after.

_GRAPHEME = regex.compile(r"\X")
_SPACE_RUN = regex.compile(r"\s+")
_SPACE_SPLIT = regex.compile(r"(\s+)")


def clusters(text: str) -> list[str]:
    """Extended grapheme clusters of ``text``; Khmer consonant stacks stay whole. Lossless."""
    return _GRAPHEME.findall(text)


@lru_cache(maxsize=1)
def _khmer_word_tokenizer() -> Callable[[str], list[str]]:
    from khmernltk import word_tokenize

    # Importing khmer-nltk sets its logger ("khmer-nltk") to DEBUG and gives it a colour console
    # handler, so its "Loaded model" banner would print twice, once with ANSI codes and once more
    # through the root logger. Drop its handler and keep its warnings: they reach the application's
    # logging once, formatted as every other message.
    nltk_log = logging.getLogger("khmer-nltk")
    for handler in list(nltk_log.handlers):
        nltk_log.removeHandler(handler)
    nltk_log.setLevel(logging.WARNING)
    return word_tokenize


def words(text: str) -> list[str]:
    """Words of ``text`` with whitespace runs as separate tokens; lossless (see the module docstring)."""
    if not SYLLABLE_CHAR.search(text):
        return [t for t in _SPACE_SPLIT.split(text) if t]
    tokens = [t for t in _khmer_word_tokenizer()(text) if t.strip()]
    out: list[str] = []
    pos = 0
    for tok in tokens:
        m = _SPACE_RUN.match(text, pos)
        if m:
            out.append(m.group())
            pos = m.end()
        if text.startswith(tok, pos):
            out.append(tok)
            pos += len(tok)
            continue
        # the tokenizer rewrote something: keep the original span up to where the token is found
        found = text.find(tok, pos)
        if found < 0:
            break
        out.append(text[pos:found + len(tok)])
        pos = found + len(tok)
    if pos < len(text):
        out.append(text[pos:])
    # tokens may carry whitespace of their own ("123\t"): split it off and merge adjacent runs
    merged: list[str] = []
    for piece in (p for t in out for p in _SPACE_SPLIT.split(t) if p):
        if merged and piece.isspace() and merged[-1].isspace():
            merged[-1] += piece
        else:
            merged.append(piece)
    return merged


def word_count(text: str) -> int:
    """Number of non-whitespace tokens of :func:`words` (works for Khmer, which writes no spaces)."""
    return sum(1 for t in words(text) if not t.isspace())
