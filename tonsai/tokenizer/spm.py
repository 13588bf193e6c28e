"""The SentencePiece backend: a SentencePiece BPE with byte fallback, converted to a Hugging Face
``tokenizers`` BPE so that its folder has the same format as the other algorithms.

SentencePiece is trained with identity normalization (tonsai's normalize already ran), no
whitespace collapsing and no dummy prefix, so decode(encode(x)) == x. The conversion keeps every id:
a BPE piece's merge rank is its position in SentencePiece's vocabulary (pieces are stored in the
order they were merged), spaces become U+2581 and back, and byte pieces ``<0xNN>`` are the fallback.
tests/tokenizer/test_spm.py checks that the converted tokenizer gives SentencePiece's own ids.
"""

from __future__ import annotations

import io
import os
from typing import Iterable

import sentencepiece as spm
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

from tonsai.tokenizer.normalizer import khmer_normalizer

META = "\u2581"  # SentencePiece's visible space


def train_sentencepiece(texts: Iterable[str], vocab_size: int, special_tokens: list[str]):
    """Train a SentencePiece BPE and return a ``SentencePieceProcessor``."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
        add_dummy_prefix=False, character_coverage=1.0, max_sentence_length=1 << 24,
        unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1, control_symbols=special_tokens,
        num_threads=os.cpu_count() or 1, minloglevel=2)
    return spm.SentencePieceProcessor(model_proto=model.getvalue())


def _merges(sp, vocab: dict[str, int]) -> list[tuple[str, str]]:
    """Merges ordered by the rank of the piece they make, then by the ranks of its halves."""
    ranked = []
    for i in range(sp.get_piece_size()):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i) or sp.is_unused(i):
            continue
        piece = sp.id_to_piece(i)
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                ranked.append((i, vocab[left], vocab[right], left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def to_tokenizers(sp):
    """The ``tokenizers.Tokenizer`` equivalent of a byte-fallback SentencePiece BPE ``sp``."""
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=_merges(sp, vocab), unk_token=sp.id_to_piece(sp.unk_id()),
                               fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Sequence([khmer_normalizer(), normalizers.Replace(" ", META)])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=META, prepend_scheme="never", split=True)
    tok.decoder = decoders.Sequence([decoders.Replace(META, " "), decoders.ByteFallback(), decoders.Fuse()])
    return tok
