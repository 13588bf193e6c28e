#!/usr/bin/env python
"""Tokens per second of the tokenize stage, this checkout against an earlier commit's engine.

For each engine and worker count, a child process imports that engine's ``tonsai`` (the earlier
commit's ``tonsai/`` is extracted with ``git archive`` into --work and put first on PYTHONPATH; both
run in this Python environment) and times ``pack_dataset`` on the same prepared dataset and
tokenizer: every split, worker start-up and the final folders included, interpreter start-up not.
Runs alternate between engines, and the best of ``--repeat`` runs is reported, since the machine
may be shared.

  uv run python bench/bench_tokenize.py --dataset-dir runs/data --tokenizer-dir runs/tokenizer \\
      --against 0147bdc --workers 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHILD = """
import json, sys, time
import tonsai.tokenizer.pack as pack
data, tok, out, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
t0 = time.perf_counter()
pack.pack_dataset(data, tok, out, workers)
dt = time.perf_counter() - t0
meta = json.load(open(out + "/manifest.json"))["folders"]
print(json.dumps({"engine_file": pack.__file__, "seconds": dt, "tokens": sum(m["tokens"] for m in meta.values()),
                  "bytes": sum(m["bytes"] for m in meta.values())}))
"""


def extract(rev: str, work: Path) -> Path:
    dest = work / f"src-{rev}"
    if not dest.is_dir():
        dest.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "tonsai"], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def run_once(src: Path, args, workers: int, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", HF_HUB_OFFLINE="1")
    paths = [os.path.abspath(p) for p in (args.dataset_dir, args.tokenizer_dir, out)]
    r = subprocess.run([sys.executable, "-c", CHILD, *paths, str(workers)],
                       capture_output=True, text=True, env=env, cwd=src)
    if r.returncode:
        raise SystemExit(f"{src} with {workers} workers failed:\n{r.stderr[-3000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    if not res["engine_file"].startswith(str(src)):
        raise SystemExit(f"the child imported {res['engine_file']}, not the engine in {src}")
    shutil.rmtree(out, ignore_errors=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset-dir", required=True)
    ap.add_argument("--tokenizer-dir", required=True)
    ap.add_argument("--against", default="HEAD~1", help="git revision of the engine to compare with")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--work", default="/tmp/tonsai-bench-tokenize")
    args = ap.parse_args()
    work = Path(args.work)
    engines = {f"before ({args.against})": extract(args.against, work), "after (this checkout)": REPO}
    best: dict[tuple[str, int], dict] = {}
    for _ in range(args.repeat):
        for workers in args.workers:
            for name, src in engines.items():
                res = run_once(src, args, workers, work / "out")
                key = (name, workers)
                if key not in best or res["seconds"] < best[key]["seconds"]:
                    best[key] = res
    print("| engine | workers | seconds | tokens | tokens/s | MB/s |\n|---|---:|---:|---:|---:|---:|")
    for (name, workers), res in best.items():
        print(f"| {name} | {workers} | {res['seconds']:.2f} | {res['tokens']:,} | "
              f"{res['tokens'] / res['seconds']:,.0f} | {res['bytes'] / res['seconds'] / 1e6:.2f} |")


if __name__ == "__main__":
    main()
