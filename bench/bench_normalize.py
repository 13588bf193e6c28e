#!/usr/bin/env python
"""Throughput of tonsai.text.normalize, one core, CPU time, against a previous implementation read
from git in the same run (``--baseline-rev``, as bench/bench_docs.py does), with a check that both
give the same output.

Two tables:

1. Line by line, as the prepare stage calls it, on real Khmer news and English text, against
   ``unicodedata.normalize("NFC", ...)`` on the same lines (the floor of any normalizer).
2. One call on a whole text of 10k, 100k, 1M and 10M characters (the Khmer news file, repeated to
   reach 10M): characters per second should stay flat as the text grows. "cold" starts with empty
   syllable caches (a new process), "warm" normalizes the same text again; "line by line" is the
   same text in lines, warm. Best of --repeat passes (two at 1M, one at 10M).

  uv run python bench/bench_normalize.py [--shared-data ../shared/data] [--baseline-rev REV]
      [--sizes 10000,100000,1000000,10000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

from bench_docs import REPO, clear_caches, load_baseline  # bench/ is on sys.path

from tonsai.text import NORMALIZER_VERSION, normalize, syllable

BASELINE_REV = "129c153"  # the normalizer before the one-pass rewrite (issue 17)


def rate(fn, texts: list[str], repeat: int, reset=None) -> float:
    """Characters per CPU second, best of ``repeat`` (``reset`` runs before each timed pass)."""
    chars = sum(map(len, texts))
    best = float("inf")
    for _ in range(repeat):
        if reset:
            reset()
        t = time.process_time()
        for text in texts:
            fn(text)
        best = min(best, time.process_time() - t)
    return chars / max(best, 1e-9)


def line_table(impls: dict, corpora: dict[str, list[str]], repeat: int) -> None:
    print(f"\nline by line, chars/s (M){'':4}" + "".join(f"{n + ' cold':>14}{n + ' warm':>14}" for n in impls)
          + f"{'NFC':>9}{'now/NFC':>9}")
    for name, lines in corpora.items():
        row = f"{name:30}"
        for impl in impls.values():
            cold = rate(impl.normalize, lines, repeat, impl.reset)
            warm = rate(impl.normalize, lines, repeat)
            row += f"{cold / 1e6:>14.2f}{warm / 1e6:>14.2f}"
        nfc = rate(lambda s: unicodedata.normalize("NFC", s), lines, repeat)
        print(row + f"{nfc / 1e6:>9.0f}{warm / nfc:>9.3f}")


def one_call_table(impls: dict, text: str, sizes: list[int], repeat: int) -> None:
    print("\none call on the whole text, chars/s (M)" + "".join(f"{n + ' cold':>14}{n + ' warm':>14}" for n in impls)
          + f"{'line by line':>14}")
    for n in sizes:
        t = (text * (n // len(text) + 1))[:n]
        row = f"{n:>12,} characters{'':15}"
        passes = 1 if n >= 10_000_000 else 2 if n >= 1_000_000 else repeat
        for impl in impls.values():
            cold = rate(impl.normalize, [t], passes, impl.reset)
            warm = rate(impl.normalize, [t], passes)
            row += f"{cold / 1e6:>14.2f}{warm / 1e6:>14.2f}"
        lines = t.splitlines(keepends=True)
        print(row + f"{rate(normalize, lines, passes) / 1e6:>14.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared-data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--baseline-rev", default=BASELINE_REV, help="git revision of the previous implementation")
    ap.add_argument("--sizes", default="10000,100000,1000000,10000000", help="characters per one-call text")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    news = args.shared_data / "khmer_news_kh_data_1000" / "khm_news_orig.txt"
    english = [args.shared_data / "english_wikitext2_raw" / "wikitext2.valid.txt",
               args.shared_data / "english_tinyshakespeare" / "input.txt"]
    if not all(p.is_file() for p in [news, *english]):
        print(f"no shared data at {args.shared_data} (pass --shared-data)", file=sys.stderr)
        return 1
    news_text = news.read_text(encoding="utf-8")
    english_lines = [ln for p in english for ln in p.read_text(encoding="utf-8").splitlines()]
    corpora = {"Khmer news": news_text.splitlines(), "English (WikiText-2 + Shakesp.)": english_lines}
    with tempfile.TemporaryDirectory() as tmp:
        base = load_baseline(args.baseline_rev, Path(tmp))
        now = type(base)(normalize=normalize, version=NORMALIZER_VERSION, reset=lambda: clear_caches([syllable]))
        impls = {"before": base, "now": now}
        print(f"one core, CPU time; before = {args.baseline_rev} ({base.version}), now = working tree ({now.version})")
        line_table(impls, corpora, args.repeat)
        one_call_table(impls, news_text, [int(s) for s in args.sizes.split(",")], args.repeat)
        diff = {name: sum(base.normalize(x) != normalize(x) for x in lines) for name, lines in corpora.items()}
    print("\nlines whose output differs between before and now: "
          + ", ".join(f"{name} {d:,} of {len(corpora[name]):,}" for name, d in diff.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
