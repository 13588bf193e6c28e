#!/usr/bin/env python
"""Throughput of tonsai.text.normalize on real Khmer news and English text, one core, against
unicodedata.normalize("NFC", ...) on the same lines in the same run.

  uv run python bench/bench_normalize.py [--shared-data ../shared/data] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import time
import unicodedata
from pathlib import Path

from tonsai.text import normalize


def rate(fn, lines: list[str], repeat: int) -> float:
    chars = sum(map(len, lines))
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for line in lines:
            fn(line)
        best = min(best, time.perf_counter() - t)
    return chars / best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared-data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    corpora = {
        "Khmer news": args.shared_data / "khmer_news_kh_data_1000" / "khm_news_orig.txt",
        "English (WikiText-2 + Shakespeare)": [args.shared_data / "english_wikitext2_raw" / "wikitext2.valid.txt",
                                               args.shared_data / "english_tinyshakespeare" / "input.txt"],
    }
    print(f"{'corpus':36} {'chars':>10} {'normalize (cold)':>18} {'normalize (warm)':>18} {'NFC':>14} {'ratio':>7}")
    for name, paths in corpora.items():
        paths = paths if isinstance(paths, list) else [paths]
        if not all(p.is_file() for p in paths):
            print(f"skip {name}: {paths[0]} not found (pass --shared-data)", file=sys.stderr)
            continue
        lines = [ln for p in paths for ln in p.read_text(encoding="utf-8").splitlines()]
        chars = sum(map(len, lines))
        sys.modules["tonsai.text.syllable"]._cache.clear()
        cold = rate(normalize, lines, 1)
        warm = rate(normalize, lines, args.repeat)
        nfc = rate(lambda s: unicodedata.normalize("NFC", s), lines, args.repeat)
        print(f"{name:36} {chars:>10,} {cold / 1e6:>14.2f} M/s {warm / 1e6:>14.2f} M/s {nfc / 1e6:>10.1f} M/s "
              f"{warm / nfc:>7.3f}")
    print("chars/s on one core; ratio = warm normalize / NFC (NFC is a C quick-check, the floor of any normalizer)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
