#!/usr/bin/env python
"""Throughput and peak memory of the whole prepare stage (scripts/prepare_dataset.py).

Runs the stage in a child process on every text file of ../shared/data (Khmer news as .txt and
.jsonl, the OSCAR sample, NTREX and FLORES in both languages, WikiText-2, Tiny Shakespeare) and
reports MB/s and documents/s of input, peak RSS of the child (its largest resident set, from
``getrusage(RUSAGE_CHILDREN)``), the wall time of the shard phase and each merge step, and the
worker seconds per step (normalize, filters, dedup keys). ``--scale 10`` first writes a corpus ten
times larger of *distinct* documents (each copy joins the first half of a document to the second
half of another, chosen by a different permutation per copy, so exact and near-duplicate removal
keep them) as .jsonl.zst files in --work, to show that peak RSS does not grow with the corpus.

  uv run python bench/bench_prepare.py                       # 1x shared data
  uv run python bench/bench_prepare.py --scale 10 --num-proc 2
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
KM_FILES = ["khmer_news_kh_data_1000/khm_news_orig.txt", "khmer_news_kh_data_1000/articles.jsonl",
            "oscar_km_crf_segmented_sample/oscar_kh_1.seg.txt", "ntrex128_khm_eng_dev/khm_Khmr.txt",
            "sib200_flores_khm_eng_dev/khm_Khmr.txt"]
EN_FILES = ["english_wikitext2_raw/wikitext2.test.txt", "english_wikitext2_raw/wikitext2.valid.txt",
            "english_tinyshakespeare/input.txt", "ntrex128_khm_eng_dev/eng_Latn.txt",
            "sib200_flores_khm_eng_dev/eng_Latn.txt"]


def read_docs(path: Path) -> list[str]:
    if path.suffix == ".jsonl":
        return [json.loads(line)["text"] for line in path.open(encoding="utf-8") if line.strip()]
    return [line.rstrip("\n") for line in path.open(encoding="utf-8") if line.strip()]


def write_scaled(shared: Path, out: Path, scale: int) -> tuple[list[str], list[str]]:
    """``scale`` copies of every file's documents, recombined so that no two are duplicates."""
    import zstandard

    out.mkdir(parents=True, exist_ok=True)
    lists: tuple[list[str], list[str]] = ([], [])
    for lang_files, paths in ((KM_FILES, lists[0]), (EN_FILES, lists[1])):
        for rel in lang_files:
            docs = read_docs(shared / rel)
            n = len(docs)
            target = out / (rel.replace("/", "__") + f".x{scale}.jsonl.zst")
            with zstandard.ZstdCompressor(level=3).stream_writer(target.open("wb")) as w:
                for c in range(scale):
                    perm = np.random.default_rng(c).permutation(n) if c else np.arange(n)
                    for i in range(n):
                        a, b = docs[i], docs[int(perm[i])]
                        text = a if c == 0 else a[: len(a) // 2] + b[len(b) // 2:]
                        w.write((json.dumps({"text": text}, ensure_ascii=False) + "\n").encode())
            paths.append(str(target))
    return lists


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared-data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--scale", type=int, default=1, help="corpus size as a multiple of the shared data")
    ap.add_argument("--num-proc", type=int, default=1)
    ap.add_argument("--num-shards", type=int, default=1)
    ap.add_argument("--shuffle-bucket-mb", type=int, default=8,
                    help="small, so that shuffle buckets are full at 1x as at 10x (memory is then flat)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/tonsai_bench_prepare"))
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    if not args.shared_data.is_dir():
        print(f"no shared data at {args.shared_data} (pass --shared-data)", file=sys.stderr)
        return 1
    if args.scale == 1:
        km = [str(args.shared_data / f) for f in KM_FILES]
        en = [str(args.shared_data / f) for f in EN_FILES]
    else:
        t = time.perf_counter()
        km, en = write_scaled(args.shared_data, args.work / f"corpus_x{args.scale}", args.scale)
        print(f"wrote the x{args.scale} corpus in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    out = args.work / f"out_x{args.scale}"
    cmd = [sys.executable, str(REPO / "scripts" / "prepare_dataset.py"), "--khmer", *km, "--english", *en,
           "--khmer-weight", "0.6", "--english-weight", "0.4", "--output-dir", str(out),
           "--num-proc", str(args.num_proc), "--num-shards", str(args.num_shards),
           "--shuffle-bucket-mb", str(args.shuffle_bucket_mb), "--max-epochs", "1"]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    m = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    read = sum(c.get("read", 0) for c in m["counts"].values())
    mb_in = sum(s["bytes_in"] for s in m["shard_timings"]) / 1e6
    steps: dict[str, float] = {}
    for s in m["shard_timings"]:
        for k, v in s["worker_step_s"].items():
            steps[k] = steps.get(k, 0.0) + v
    shard_wall = sum(s["elapsed_s"] for s in m["shard_timings"])
    chars = {lang: v["selected_chars"] for lang, v in m["mixture"].items()}
    fig = {
        "scale": args.scale, "num_proc": args.num_proc, "input_mb": round(mb_in, 1), "documents": read,
        "wall_s": round(wall, 1), "mb_per_s": round(mb_in / wall, 2), "docs_per_s": round(read / wall),
        "peak_rss_mb": round(peak_mb), "shard_phase_s": round(shard_wall, 1),
        "worker_step_s": {k: round(v, 1) for k, v in steps.items()},
        "merge_step_s": m["merge_timings_s"],
        "peak_rss_mb_shards": [s["peak_rss_mb"] for s in m["shard_timings"]],
        "peak_rss_mb_after_merge_steps": m["peak_rss_mb_after"],
        "realized_shares": {lang: round(v["realized_share"], 4) for lang, v in m["mixture"].items()},
        "train_chars": chars, "train_docs": m["splits"]["train"], "validation_docs": m["splits"]["validation"],
        "dropped_duplicate": sum(c.get("dropped:duplicate", 0) for c in m["counts"].values()),
        "dropped_near_duplicate": sum(c.get("dropped:near_duplicate", 0) for c in m["counts"].values()),
    }
    print(json.dumps(fig, indent=2))
    if args.json:
        args.json.write_text(json.dumps(fig, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
