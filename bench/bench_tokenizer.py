#!/usr/bin/env python
"""Tokenizer benchmark on the shared data: training time and fertility of tonsai's two BPE
algorithms and of a plain SentencePiece BPE baseline (byte fallback, identity normalization) on
the same text, and encode throughput of tonsai's tokenizer through transformers and through the
raw tokenizers library, against SentencePiece, in the same run. tonsai trains on the distinct lines
(as scripts/train_tokenizer.py --input does); the SentencePiece baseline on every line, and once
more on the distinct lines.

  uv run python bench/bench_tokenizer.py [--shared-data ../shared/data] [--vocab-size 32000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from tonsai.text import normalize
from tonsai.tokenizer.bpe import SPECIAL_TOKENS, file_texts, train_bpe
from tonsai.tokenizer.spm import to_tokenizers, train_sentencepiece

TRAIN = ["khmer_news_kh_data_1000/khm_news_orig.txt", "english_wikitext2_raw/wikitext2.valid.txt",
         "english_wikitext2_raw/wikitext2.test.txt", "english_tinyshakespeare/input.txt"]
PARALLEL = ["sib200_flores_khm_eng_dev", "ntrex128_khm_eng_dev"]


def lines(path: Path) -> list[str]:
    return [normalize(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared-data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--vocab-size", type=int, default=32000)
    args = ap.parse_args()
    d = args.shared_data
    if not (d / TRAIN[0]).is_file():
        print(f"{d / TRAIN[0]} not found (pass --shared-data)", file=sys.stderr)
        return 1
    every_line = [t for p in TRAIN for t in lines(d / p)]
    texts = list(file_texts([d / p for p in TRAIN]))  # what train_tokenizer.py --input trains on
    chars = sum(map(len, texts))
    print(f"training text: {len(texts):,} distinct lines of {len(every_line):,}, {chars:,} chars (normalized); "
          f"vocab {args.vocab_size:,}; {os.cpu_count()} cores\n")

    counters, rows, trained = {}, [], {}
    for algo in ("byte-fallback", "byte-level"):
        t = time.perf_counter()
        tok = train_bpe(iter(texts), args.vocab_size, algo, show_progress=False)
        rows.append((f"tonsai {algo}", time.perf_counter() - t))
        trained[algo] = tok
    t = time.perf_counter()
    sp = train_sentencepiece(iter(every_line), args.vocab_size, SPECIAL_TOKENS)
    rows.append(("sentencepiece BPE (baseline)", time.perf_counter() - t))
    t = time.perf_counter()
    sp_distinct = train_sentencepiece(iter(texts), args.vocab_size, SPECIAL_TOKENS)
    rows.append(("sentencepiece BPE, distinct lines", time.perf_counter() - t))
    t = time.perf_counter()
    trained["sentencepiece"] = to_tokenizers(sp_distinct)  # what --algorithm sentencepiece --input gives
    rows.append(("tonsai sentencepiece (converted)", rows[-1][1] + time.perf_counter() - t))
    for name, tok in trained.items():
        counters[f"tonsai {name}" + (" (converted)" if name == "sentencepiece" else "")] = (
            lambda xs, tok=tok: [len(e.ids) for e in tok.encode_batch(xs, add_special_tokens=False)])
    counters["sentencepiece BPE (baseline)"] = lambda xs: [len(ids) for ids in sp.encode(xs)]
    counters["sentencepiece BPE, distinct lines"] = lambda xs: [len(ids) for ids in sp_distinct.encode(xs)]

    print(f"{'tokenizer':34} {'train s':>8} " + " ".join(f"{s[:6] + ' ' + m:>13}" for s in PARALLEL
                                                         for m in ("km/1k", "en/1k", "parity")))
    for name, secs in rows:
        cells = []
        for s in PARALLEL:
            km, en = lines(d / s / "khm_Khmr.txt"), lines(d / s / "eng_Latn.txt")
            kt, et = sum(counters[name](km)), sum(counters[name](en))
            cells += [1000 * kt / sum(map(len, km)), 1000 * et / sum(map(len, en)), kt / et]
        print(f"{name:34} {secs:>8.1f} " + " ".join(f"{c:>13.3f}" if i % 3 == 2 else f"{c:>13.1f}"
                                                     for i, c in enumerate(cells)))

    # encode throughput on the whole training text, batched, with the 32k tokenizers trained above
    from transformers import PreTrainedTokenizerFast

    raw_tok = trained["byte-fallback"]
    hf = PreTrainedTokenizerFast(tokenizer_object=raw_tok)  # what AutoTokenizer returns for a tonsai folder
    batch = 1000
    timings = {}
    for name, fn in [
        ("transformers (AutoTokenizer)", lambda xs: hf(xs, add_special_tokens=False)["input_ids"]),
        ("raw tokenizers encode_batch", lambda xs: [e.ids for e in raw_tok.encode_batch(xs, add_special_tokens=False)]),
        ("converted SentencePiece, tokenizers", lambda xs: [e.ids for e in trained["sentencepiece"].encode_batch(
            xs, add_special_tokens=False)]),
        ("sentencepiece encode (distinct lines)", lambda xs: sp_distinct.encode(xs, num_threads=os.cpu_count())),
    ]:
        t = time.perf_counter()
        n = sum(len(ids) for i in range(0, len(texts), batch) for ids in fn(texts[i:i + batch]))
        timings[name] = (n / (time.perf_counter() - t), n)
    base = timings["raw tokenizers encode_batch"][0]
    print(f"\nencode throughput, batches of {batch}, {os.cpu_count()} cores:")
    for name, (r, n) in timings.items():
        print(f"  {name:38} {r / 1e6:>7.2f} M tokens/s ({n:,} tokens)  ratio to raw tokenizers {r / base:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
