"""Writing the token shard format: one task's shard file, and a token folder's ``meta.json``.

A shard is the raw little-endian array of a run of documents' token ids (the narrowest dtype for
the vocabulary), each document followed by the end-of-text id; ``<shard>.langs.npy`` beside it
records each token's language as runs when the documents have one (readers:
:class:`tonsai.tokenizer.pack.TokenFile`). A module of its own so that the tokenize stage
(:mod:`tonsai.tokenizer.pack`, which re-exports these names) and its datatrove tasks
(:mod:`tonsai.tokenizer.tasks`) both import it at the top without an import cycle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
from tokenizers import Tokenizer

from tonsai.errors import StageError
from tonsai.manifest import tokenizer_hash
from tonsai.tokenizer.bpe import EOT, token_dtype

META = "meta.json"
LANG_SUFFIX = ".langs.npy"


def write_shard(texts: Iterable[str | tuple[str, str]], tokenizer_json: str, path: Path,
                 batch_size: int = 1000, normalized: bool = False) -> dict:
    """Tokenize ``texts`` into the shard file ``path``; return its counts.

    Items may be ``(text, lang)`` pairs: then ``<shard>.langs.npy`` records the language of every
    token as runs (an int64 array of rows ``[end offset, language index]``, languages listed in the
    counts under ``langs``), which training uses to count the tokens it has seen per language.

    ``normalized``: the texts went through :func:`tonsai.text.normalize` already (a prepared
    dataset's have), so the normalizer chain inside tokenizer.json, which leaves such text as it is
    (tests/tokenizer/test_normalizer.py), is skipped: the same ids, encoded about 1.7x faster (its
    60-odd regex replacements cost more than the BPE itself; bench/bench_tokenize.py)."""
    tok = Tokenizer.from_file(tokenizer_json)
    if normalized:
        tok.normalizer = None
    # Document text is text: a literal "<|endoftext|>" in it is spelled out, never the separator id.
    tok.encode_special_tokens = True
    eos = tok.token_to_id(EOT)
    if eos is None:
        raise StageError(f"{tokenizer_json}: tokenizer has no {EOT} token")
    dtype = np.dtype(token_dtype(tok.get_vocab_size()))
    counts = {"file": path.name, "tokens": 0, "documents": 0, "bytes": 0, "characters": 0}
    langs: list[str] = []
    runs: list[list[int]] = []  # [end offset, language index], one row per run of same-language documents
    by_lang: dict[str, dict[str, int]] = {}
    with open(path, "wb") as f:
        batch: list[str] = []
        batch_langs: list[str | None] = []

        def flush() -> None:
            for enc, lang, text in zip(tok.encode_batch(batch, add_special_tokens=False), batch_langs, batch):
                ids = np.asarray(enc.ids + [eos], dtype=dtype)
                f.write(ids.tobytes())
                counts["tokens"] += len(ids)
                if lang is not None:
                    per = by_lang.setdefault(lang, {"documents": 0, "characters": 0, "tokens": 0})
                    per["documents"] += 1
                    per["characters"] += len(text)
                    per["tokens"] += len(ids)  # with the document's end-of-text, as training sees them
                    if lang not in langs:
                        langs.append(lang)
                    code = langs.index(lang)
                    if runs and runs[-1][1] == code:
                        runs[-1][0] = counts["tokens"]
                    else:
                        runs.append([counts["tokens"], code])
            batch.clear()
            batch_langs.clear()

        for item in texts:
            text, lang = item if isinstance(item, tuple) else (item, None)
            batch.append(text)
            batch_langs.append(lang)
            counts["documents"] += 1
            counts["characters"] += len(text)
            counts["bytes"] += len(text.encode("utf-8"))
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()
    if runs:
        with open(path.with_name(path.name.removesuffix(".bin") + LANG_SUFFIX), "wb") as f:
            np.save(f, np.asarray(runs, dtype=np.int64))
        counts["langs"] = langs
        counts["by_lang"] = by_lang
    return counts


def folder_meta(tokenizer_dir: str | Path, shards: list[dict], extra: dict | None) -> dict:
    tok = Tokenizer.from_file(str(Path(tokenizer_dir) / "tokenizer.json"))
    totals = {k: sum(s[k] for s in shards) for k in ("tokens", "documents", "bytes", "characters")}
    by_lang: dict[str, dict[str, int]] = {}
    for shard in shards:
        for lang, per in shard.get("by_lang", {}).items():
            acc = by_lang.setdefault(lang, dict.fromkeys(per, 0))
            for k, v in per.items():
                acc[k] += v
    if by_lang:
        totals["by_lang"] = by_lang
    return {"tokenizer_sha256": tokenizer_hash(tokenizer_dir), "dtype": token_dtype(tok.get_vocab_size()),
            "eos_id": tok.token_to_id(EOT), **totals, "shards": shards, **(extra or {})}
