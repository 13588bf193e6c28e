"""Tokenize documents and pack them into one flat token file per split and language.

Each document becomes its tokens followed by the end-of-text id, so packed blocks never need
padding and the model learns where documents end. Tokens are stored as a raw little-endian array
(``tokens.bin``) of the narrowest dtype for the vocabulary; ``meta.json`` beside it names that
dtype and the SHA-256 of the tokenizer.json that produced the ids. Readers refuse a mismatch.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from tonsai.atomic import staged_dir, write_json
from tonsai.cli import StageError
from tonsai.manifest import file_sha256
from tonsai.tokenizer.bpe import token_dtype

log = logging.getLogger(__name__)
META = "meta.json"


def tokenizer_hash(tokenizer_dir: str | Path) -> str:
    path = Path(tokenizer_dir) / "tokenizer.json"
    if not path.is_file():
        raise StageError(f"{tokenizer_dir} has no tokenizer.json; pass a folder written by train_tokenizer.py")
    return file_sha256(path)


def pack_texts(texts: Iterable[str], tokenizer_dir: str | Path, out_dir: str | Path,
               batch_size: int = 1000, extra_meta: dict | None = None) -> dict:
    """Tokenize ``texts`` and write ``out_dir/tokens.bin`` and ``out_dir/meta.json`` atomically."""
    from tokenizers import Tokenizer
    from tqdm.auto import tqdm

    tok = Tokenizer.from_file(str(Path(tokenizer_dir) / "tokenizer.json"))
    eos = tok.token_to_id("<|endoftext|>")
    if eos is None:
        raise StageError(f"{tokenizer_dir}: tokenizer has no <|endoftext|> token")
    dtype = np.dtype(token_dtype(tok.get_vocab_size()))
    n_tokens = n_docs = n_bytes = n_chars = 0
    with staged_dir(out_dir) as tmp, open(tmp / "tokens.bin", "wb") as f:
        batch: list[str] = []

        def flush() -> None:
            nonlocal n_tokens
            for enc in tok.encode_batch(batch, add_special_tokens=False):
                ids = np.asarray(enc.ids + [eos], dtype=dtype)
                f.write(ids.tobytes())
                n_tokens += len(ids)
            batch.clear()

        for text in tqdm(texts, desc=f"tokenize {Path(out_dir).name}", unit="doc", leave=False):
            batch.append(text)
            n_docs += 1
            n_chars += len(text)
            n_bytes += len(text.encode("utf-8"))
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()
        f.close()
        meta = {"tokenizer_sha256": tokenizer_hash(tokenizer_dir), "dtype": dtype.name,
                "eos_id": eos, "tokens": n_tokens, "documents": n_docs, "bytes": n_bytes,
                "characters": n_chars, **(extra_meta or {})}
        write_json(tmp / META, meta)
    return meta


class TokenFile:
    """A packed token file opened read-only as a memory map, with its metadata checked."""

    def __init__(self, path: str | Path, expect_tokenizer_sha256: str | None = None,
                 expect_dtype: str | None = None):
        self.path = Path(path)
        meta_path = self.path / META
        if not meta_path.is_file():
            raise StageError(f"{self.path} has no {META}: token files are incomplete; delete the folder and rerun")
        self.meta = json.loads(meta_path.read_text())
        if expect_tokenizer_sha256 and self.meta["tokenizer_sha256"] != expect_tokenizer_sha256:
            raise StageError(
                f"{self.path} was tokenized with another tokenizer (sha256 {self.meta['tokenizer_sha256'][:12]}, "
                f"expected {expect_tokenizer_sha256[:12]}); delete it to re-tokenize with --tokenizer-dir"
            )
        dtype = np.dtype(self.meta["dtype"])
        if dtype.name not in ("uint16", "uint32"):
            raise StageError(f"{meta_path}: unsupported token dtype {dtype.name}")
        if expect_dtype and dtype.name != expect_dtype:
            raise StageError(f"{self.path} stores {dtype.name} tokens but the tokenizer needs {expect_dtype}; "
                             f"delete it to re-tokenize")
        n = self.meta["tokens"]
        size = (self.path / "tokens.bin").stat().st_size
        if size != n * dtype.itemsize:
            raise StageError(f"{self.path}/tokens.bin has {size} bytes, meta says {n} {dtype.name} tokens; re-tokenize")
        self.tokens = np.memmap(self.path / "tokens.bin", dtype=dtype, mode="r", shape=(n,)) if n else np.zeros(0, dtype)

    def __len__(self) -> int:
        return len(self.tokens)


class PackedBlocks:
    """Fixed-length blocks cut from a :class:`TokenFile`, as a map-style torch dataset.

    Training uses whole blocks only (no padding). With ``pad_last=True`` (validation) the tail that
    does not fill a block is kept, padded with ``pad_id`` and masked out of the loss with -100.
    """

    def __init__(self, tokens: np.ndarray, block_size: int, pad_last: bool = False, pad_id: int = 0):
        self.tokens = tokens
        self.block_size = block_size
        self.pad_id = pad_id
        full, rest = divmod(len(tokens), block_size)
        self.n = full + (1 if pad_last and rest > 1 else 0)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        import torch

        if not 0 <= i < self.n:
            raise IndexError(i)
        chunk = np.asarray(self.tokens[i * self.block_size:(i + 1) * self.block_size], dtype=np.int64)
        ids = torch.from_numpy(chunk)
        labels = ids.clone()
        if len(chunk) < self.block_size:
            pad = self.block_size - len(chunk)
            ids = torch.cat([ids, torch.full((pad,), self.pad_id, dtype=torch.long)])
            labels = torch.cat([labels, torch.full((pad,), -100, dtype=torch.long)])
        return {"input_ids": ids, "labels": labels}


def split_by_language(langs: Sequence[str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, lang in enumerate(langs):
        groups.setdefault(lang, []).append(i)
    return groups
