#!/usr/bin/env python
"""Per-document work of the prepare stage (normalize, count_scripts, first_reason), one core, on
every document of ../shared/data, against a previous implementation of the same functions in the
same run, with a check that both give identical outputs on every document.

The documents are those bench/bench_prepare.py feeds the stage (the same ten files, read with
tonsai.data.sources.iter_documents, one document per line of .txt and per record of .jsonl). The
previous implementation is read from git (``--baseline-rev``, default: the commit before the
per-document speed work) into a private package, so both run in one process on the same input.

  uv run python bench/bench_docs.py [--shared-data ../shared/data] [--baseline-rev REV] [--repeat 2]
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

from bench_prepare import EN_FILES, KM_FILES  # the same files as the whole-stage benchmark (bench/ is on sys.path)

REPO = Path(__file__).resolve().parents[1]
BASELINE_REV = "cf7d20f"  # the code before the per-document speed work (issue 14)
# the modules that hold the per-document work (what the baseline package copies)
MODULES = ["tonsai/text/normalize.py", "tonsai/text/syllable.py", "tonsai/text/script.py", "tonsai/text/khmer.py",
           "tonsai/text/segment.py", "tonsai/text/quality.py", "tonsai/data/filters.py"]


def load_documents(shared: Path) -> list[tuple[str, str, str | None]]:
    """(lang, raw text, reader's skip reason) of every document, as the prepare stage reads them."""
    from tonsai.data.sources import ReadStats, Source, iter_documents

    docs = []
    for lang, files in (("km", KM_FILES), ("en", EN_FILES)):
        for rel in files:
            for d in iter_documents(Source(str(shared / rel), lang), ReadStats()):
                docs.append((lang, d.text, d.skip_reason))
    return docs


def load_baseline(rev: str, root: Path) -> types.SimpleNamespace:
    """Import the per-document functions as they were at ``rev`` (as package ``_tonsai_base``)."""
    pkg = root / "_tonsai_base"
    for sub in ("", "text", "data"):
        (pkg / sub).mkdir(parents=True, exist_ok=True)
        (pkg / sub / "__init__.py").write_text("", encoding="utf-8")
    for path in MODULES:
        shown = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:{path}"], capture_output=True, text=True)
        if shown.returncode:  # a module that came later (tonsai/text/khmer.py)
            continue
        src = shown.stdout
        (pkg / path.removeprefix("tonsai/")).write_text(src.replace("tonsai.", "_tonsai_base."), encoding="utf-8")
    sys.path.insert(0, str(root))
    norm = importlib.import_module("_tonsai_base.text.normalize")
    script = importlib.import_module("_tonsai_base.text.script")
    filters = importlib.import_module("_tonsai_base.data.filters")
    modules = [importlib.import_module(f"_tonsai_base.{m}") for m in ("text.syllable", "text.quality")]
    return types.SimpleNamespace(normalize=norm.normalize, count_scripts=script.count_scripts,
                                 first_reason=filters.first_reason, version=norm.NORMALIZER_VERSION,
                                 reset=lambda: clear_caches(modules))


def current() -> types.SimpleNamespace:
    from tonsai.data.filters import first_reason
    from tonsai.text import NORMALIZER_VERSION, count_scripts, normalize, quality, syllable

    return types.SimpleNamespace(normalize=normalize, count_scripts=count_scripts, first_reason=first_reason,
                                 version=NORMALIZER_VERSION, reset=lambda: clear_caches([syllable, quality]))


def clear_caches(modules) -> None:
    """Empty the module-level caches (per syllable, cluster, piece of text), so that every timed pass
    starts as a fresh worker process does: the stage sees each document once."""
    for m in modules:
        for name, value in vars(m).items():
            if name.startswith("_") and isinstance(value, dict) and not name.startswith("__"):
                value.clear()


def run(impl, docs, repeat: int) -> tuple[dict[str, float], list[str], list]:
    """Best-of-``repeat`` seconds per step (normalize, count_scripts, first_reason, and the three
    in one loop as the stage runs them), with the normalized texts and reasons."""
    from tonsai.data.filters import FilterThresholds
    from tonsai.text import RoutingThresholds

    routing, thresholds = RoutingThresholds(), FilterThresholds()
    clock = time.process_time  # CPU seconds of this process: steadier than wall time on a shared machine
    best: dict[str, float] = {}
    for _ in range(repeat):
        impl.reset()
        t = clock()
        for lang, raw, skip in docs:
            text = impl.normalize(raw).strip()
            skip or impl.first_reason(text, impl.count_scripts(text), lang, routing, thresholds)
        t_all = clock() - t
        impl.reset()
        t = clock()
        texts = [impl.normalize(raw).strip() for _, raw, _ in docs]
        t_norm = clock() - t
        t = clock()
        counts = [impl.count_scripts(text) for text in texts]
        t_count = clock() - t
        impl.reset()
        t = clock()
        reasons = [skip or impl.first_reason(text, c, lang, routing, thresholds)
                   for (lang, _, skip), text, c in zip(docs, texts, counts)]
        t_filt = clock() - t
        for k, v in (("normalize", t_norm), ("count_scripts", t_count), ("first_reason", t_filt),
                     ("together", t_all)):
            best[k] = min(best.get(k, float("inf")), v)
    return best, texts, reasons


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared-data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--baseline-rev", default=BASELINE_REV, help="git revision of the previous implementation")
    ap.add_argument("--repeat", type=int, default=2, help="timed passes per implementation (best is shown)")
    args = ap.parse_args()
    if not args.shared_data.is_dir():
        print(f"no shared data at {args.shared_data} (pass --shared-data)", file=sys.stderr)
        return 1
    docs = load_documents(args.shared_data)
    mb = sum(len(raw.encode("utf-8")) for _, raw, _ in docs) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        base = load_baseline(args.baseline_rev, Path(tmp))
        cur = current()
        for impl in (base, cur):  # import and compile what the first calls compile (regex caches)
            run(impl, docs[:: 50], 1)
        t_base, texts_base, reasons_base = run(base, docs, args.repeat)
        t_cur, texts_cur, reasons_cur = run(cur, docs, args.repeat)
    diff_text = sum(a != b for a, b in zip(texts_base, texts_cur))
    diff_reason = sum(a != b for a, b in zip(reasons_base, reasons_cur))
    print(f"{len(docs):,} documents, {mb:.1f} MB of UTF-8 input, one core, CPU time, best of {args.repeat}")
    print(f"baseline {args.baseline_rev} ({base.version}) against the working tree ({cur.version})")
    print(f"{'step':14} {'baseline MB/s':>14} {'docs/s':>9} {'now MB/s':>10} {'docs/s':>9} {'speed-up':>9}")
    for step in ("normalize", "count_scripts", "first_reason", "together"):
        b, c = t_base[step], t_cur[step]
        print(f"{step:14} {mb / b:>14.2f} {len(docs) / b:>9,.0f} {mb / c:>10.2f} {len(docs) / c:>9,.0f} "
              f"{b / c:>8.2f}x")
    print(f"differences: normalized text {diff_text}, reason {diff_reason} (of {len(docs):,} documents)")
    return 1 if diff_text or diff_reason else 0


if __name__ == "__main__":
    sys.exit(main())
