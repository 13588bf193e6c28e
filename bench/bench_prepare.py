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
``--files-per-source K`` writes each scaled source as a folder of K files instead, the way big
corpora come: each document task then opens its own files (and at most two it shares) instead of
scanning every file for its documents.

``--workers 1 2`` runs the stage once per worker count (document tasks in parallel processes) and
prints the speed-up over one worker. ``--baseline REV`` also runs the stage (with each worker count) as it was at git
revision REV (a temporary worktree, the same input, the same Python environment) in the same run
and prints the ratio: ``--baseline 58da6c8`` is the last commit of tonsai's own shard runner
(numpy MinHash, one merge process), before the datatrove engine.

  uv run python bench/bench_prepare.py                       # 1x shared data, one worker
  uv run python bench/bench_prepare.py --workers 1 2 --baseline 58da6c8
  uv run python bench/bench_prepare.py --scale 10
  uv run python bench/bench_prepare.py --scale 10 --files-per-source 10 --workers 1 2
"""

from __future__ import annotations

import argparse
import json
import os
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


def write_scaled(shared: Path, out: Path, scale: int, files: int = 1) -> tuple[list[str], list[str]]:
    """``scale`` copies of every file's documents, recombined so that no two are duplicates; with
    ``files`` > 1 each source is a folder of that many files of consecutive documents."""
    import zstandard

    out.mkdir(parents=True, exist_ok=True)
    lists: tuple[list[str], list[str]] = ([], [])
    for lang_files, paths in ((KM_FILES, lists[0]), (EN_FILES, lists[1])):
        for rel in lang_files:
            docs = read_docs(shared / rel)
            n = len(docs)
            name = rel.replace("/", "__") + f".x{scale}"
            target = out / (name + ".jsonl.zst") if files == 1 else out / f"{name}.f{files}"
            if files > 1:
                shutil.rmtree(target, ignore_errors=True)
                target.mkdir()
            parts = [target] if files == 1 else [target / f"part-{j:03d}.jsonl.zst" for j in range(files)]
            writers = [zstandard.ZstdCompressor(level=3).stream_writer(p.open("wb")) for p in parts]
            for c in range(scale):
                perm = np.random.default_rng(c).permutation(n) if c else np.arange(n)
                for i in range(n):
                    a, b = docs[i], docs[int(perm[i])]
                    text = a if c == 0 else a[: len(a) // 2] + b[len(b) // 2:]
                    w = writers[(c * n + i) * len(writers) // (scale * n)]
                    w.write((json.dumps({"text": text}, ensure_ascii=False) + "\n").encode())
            for w in writers:
                w.close()
            paths.append(str(target))
    return lists


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared-data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--scale", type=int, default=1, help="corpus size as a multiple of the shared data")
    ap.add_argument("--files-per-source", type=int, default=1,
                    help="with --scale > 1: write each source as a folder of this many files")
    ap.add_argument("--workers", type=int, nargs="+", default=[1], help="one run per worker count")
    ap.add_argument("--baseline", metavar="REV", help="also run the stage as of this git revision (e.g. 58da6c8)")
    ap.add_argument("--shuffle-bucket-mb", type=int, default=8,
                    help="small, so that shuffle buckets are full at 1x as at 10x (memory is then flat)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/tonsai_bench_prepare"))
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    if not args.shared_data.is_dir():
        print(f"no shared data at {args.shared_data} (pass --shared-data)", file=sys.stderr)
        return 1
    if args.files_per_source > 1 and args.scale == 1:
        ap.error("--files-per-source splits the written corpus: it needs --scale 2 or more")
    if args.scale == 1:
        km = [str(args.shared_data / f) for f in KM_FILES]
        en = [str(args.shared_data / f) for f in EN_FILES]
    else:
        t = time.perf_counter()
        km, en = write_scaled(args.shared_data, args.work / f"corpus_x{args.scale}", args.scale, args.files_per_source)
        print(f"wrote the x{args.scale} corpus in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    runs = [run_stage(REPO, km, en, w, args, f"x{args.scale}-w{w}") for w in args.workers]
    if args.baseline:
        runs += run_baseline(args.baseline, km, en, args)
    first = runs[0]
    for r in runs:
        r["speed_vs_first"] = round(r["mb_per_s"] / first["mb_per_s"], 2)
        if r["doc_step_mb_per_s"] and first["doc_step_mb_per_s"]:
            r["doc_step_vs_first"] = round(r["doc_step_mb_per_s"] / first["doc_step_mb_per_s"], 2)
    print(json.dumps(runs, indent=2))
    print("whole: the stage's command from start to exit; doc step: the document tasks alone (the work that is "
          "spread over processes), MB/s of input in each")
    print(f"{'engine':<22}{'workers':>8}{'MB/s':>8}{'docs/s':>9}{'wall s':>8}{'doc step s':>11}{'doc MB/s':>9}"
          f"{'merge s':>8}{'peak MB':>9}{'x first':>9}{'doc x first':>12}")
    for r in runs:
        print(f"{r['engine']:<22}{r['workers']:>8}{r['mb_per_s']:>8}{r['docs_per_s']:>9}{r['wall_s']:>8}"
              f"{r['document_step_s'] or '-':>11}{r['doc_step_mb_per_s'] or '-':>9}{r['merge_s']:>8}"
              f"{r['peak_rss_mb']:>9}{r['speed_vs_first']:>9}{r.get('doc_step_vs_first', '-'):>12}")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2) + "\n", encoding="utf-8")
    return 0


def run_stage(repo: Path, km: list[str], en: list[str], workers: int, args, tag: str, engine: str = "datatrove",
              env: dict | None = None) -> dict:
    """One run of scripts/prepare_dataset.py in ``repo`` in a child process; its figures."""
    out = args.work / f"out_{tag}"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(out.with_name(out.name + ".work"), ignore_errors=True)
    cmd = [sys.executable, str(repo / "scripts" / "prepare_dataset.py"), "--khmer", *km, "--english", *en,
           "--khmer-weight", "0.6", "--english-weight", "0.4", "--output-dir", str(out),
           "--num-proc", str(workers), "--shuffle-bucket-mb", str(args.shuffle_bucket_mb), "--max-epochs", "1"]
    code = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stderr=subprocess.DEVNULL); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, *cmd], stdout=subprocess.PIPE, text=True, env=env,
                            cwd=repo)  # a fresh child per run: RUSAGE_CHILDREN is per process
    polled = _poll_tree_peak_mb(proc)
    stdout = proc.communicate()[0]
    wall = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"prepare failed ({proc.returncode}): {' '.join(cmd)}")
    # RUSAGE_CHILDREN misses the task processes of a fork server (nobody waits for the server);
    # /proc's high-water marks of every process of the tree, polled, see them
    peak_mb = max(int(stdout.split()[-1]) / 1024, polled)
    m = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    read = sum(c.get("read", 0) for c in m["counts"].values())
    mb_in = sum(s["bytes_in"] for s in m["shard_timings"]) / 1e6
    steps: dict[str, float] = {}
    for s in m["shard_timings"]:
        for k, v in s["worker_step_s"].items():
            steps[k] = steps.get(k, 0.0) + v
    fig = {
        "engine": engine, "scale": args.scale, "files_per_source": args.files_per_source, "workers": workers, "input_mb": round(mb_in, 1), "documents": read,
        "wall_s": round(wall, 1), "mb_per_s": round(mb_in / wall, 2), "docs_per_s": round(read / wall),
        "peak_rss_mb": round(peak_mb), "document_step_s": m.get("document_step_s"),
        "doc_step_mb_per_s": round(mb_in / m["document_step_s"], 2) if m.get("document_step_s") else None,
        "merge_s": round(sum(m["merge_timings_s"].values()), 1),
        "worker_step_s": {k: round(v, 1) for k, v in steps.items()},
        "merge_step_s": m["merge_timings_s"],
        "peak_rss_mb_tasks": [s["peak_rss_mb"] for s in m["shard_timings"]],
        "peak_rss_mb_after_merge_steps": m["peak_rss_mb_after"],
        "realized_shares": {lang: round(v["realized_share"], 4) for lang, v in m["mixture"].items()},
        "train_docs": m["splits"]["train"], "validation_docs": m["splits"]["validation"],
        "dropped_duplicate": sum(c.get("dropped:duplicate", 0) for c in m["counts"].values()),
        "dropped_near_duplicate": sum(c.get("dropped:near_duplicate", 0) for c in m["counts"].values()),
    }
    shutil.rmtree(out, ignore_errors=True)
    return fig


def _poll_tree_peak_mb(proc: subprocess.Popen, every_s: float = 0.1) -> float:
    """The largest peak resident set (VmHWM) of ``proc`` and its descendants, polled until it exits."""
    peaks: dict[int, int] = {}
    while proc.poll() is None:
        parent: dict[int, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parent[int(stat.parent.name)] = int(fields[1])
        tree, frontier = set(), {proc.pid}
        while frontier:
            tree |= frontier
            frontier = {pid for pid, ppid in parent.items() if ppid in frontier} - tree
        for pid in tree:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    peaks[pid] = max(peaks.get(pid, 0), int(line.split()[1]))
        time.sleep(every_s)
    return max(peaks.values(), default=0) / 1024


def run_baseline(rev: str, km: list[str], en: list[str], args) -> list[dict]:
    """The stage at git revision ``rev``, from a temporary worktree, with each worker count."""
    tree = args.work / f"baseline-{rev}"
    if not tree.is_dir():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), rev], check=True,
                       capture_output=True)
    env = dict(os.environ, PYTHONPATH=str(tree))  # its tonsai, not the installed one
    try:
        return [run_stage(tree, km, en, w, args, f"x{args.scale}-baseline-w{w}", engine=f"baseline {rev}", env=env)
                for w in args.workers]
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
