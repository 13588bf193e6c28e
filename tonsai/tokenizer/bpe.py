"""Training a shared Khmer-English byte-level BPE tokenizer (Hugging Face ``tokenizers``).

The split regex is the cl100k/o200k family with one change that matters for Khmer: its letter
classes are ``[\\p{L}\\p{M}]`` instead of ``\\p{L}``. Khmer vowel signs and the COENG sign are
marks (Mn/Mc); GPT-2's and Llama 3's regexes cut them off their consonants, which alone costs
about 2.8x more Khmer tokens (../shared/KHMER.md section 3). Khmer is not pre-split into clusters
or words: BPE learns its own units.

The output folder loads with ``transformers.AutoTokenizer.from_pretrained`` and carries
``<|endoftext|>`` (document separator, bos and eos) and ``<|pad|>``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Iterable, Iterator

from tonsai.atomic import staged_dir
from tonsai.cli import StageError
from tonsai.manifest import file_sha256, write_manifest
from tonsai.text import normalize

log = logging.getLogger(__name__)
STAGE = "tokenizer"
EOT = "<|endoftext|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = [EOT, PAD]
BYTE_ALPHABET = 256

SPLIT_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)"""
    r"""|[^\r\n\p{L}\p{M}\p{N}]?[\p{L}\p{M}]+"""
    r"""|\p{N}{1,3}"""
    r"""| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+"""
    r"""|\s+(?!\S)"""
    r"""|\s+"""
)


@dataclasses.dataclass
class TokenizerConfig:
    """Options of scripts/train_tokenizer.py."""

    output_dir: str = dataclasses.field(metadata={"help": "folder to write the tokenizer and manifest.json into"})
    dataset_dir: str | None = dataclasses.field(default=None, metadata={
        "help": "a folder written by prepare_dataset.py to train on"})
    dataset_split: str = dataclasses.field(default="train", metadata={"help": "split of --dataset-dir to read"})
    text_column: str = dataclasses.field(default="text", metadata={"help": "text column of --dataset-dir"})
    input: list[str] = dataclasses.field(default_factory=list, metadata={
        "help": "raw UTF-8 text files to train on instead of --dataset-dir (normalized first)", "metavar": "FILE"})
    vocab_size: int = dataclasses.field(default=32000, metadata={
        "help": "vocabulary size including the 256 byte tokens and the special tokens"})
    min_frequency: int = dataclasses.field(default=2, metadata={"help": "minimum count of a pair to be merged"})

    def __post_init__(self) -> None:
        if (self.dataset_dir is None) == (not self.input):
            raise ValueError("give exactly one of --dataset-dir or --input")
        smallest = BYTE_ALPHABET + len(SPECIAL_TOKENS) + 1
        if self.vocab_size < smallest:
            raise ValueError(
                f"--vocab-size {self.vocab_size} is too small: the byte alphabet (256) and the special "
                f"tokens {SPECIAL_TOKENS} alone need {smallest - 1}; use at least {smallest}"
            )
        if self.min_frequency < 1:
            raise ValueError("--min-frequency must be at least 1")


def build_tokenizer_model():
    """An untrained byte-level BPE with tonsai's pre-tokenizer and decoder."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    return tok


def _dataset_texts(cfg: TokenizerConfig) -> tuple[Iterable[str], dict]:
    from tonsai.data.prepare import load_prepared

    dd, manifest = load_prepared(cfg.dataset_dir)
    if cfg.dataset_split not in dd:
        raise StageError(f"{cfg.dataset_dir} has no split {cfg.dataset_split!r}; it has {sorted(dd)}")
    ds = dd[cfg.dataset_split]
    if cfg.text_column not in ds.column_names:
        raise StageError(
            f"{cfg.dataset_dir} split {cfg.dataset_split!r} has no column {cfg.text_column!r}; "
            f"columns are {ds.column_names}"
        )
    if len(ds) == 0:
        raise StageError(f"{cfg.dataset_dir} split {cfg.dataset_split!r} is empty")
    return (row for row in ds[cfg.text_column]), {"dataset_manifest_created": manifest["created_utc"],
                                                   "dataset_dir": str(cfg.dataset_dir)}


def _file_texts(paths: list[str]) -> Iterator[str]:
    for p in paths:
        with open(p, encoding="utf-8", errors="replace") as f:
            for line in f:
                line = normalize(line.rstrip("\n"))
                if line.strip():
                    yield line


def token_dtype(vocab_size: int) -> str:
    """Narrowest unsigned integer type that holds every id."""
    return "uint16" if vocab_size <= 65535 else "uint32"


def run_train_tokenizer(cfg: TokenizerConfig) -> dict:
    from tokenizers import pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if cfg.dataset_dir is not None:
        texts, source_info = _dataset_texts(cfg)
    else:
        for p in cfg.input:
            if not Path(p).is_file():
                raise StageError(f"--input {p}: no such file")
        texts, source_info = _file_texts(cfg.input), {
            "inputs": [{"path": p, "sha256": file_sha256(p)} for p in cfg.input]}

    n_docs = n_chars = 0

    def counted(it: Iterable[str]) -> Iterator[str]:
        nonlocal n_docs, n_chars
        for t in it:
            n_docs += 1
            n_chars += len(t)
            yield t

    tok = build_tokenizer_model()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=True,
    )
    tok.train_from_iterator(counted(texts), trainer=trainer)
    if n_docs == 0:
        raise StageError("no text to train the tokenizer on: the input is empty")
    vocab = tok.get_vocab_size()
    log.info("trained BPE on %d documents (%d chars): vocabulary %d", n_docs, n_chars, vocab)
    if vocab < cfg.vocab_size:
        log.warning("the corpus supports only %d tokens (asked for %d): more text would give more merges",
                    vocab, cfg.vocab_size)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOT, eos_token=EOT, pad_token=PAD, model_max_length=1 << 30,
    )
    with staged_dir(cfg.output_dir) as tmp:
        hf_tok.save_pretrained(str(tmp))
        manifest = write_manifest(
            tmp, STAGE, cfg, **source_info,
            vocab_size=vocab,
            token_dtype=token_dtype(vocab),
            special_tokens={t: tok.token_to_id(t) for t in SPECIAL_TOKENS},
            tokenizer_sha256=file_sha256(tmp / "tokenizer.json"),
            trained_on={"documents": n_docs, "characters": n_chars},
            split_pattern=SPLIT_PATTERN,
        )
    log.info("wrote %s", cfg.output_dir)
    return manifest
