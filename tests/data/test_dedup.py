"""Near-duplicate keys (tonsai.data.dedup: rensa's R-MinHash over character 5-grams, LSH bands) on
real Khmer news and English WikiText-2 from ../shared/data. The merge rules on keys (survivors,
buckets, label propagation) are tested in test_prepare_merge.py."""

from __future__ import annotations

import json
import subprocess
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from tests.data.corpus import en_docs
from tonsai.data.dedup import (KEYS_VERSION, NearDuplicateClusters, band_key_matrix, band_keys, exact_duplicates,
                               exact_key, shingle_hash, shingle_hashes, shingles, signature)

REPO = Path(__file__).resolve().parents[2]
KM_NEWS = "khmer_news_kh_data_1000/khm_news_orig.txt"
EN_WIKI = "english_wikitext2_raw/wikitext2.valid.txt"


def long_lines(path: Path, n: int, min_chars: int = 300) -> list[str]:
    """The first ``n`` lines of at least ``min_chars`` characters (one news paragraph or wiki paragraph each)."""
    out = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if len(line.strip()) >= min_chars:
                out.append(line.strip())
                if len(out) == n:
                    break
    return out


@pytest.fixture(scope="module")
def real_docs(shared_data) -> dict[str, list[str]]:
    return {"km": long_lines(shared_data / KM_NEWS, 150), "en": long_lines(shared_data / EN_WIKI, 150)}


def jaccard(a: str, b: str) -> float:
    x, y = set(shingles(a)), set(shingles(b))
    return len(x & y) / len(x | y)


def edited(text: str, rng: np.random.Generator, every: int) -> str:
    """One character in ``every`` replaced by another character of the same text (typos, OCR or
    template noise), and the first 12 characters repeated at the end (a byline, a share button)."""
    chars = list(text)
    for i in rng.choice(len(chars), size=len(chars) // every, replace=False):
        chars[i] = chars[int(rng.integers(len(chars)))]
    return "".join(chars) + " " + text[:12]


def test_near_duplicates_of_real_text_collide(real_docs):
    """Edited copies of real paragraphs (Jaccard >= 0.9 of their 5-gram sets) share a band key with
    the original: with 16 bands of 8 rows a pair at s = 0.9 is missed with probability 1.2e-4, so a
    miss among these 80 pairs means the sketch no longer estimates the Jaccard similarity."""
    rng = np.random.default_rng(0)
    for lang, docs in real_docs.items():
        for doc in docs[:40]:
            copy = edited(doc, rng, every=200)
            s = jaccard(doc, copy)
            assert 0.9 <= s < 1.0, (lang, s)
            shared = set(enumerate(band_keys(doc))) & set(enumerate(band_keys(copy)))
            assert shared, f"{lang} near-duplicate with Jaccard {s:.2f} shares no band: {doc[:60]!r}"
    # the normalization the shingles see: case and whitespace runs do not change the keys
    doc = real_docs["en"][0]
    assert band_keys(doc.upper().replace(" ", " \n\t ")) == band_keys(doc)


def test_unrelated_real_documents_share_no_band(real_docs):
    """Among all 44,850 pairs of 300 real paragraphs (150 Khmer news, 150 English wiki), every pair
    that shares a band key is a real near-duplicate (the news file repeats some paragraphs with small
    changes); no pair below Jaccard 0.4 collides (expected: 16 * 0.4**8 = 1e-2 per pair at 0.4, far
    less for the typical unrelated pair at 0.02-0.1)."""
    docs = real_docs["km"] + real_docs["en"]
    keys = [set(enumerate(band_keys(d))) for d in docs]
    colliding = [(i, j) for i, j in combinations(range(len(docs)), 2) if keys[i] & keys[j]]
    sims = [jaccard(docs[i], docs[j]) for i, j in colliding]
    assert all(s >= 0.4 for s in sims), sorted(sims)[:5]
    assert len(colliding) < 50  # the news paragraphs are not all one cluster
    assert not any((i < 150) != (j < 150) for i, j in colliding)  # never across languages


def test_signature_estimates_jaccard_of_real_pairs(real_docs):
    """The share of equal R-MinHash slots is within 0.12 of the exact Jaccard similarity of the 5-gram
    sets (about 4 standard deviations with 256 slots: sqrt(s(1-s)/256) <= 0.031), for real pairs
    spanning 0.1-0.95: a paragraph against itself with its tail replaced by another paragraph."""
    errors = []
    for lang, docs in real_docs.items():
        for k, keep in enumerate((0.2, 0.4, 0.6, 0.8, 0.9, 0.97)):
            a, other = docs[k], docs[100 + k]
            b = a[: int(len(a) * keep)] + other[int(len(other) * keep):]
            exact = jaccard(a, b)
            est = float((signature(a, 256) == signature(b, 256)).mean())
            assert abs(est - exact) < 0.12, (lang, keep, est, exact)
            errors.append(est - exact)
    assert np.mean(np.abs(errors)) < 0.04, errors
    # rensa gets the hashes of the same shingles as the exact Jaccard above, whatever the batch
    texts = real_docs["km"][:20] + ["", "ab", "ក ខ", "a😀bcdef", "abcde", "  A  b "] + real_docs["en"][:20]
    hashes, offsets = shingle_hashes(texts)
    assert offsets[0] == 0 and offsets[-1] == len(hashes)
    for i, text in enumerate(texts):
        assert hashes[offsets[i]:offsets[i + 1]].tolist() == [shingle_hash(s) for s in shingles(text)], repr(text)
    assert (band_key_matrix(texts) == np.array([band_keys(t) for t in texts], dtype=np.uint64)).all()
    # a full-set MinHash: repeating or reordering the same shingles does not change the signature
    doc = real_docs["km"][0]
    assert (signature(doc + " " + doc) == signature(doc)).mean() > 0.9  # only the few 5-grams across the join are new
    assert signature(doc).shape == (128,) and signature(doc).dtype == np.uint32


def test_band_keys_are_the_same_in_a_fresh_process():
    """Shard workers on other processes and machines must compute the same keys: the signature has a
    fixed seed and rensa hashes the shingles without a per-process salt (unlike Python's str hash).
    The golden keys also catch a rensa release that changes its algorithm (keys of an earlier run's
    shards would no longer match)."""
    texts = ["ប្រទេសកម្ពុជាមានទន្លេមេគង្គ និងប្រាសាទអង្គរវត្ត។", "The river runs past the temple.", "abc"]
    code = ("import json, sys; from tonsai.data.dedup import band_keys; "
            "print(json.dumps([band_keys(t, 128, 16) for t in json.loads(sys.argv[1])]))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(texts)], capture_output=True, text=True,
                         check=True, cwd=REPO, env={"PYTHONHASHSEED": "random", "PATH": ""}).stdout
    here = [band_keys(t) for t in texts]
    assert json.loads(out) == here
    assert [k[:2] for k in here] == GOLDEN, "band keys changed: bump KEYS_VERSION (old shards must be redone)"
    assert KEYS_VERSION == "rensa-rminhash-2-seed1-char5-splitmix"
    assert len(set(here[0])) == 16 and all(len(k) == 16 for k in here)


GOLDEN = [  # band_keys(text)[:2] of the texts above with rensa 0.5 (ALGORITHM_VERSION 2), seed 1
    [6669903869938335319, 6730614476348978537],
    [5655563508768869709, 2651293890532831982],
    [10876135058662096253, 3101226757080875218],
]


def test_exact_and_near_duplicates_keep_the_earliest():
    h = np.array([exact_key(t) for t in ["a", "b", "a", "c", "b"]], dtype=np.uint64)
    order = np.array([5, 1, 0, 3, 4])
    dup = exact_duplicates(h[:, 0], h[:, 1], order)
    assert dup.tolist() == [True, False, False, False, True]  # "a" survives at order 0, "b" at order 1
    base = en_docs(1)[0] * 3
    texts = [base.replace("river", "rivers", 1), base, en_docs(1, seed=9)[0]]
    bands = np.array([band_keys(t) for t in texts], dtype=np.uint64)
    clusters = NearDuplicateClusters(np.array([2, 1, 0]))
    for k in range(bands.shape[1]):
        clusters.add_band(bands[:, k], np.ones(3, dtype=bool))
    near, survivor = clusters.duplicates(3)
    assert near.tolist() == [True, False, False] and survivor == {0: 1}


def test_band_records_marked_skip_take_no_part_in_pairs():
    """BandBuckets marks the band records of exact duplicates in place (SKIP_BAND) instead of
    copying the bucket without them: those records pair with nothing, the others as before."""
    from tonsai.data.dedup import BAND_RECORD, SKIP_BAND, bucket_band_pairs, pair_non_survivors

    recs = np.zeros(6, dtype=BAND_RECORD)
    recs["band"] = [0, 0, 0, 1, 1, 1]
    recs["key"] = [7, 7, 7, 9, 9, 5]
    recs["slot"] = [10, 11, 12, 10, 12, 13]
    assert pair_non_survivors(*bucket_band_pairs(recs)).tolist() == [11, 12]
    recs["band"][recs["slot"] == 11] = SKIP_BAND  # slot 11 is an exact duplicate
    a, c = bucket_band_pairs(recs)
    assert 11 not in a.tolist() + c.tolist() and pair_non_survivors(a, c).tolist() == [12]
    recs["band"][:] = SKIP_BAND
    assert [len(x) for x in bucket_band_pairs(recs)] == [0, 0]
