#!/usr/bin/env python
"""Throughput of the per-document text analysis that prepare runs (script counts, quality
signals) and of the segmenters, on normalized Khmer news, one core, with str.split() on the same
text measured in the same run as a floor.

  uv run python bench/bench_text_analysis.py [--shared-data ../shared/data] [--words-lines 200]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tonsai.text import clusters, count_scripts, normalize, quality_signals, words


def rate(fn, lines: list[str]) -> float:
    t = time.perf_counter()
    for line in lines:
        fn(line)
    return sum(map(len, lines)) / (time.perf_counter() - t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared-data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--words-lines", type=int, default=200, help="lines for the slow word segmenter")
    args = ap.parse_args()
    path = args.shared_data / "khmer_news_kh_data_1000" / "khm_news_orig.txt"
    if not path.is_file():
        print(f"{path} not found (pass --shared-data)", file=sys.stderr)
        return 1
    lines = [normalize(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    floor = rate(str.split, lines)
    rows = [
        ("count_scripts", rate(count_scripts, lines)),
        ("quality_signals", rate(quality_signals, lines)),
        ("clusters (regex \\X)", rate(clusters, lines)),
        ("words (khmer-nltk, aligned)", rate(words, lines[:args.words_lines])),
    ]
    print(f"Khmer news, {sum(map(len, lines)):,} normalized chars, one core")
    print(f"{'function':30} {'chars/s':>14} {'vs str.split':>13}")
    for name, r in rows:
        print(f"{name:30} {r / 1e6:>12.3f} M {r / floor:>13.4f}")
    print(f"{'str.split (floor)':30} {floor / 1e6:>12.1f} M")
    return 0


if __name__ == "__main__":
    sys.exit(main())
