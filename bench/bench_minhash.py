#!/usr/bin/env python
"""Throughput of the near-duplicate keys (tonsai.data.dedup.band_keys: rensa's R-MinHash over
character 5-grams, 128 permutations in 16 bands) on one core, against two baselines on the same
lines in the same run: datasketch's MinHash over the same shingles, and tonsai's previous numpy
MinHash (datasketch's affine32 permutations applied in blocks, copied below as it was before
rensa replaced it). All three compute 16 band keys per line the same way (xxh3-64 of each band).

Input: the first 3,000 lines of the Khmer news (../shared/data/khmer_news_kh_data_1000) and of
WikiText-2 (validation). Figures are characters/s of input per CPU second, the best of --repeat
interleaved passes.

  uv run python bench/bench_minhash.py [--shared-data ../shared/data] [--lines 3000] [--repeat 3]

datasketch is a dev dependency (``uv sync`` installs it), used only here.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import numpy as np
import regex
import xxhash

from tonsai.data.dedup import band_keys, shingles

# --- the previous numpy implementation (tonsai.data.dedup before rensa), kept as the baseline ---
_SPACE = regex.compile(r"\s+")
_P = np.uint64(0x100000001B3)
_MIX1, _MIX2 = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53)
CHUNK = 4096


@functools.lru_cache(maxsize=4)
def _permutations(num_perm: int) -> tuple[np.ndarray, np.ndarray]:
    from datasketch import MinHash

    a, b = MinHash(num_perm=num_perm, seed=1, scheme="affine32").permutations
    return a.astype(np.uint32), b.astype(np.uint32)


def numpy_shingle_hashes(text: str, n: int = 5) -> np.ndarray:
    t = _SPACE.sub(" ", text.lower()).strip()
    cp = np.frombuffer(t.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    if len(cp) < n:
        cp = np.concatenate([cp, np.zeros(n - len(cp), dtype=np.uint64)])
    m = len(cp) - n + 1
    h = np.zeros(m, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            h = h * _P + cp[j:j + m]
        h ^= h >> np.uint64(33)
        h *= _MIX1
        h ^= h >> np.uint64(33)
        h *= _MIX2
        h ^= h >> np.uint64(33)
    return (h & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def numpy_signature(hashes: np.ndarray, num_perm: int = 128) -> np.ndarray:
    a, b = _permutations(num_perm)
    sig = np.full(num_perm, 0xFFFFFFFF, dtype=np.uint32)
    with np.errstate(over="ignore"):
        for i in range(0, len(hashes), CHUNK):
            block = hashes[i:i + CHUNK, None] * a[None, :] + b[None, :]
            np.minimum(sig, block.min(axis=0), out=sig)
    return sig


def bands_of(sig: np.ndarray, bands: int = 16) -> list[int]:
    r = len(sig) // bands
    return [xxhash.xxh3_64_intdigest(sig[i * r:(i + 1) * r].tobytes()) for i in range(bands)]


def numpy_band_keys(text: str) -> list[int]:
    return bands_of(numpy_signature(numpy_shingle_hashes(text)))


def datasketch_band_keys(text: str) -> list[int]:
    from datasketch import MinHash

    m = MinHash(num_perm=128, seed=1)
    m.update_batch([s.encode("utf-8") for s in shingles(text)])
    return bands_of(m.digest().astype(np.uint32))


def rates(impls: dict, lines: list[str], repeat: int) -> dict[str, float]:
    """Characters/s of each implementation, the best of ``repeat`` interleaved passes, timed in CPU
    seconds of this process (``time.process_time``: the machine is shared, and all three run on one
    thread, so time spent waiting for a core is not counted against any of them)."""
    chars = sum(map(len, lines))
    best = dict.fromkeys(impls, float("inf"))
    for _ in range(repeat):
        for name, fn in impls.items():
            t = time.process_time()
            for line in lines:
                fn(line)
            best[name] = min(best[name], time.process_time() - t)
    return {name: chars / s for name, s in best.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared-data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--lines", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    corpora = {"Khmer news": "khmer_news_kh_data_1000/khm_news_orig.txt",
               "English WikiText-2": "english_wikitext2_raw/wikitext2.valid.txt"}
    impls = {"rensa (tonsai)": band_keys, "numpy (previous)": numpy_band_keys, "datasketch": datasketch_band_keys}
    print(f"{'corpus':20} {'lines':>6} {'chars':>9} " + " ".join(f"{k:>17}" for k in impls) + f" {'vs numpy':>9}")
    for name, rel in corpora.items():
        path = args.shared_data / rel
        if not path.is_file():
            print(f"skip {name}: {path} not found (pass --shared-data)", file=sys.stderr)
            continue
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()][: args.lines]
        for fn in impls.values():  # warm up: permutations, rensa's shared parameters, imports
            fn(lines[0])
        r = rates(impls, lines, args.repeat)
        print(f"{name:20} {len(lines):>6} {sum(map(len, lines)):>9,} "
              + " ".join(f"{v / 1e6:>13.2f} M/s" for v in r.values())
              + f" {r['rensa (tonsai)'] / r['numpy (previous)']:>8.1f}x")
    print("characters/s of band_keys (16 band keys per line, 128 permutations, character 5-grams), one core, CPU time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
