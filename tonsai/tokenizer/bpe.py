"""Training a shared Khmer-English BPE tokenizer (Hugging Face ``tokenizers``).

The split regex is the cl100k/o200k family with one change that matters for Khmer: its letter
classes are ``[\\p{L}\\p{M}]`` instead of ``\\p{L}``. Khmer vowel signs and the COENG sign are
marks (Mn/Mc); GPT-2's and Llama 3's regexes cut them off their consonants, which alone costs
about 2.8x more Khmer tokens (../shared/KHMER.md section 3). Khmer punctuation (U+17D4..U+17DA,
khan and friends) may end a word, as SentencePiece's script-based split allows: a separate token
for every khan cost 1% of Khmer tokens. Khmer is not pre-split into clusters or words: BPE learns
its own units. A number may take the space before it and keeps its decimal, thousands and time
separators (`` 2019``, `` 1,000``, `` 3.5``, `` 12:55``, Khmer digits alike), as in GPT-2's
`` ?\\p{N}+`` (SentencePiece's pieces hold them too); cl100k's ``\\p{N}{1,3}`` without the space
cut every year in two and left the space before it a token of its own.

Training from raw ``--input`` files counts each distinct (normalized) line once: repeated lines,
such as the speaker names of a play (``GLOUCESTER:`` 229 times in Tiny Shakespeare, about 500
all-capital name tokens) and the footers of a news site, otherwise buy merges that ordinary text
never uses. ``--no-dedup-lines`` keeps every line. Prepared datasets (``--dataset-dir``) are
deduplicated by the prepare stage and are read as they are.

Figures at vocabulary 32,000 on the shared Khmer news + WikiText-2 (valid, test) + Tiny
Shakespeare, tokens per 1,000 characters on the aligned dev sentences (never trained on),
Khmer / English / parity (bench/bench_tokenizer.py):

====================================================  ========================  ========================
variant                                               FLORES dev                NTREX dev
====================================================  ========================  ========================
before: ``\\p{N}{1,3}``, every line                    227.3 / 238.2 / 1.084     221.7 / 242.1 / 1.058
numbers with space and separators                     226.0 / 236.4 / 1.086     219.6 / 240.0 / 1.057
distinct lines only                                   226.8 / 237.3 / 1.086     221.3 / 241.0 / 1.060
both (default)                                        225.8 / 235.3 / 1.090     219.4 / 238.8 / 1.061
plain SentencePiece BPE, every line (baseline)        226.4 / 238.1 / 1.080     220.3 / 243.4 / 1.046
plain SentencePiece BPE, distinct lines               226.0 / 237.2 / 1.082     220.3 / 242.2 / 1.051
====================================================  ========================  ========================

The default spends fewer tokens than the SentencePiece baseline on both languages of both sets;
its parity is a little higher than the baseline's because its English gain is the larger one.
Tried and not kept (same data and sets): token cap 12/20/24 characters (no better than 16),
min_frequency 1 or 4 (no change), contractions attached to their word as in o200k (English -0.3,
Khmer +0.3), changing the Khmer/English balance by repeating lines (it trades one language for the
other about one for one: English lines x1.1 gave 226.8 / 235.8 and 220.1 / 239.2 before
deduplication; Khmer lines x1.15 after it gave 225.7 / 236.7 and 219.0 / 240.3).

Two algorithms share that regex and the output format:

- ``byte-fallback`` (default): BPE over Unicode characters; a character outside the learned
  alphabet is written as its UTF-8 bytes with the 256 tokens ``<0x00>``..``<0xFF>``, so nothing is
  ever unknown. Every Khmer character is 3 UTF-8 bytes that share the lead bytes E1 9E/9F; over
  characters BPE never spends merges on pieces that straddle two characters. Tokens are capped at
  ``max_token_chars`` (16, as SentencePiece) so that rare long strings of the training text do not
  take vocabulary. See bench/bench_tokenizer.py for the figures against byte-level BPE and a plain
  SentencePiece BPE.
- ``byte-level``: GPT-2 style BPE over bytes mapped to printable characters.
- ``sentencepiece``: a SentencePiece BPE with byte fallback, converted to the same format
  (:mod:`tonsai.tokenizer.spm`); it splits only at spaces and script changes, not with the regex.

The output folder loads with ``transformers.AutoTokenizer.from_pretrained`` in transformers 4.x and
5.x (:mod:`tonsai.tokenizer.export`: no ``model_max_length``, since a tokenizer belongs to no model;
left padding) and carries ``<|endoftext|>`` (document separator, bos and eos) and ``<|pad|>``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import sys
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pyarrow.compute as pc
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from tonsai.atomic import staged_dir
from tonsai.data.mix import plan_sources
from tonsai.data.prepared import load_prepared
from tonsai.errors import StageError
from tonsai.folders import claim_output
from tonsai.manifest import file_sha256, write_manifest
from tonsai.text import normalize
from tonsai.tokenizer import fertility
from tonsai.tokenizer.export import save_tokenizer
from tonsai.tokenizer.normalizer import khmer_normalizer
from tonsai.tokenizer.spm import to_tokenizers, train_sentencepiece

# transformers (PreTrainedTokenizerFast: 0.7 s to import on a 2-core machine) is imported inside
# _run_train_tokenizer only: train_tokenizer.py --help and tokenize_dataset.py --help (through
# tonsai.tokenizer.shards, which takes EOT and token_dtype from here) must not pay it.

log = logging.getLogger(__name__)
STAGE = "tokenizer"
EOT = "<|endoftext|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = [EOT, PAD]
BYTE_ALPHABET = 256
BYTE_TOKENS = [f"<0x{i:02X}>" for i in range(BYTE_ALPHABET)]
ALGORITHMS = ("byte-fallback", "byte-level", "sentencepiece")

SPLIT_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)"""
    r"""|[^\r\n\p{L}\p{M}\p{N}]?[\p{L}\p{M}]+[\x{17D4}-\x{17DA}]*"""
    r"""| ?\p{N}+(?:[.,:]\p{N}+)*"""
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
    max_token_chars: int | None = dataclasses.field(default=16, metadata={
        "help": "longest token in characters (byte-fallback only; 0 for no limit)"})
    algorithm: str = dataclasses.field(default="byte-fallback", metadata={
        "help": "BPE over characters with byte fallback, GPT-2 style byte-level BPE, or SentencePiece BPE "
                "with byte fallback (all write the same folder format)", "choices": list(ALGORITHMS)})
    khmer_share: float | None = dataclasses.field(default=None, metadata={
        "help": "with --dataset-dir: sample documents so that this share of the tokenizer's training "
                "characters is Khmer (default: the dataset's own balance)"})
    max_epochs: float = dataclasses.field(default=1.0, metadata={
        "help": "with --khmer-share: most passes over a language's documents (>1 repeats the scarcer one)"})
    max_chars: int = dataclasses.field(default=1_000_000_000, metadata={
        "help": "with --dataset-dir: train on a seeded sample of at most this many characters (a BPE "
                "vocabulary of 32k-64k learns little past a few GB of text, and the trainer's memory grows "
                "with it); 0 for the whole split"})
    seed: int = dataclasses.field(default=0, metadata={"help": "seed for --khmer-share and --max-chars sampling"})
    dedup_lines: bool = dataclasses.field(default=True, metadata={
        "help": "with --input: train on each distinct line once (repeated lines such as speaker names and "
                "site footers otherwise take vocabulary)"})
    parity_file: list[str] = fertility.parity_file_field()
    compare: list[str] = fertility.compare_field()
    overwrite: bool = dataclasses.field(default=False, metadata={
        "help": "replace a complete earlier tokenizer in --output-dir (never a folder holding anything else)"})
    fertility_docs: int = fertility.fertility_docs_field()

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
        if self.max_token_chars is not None and self.max_token_chars < 0:
            raise ValueError("--max-token-chars must be >= 0")
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"--algorithm must be one of {ALGORITHMS}")
        if self.khmer_share is not None:
            if self.dataset_dir is None:
                raise ValueError("--khmer-share needs --dataset-dir (raw --input files carry no language)")
            if not 0 < self.khmer_share < 1:
                raise ValueError(f"--khmer-share must be between 0 and 1, got {self.khmer_share}")
        if self.max_chars < 0:
            raise ValueError("--max-chars must be >= 0 (0: no limit)")
        if self.max_epochs <= 0:
            raise ValueError("--max-epochs must be positive")
        if len(self.parity_file) % 2:
            raise ValueError("--parity-file takes pairs: KM_FILE EN_FILE [KM_FILE EN_FILE ...]")


def build_tokenizer_model(algorithm: str = "byte-fallback"):
    """An untrained BPE with tonsai's pre-tokenizer and the decoder for ``algorithm``."""
    split = pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated")
    if algorithm == "byte-level":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.Sequence([split, pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                                                    use_regex=False)])
        tok.decoder = decoders.ByteLevel()
    else:
        tok = Tokenizer(models.BPE(byte_fallback=True))
        tok.pre_tokenizer = split
        tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    tok.normalizer = khmer_normalizer()
    return tok


def train_bpe(texts: Iterable[str], vocab_size: int, algorithm: str = "byte-fallback", min_frequency: int = 2,
              show_progress: bool = True, max_token_chars: int | None = 16):
    """Train a ``tokenizers.Tokenizer`` on ``texts`` (already normalized).

    ``min_frequency`` and ``max_token_chars`` apply to the tokenizers algorithms; SentencePiece
    uses its own defaults (pieces of at most 16 characters)."""
    if algorithm == "sentencepiece":
        try:
            return to_tokenizers(train_sentencepiece(texts, vocab_size, SPECIAL_TOKENS))
        except RuntimeError as e:  # e.g. a vocabulary smaller than the corpus's character set
            need = re.search(r"smaller than required_chars\. \d+ vs (\d+)", str(e))
            if need:
                raise StageError(f"--vocab-size {vocab_size} is too small for SentencePiece on this text: it "
                                 f"needs at least {need.group(1)} (every character of the text, the byte "
                                 f"pieces and the special tokens); raise it, or use --algorithm "
                                 f"byte-fallback, which keeps only the characters that fit") from e
            raise StageError(f"SentencePiece training failed: {e}") from e
    tok = build_tokenizer_model(algorithm)
    if algorithm == "byte-level":
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                      special_tokens=SPECIAL_TOKENS, show_progress=show_progress,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(texts, trainer=trainer)
        return tok
    # The trainer only reserves ids for "special" tokens; the byte tokens are reserved that way and
    # then made ordinary vocabulary, so that decode() (which skips special tokens) keeps them.
    # It adds every character it sees to the vocabulary, past vocab_size if need be (259 asked, 444
    # given on Khmer + English text): limit_alphabet keeps the most frequent characters that fit, and
    # byte fallback writes the others as bytes.
    reserved = len(SPECIAL_TOKENS) + BYTE_ALPHABET
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=SPECIAL_TOKENS + BYTE_TOKENS, show_progress=show_progress,
                                  max_token_length=max_token_chars or None, limit_alphabet=vocab_size - reserved)
    tok.train_from_iterator(texts, trainer=trainer)
    data = json.loads(tok.to_str())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] in SPECIAL_TOKENS]
    return Tokenizer.from_str(json.dumps(data))


def _dataset_texts(cfg: TokenizerConfig) -> tuple[Iterable[str], dict]:
    """The documents of ``--dataset-dir`` to train on, streamed from disk, and what was sampled.

    Document lengths and languages are read as Arrow columns (no Python strings); the texts are then
    read in batches in dataset order, each chosen document as many times as it was drawn. With
    ``--khmer-share`` the languages are sampled to that character balance (within ``--max-epochs``),
    and ``--max-chars`` caps the total either way (seeded; the whole split when it fits)."""
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
    info: dict = {"dataset_manifest_created": manifest["created_utc"], "dataset_dir": str(cfg.dataset_dir)}
    table = ds.data  # the split's Arrow table, memory-mapped (prepare writes it without an index mapping)
    lengths = pc.utf8_length(table.column(cfg.text_column)).to_numpy(zero_copy_only=False).astype(np.int64)
    if cfg.khmer_share is None:
        if not cfg.max_chars or int(lengths.sum()) <= cfg.max_chars:
            info["sampled"] = None  # every document once, in order
            return _read_rows(ds, cfg.text_column, np.ones(len(ds), dtype=np.int32)), info
        groups = {"all": np.arange(len(ds))}
        shares = {"all": 1.0}
        epochs = {"all": 1.0}
    else:
        lang = table.column("lang")
        groups = {code: np.flatnonzero(pc.equal(lang, code).to_numpy(zero_copy_only=False)) for code in ("km", "en")}
        for code, idx in groups.items():
            if not len(idx):
                raise StageError(f"--khmer-share needs both languages, but {cfg.dataset_dir} has no {code} documents")
        shares = {"km": cfg.khmer_share, "en": 1 - cfg.khmer_share}
        epochs = {"km": cfg.max_epochs, "en": cfg.max_epochs}
    counts, plans, _, _ = plan_sources({g: lengths[idx] for g, idx in groups.items()}, {g: g for g in groups},
                                       shares, epochs, cfg.seed, cfg.max_chars or None)
    copies = np.zeros(len(ds), dtype=np.int32)
    for g, idx in groups.items():
        copies[idx] = counts[g]
    total = sum(p.selected_chars for p in plans.values())
    info["sampled"] = {"max_chars": cfg.max_chars or None, "characters": total,
                       "documents": int(copies.sum()), "of_documents": len(ds), "of_characters": int(lengths.sum())}
    if cfg.khmer_share is not None:
        info["language_balance"] = {g: {"characters": p.selected_chars, "share": p.selected_chars / total,
                                        "epochs": round(p.epochs, 4)} for g, p in plans.items()}
        log.info("tokenizer training balance: %s",
                 {k: round(v["share"], 4) for k, v in info["language_balance"].items()})
    log.info("tokenizer training sample: %d of %d documents, %d of %d characters", info["sampled"]["documents"],
             len(ds), total, info["sampled"]["of_characters"])
    return _read_rows(ds, cfg.text_column, copies), info


def _read_rows(ds, column: str, copies: np.ndarray, batch_size: int = 1000) -> Iterator[str]:
    """The texts of the rows with ``copies > 0``, in dataset order, each ``copies[i]`` times;
    batches of consecutive rows, so only the chosen stretches are read."""
    chosen = np.flatnonzero(copies)
    for start in range(0, len(chosen), batch_size):
        rows = chosen[start:start + batch_size]
        texts = ds.select(rows.tolist())[column] if len(rows) < rows[-1] - rows[0] + 1 else \
            ds[int(rows[0]):int(rows[-1]) + 1][column]
        for i, text in zip(rows, texts):
            for _ in range(int(copies[i])):
                yield text


def file_texts(paths: Iterable[str | Path], dedup: bool = True, stats: dict | None = None) -> Iterator[str]:
    """The non-blank lines of ``paths``, normalized; with ``dedup`` each distinct line once (first
    occurrence kept, in file order). ``stats["duplicate_lines"]`` counts the lines skipped."""
    seen: set[bytes] = set()
    skipped = 0
    for p in paths:
        with open(p, encoding="utf-8", errors="replace") as f:
            for line in f:
                line = normalize(line.rstrip("\n"))
                if not line.strip():
                    continue
                if dedup:
                    key = hashlib.blake2b(line.encode("utf-8"), digest_size=16).digest()
                    if key in seen:
                        skipped += 1
                        continue
                    seen.add(key)
                yield line
    if stats is not None:
        stats["duplicate_lines"] = skipped


def token_dtype(vocab_size: int) -> str:
    """Narrowest unsigned integer type that holds every id."""
    return "uint16" if vocab_size <= 65535 else "uint32"


def run_train_tokenizer(cfg: TokenizerConfig) -> dict:
    """Train the tokenizer into --output-dir, claimed and locked for the run (tonsai.folders)."""
    inputs = [p for p in (cfg.dataset_dir, *cfg.input, *cfg.parity_file, *cfg.compare) if p]
    with claim_output(cfg.output_dir, STAGE, inputs=inputs, overwrite=cfg.overwrite):
        return _run_train_tokenizer(cfg)


def _run_train_tokenizer(cfg: TokenizerConfig) -> dict:
    from transformers import PreTrainedTokenizerFast

    if cfg.dataset_dir is not None:
        texts, source_info = _dataset_texts(cfg)
    else:
        for p in cfg.input:
            if not Path(p).is_file():
                raise StageError(f"--input {p}: no such file")
        dedup_stats: dict = {}
        texts, source_info = file_texts(cfg.input, cfg.dedup_lines, dedup_stats), {
            "inputs": [{"path": p, "sha256": file_sha256(p)} for p in cfg.input]}

    n_docs = n_chars = 0

    def counted(it: Iterable[str]) -> Iterator[str]:
        nonlocal n_docs, n_chars
        for t in it:
            n_docs += 1
            n_chars += len(t)
            yield t

    # the tokenizers library's progress bars print empty lines when stderr is a file or a pipe
    tok = train_bpe(counted(texts), cfg.vocab_size, cfg.algorithm, cfg.min_frequency,
                    show_progress=sys.stderr.isatty(), max_token_chars=cfg.max_token_chars)
    if n_docs == 0:
        raise StageError("no text to train the tokenizer on: the input is empty")
    vocab = tok.get_vocab_size()
    log.info("trained %s BPE on %d documents (%d chars): vocabulary %d", cfg.algorithm, n_docs, n_chars, vocab)
    if vocab > cfg.vocab_size:  # the trainers above keep to the size; never pass a larger one on silently
        raise StageError(f"the trained vocabulary has {vocab} tokens, more than --vocab-size {cfg.vocab_size}; "
                         f"use --vocab-size {vocab} or more")
    if not json.loads(tok.to_str())["model"]["merges"]:
        log.warning("--vocab-size %d leaves no room for merges: the vocabulary holds the byte and special "
                    "tokens and the most frequent characters only (a useful size is thousands)", cfg.vocab_size)
    if vocab < cfg.vocab_size:
        log.warning("the corpus supports only %d tokens (asked for %d): more text would give more merges",
                    vocab, cfg.vocab_size)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOT, eos_token=EOT, pad_token=PAD)
    if cfg.dataset_dir is None:
        source_info["duplicate_lines_skipped"] = dedup_stats.get("duplicate_lines", 0) if cfg.dedup_lines else None
        log.info("skipped %s repeated lines of the --input files", source_info["duplicate_lines_skipped"])
    with staged_dir(cfg.output_dir) as tmp:
        save_tokenizer(hf_tok, tmp)
        manifest = write_manifest(
            tmp, STAGE, cfg, **source_info,
            vocab_size=vocab,
            token_dtype=token_dtype(vocab),
            special_tokens={t: tok.token_to_id(t) for t in SPECIAL_TOKENS},
            tokenizer_sha256=file_sha256(tmp / "tokenizer.json"),
            trained_on={"documents": n_docs, "characters": n_chars},
            split_pattern=SPLIT_PATTERN,
            algorithm=cfg.algorithm,
        )
        validation = cfg.dataset_dir and fertility.validation_texts(cfg.dataset_dir, cfg.fertility_docs)
        if validation or cfg.parity_file:
            fertility.write_fertility_report(tmp, tmp, cfg.parity_file, cfg.compare, validation)
            log.info("fertility report: %s", Path(cfg.output_dir) / "fertility.md")
    log.info("wrote %s", cfg.output_dir)
    return manifest
