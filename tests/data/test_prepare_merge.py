"""The bucketed merge (dedup, validation split, mixing plan, split writing on disk partitions) gives
exactly the output of the in-memory merge it replaced: same kept documents, same survivors, same
validation split, same mixture and same order. The expected digests were recorded with the in-memory
merge (commit 319cc17) on this generated corpus."""

import hashlib
import json

import numpy as np
import pytest

from tonsai.data.dedup import NearDuplicateClusters, exact_duplicates, pair_non_survivors
from tonsai.data.prepare import PrepareConfig, run_prepare
from tonsai.data.prepared import load_prepared

WORDS = ["river", "temple", "farmer", "rice", "school", "student", "city", "province", "rain", "season",
         "capital", "kingdom", "market", "village", "water", "forest", "mountain", "road", "bridge", "boat"]
KM = ["ប្រទេស", "កម្ពុជា", "ទន្លេ", "មេគង្គ", "ប្រាសាទ", "អង្គរវត្ត", "កសិករ", "ស្រូវ", "សិស្ស", "សាលារៀន",
      "ភ្នំពេញ", "ខេត្ត", "សៀមរាប", "ភ្លៀង", "រដូវ", "វស្សា", "ថ្ងៃ", "ច័ន្ទ", "ភាសា", "ខ្មែរ"]


def _docs(words, n, seed, sep):
    rng = np.random.default_rng(seed)
    return [sep.join(rng.choice(words, size=int(rng.integers(12, 40)))) + ("។" if sep == "" else ".")
            for _ in range(n)]


def _corpus(tmp_path):
    """Three sources with exact duplicates (inside and across sources), near duplicates (one word
    changed, in chains) and distinct documents, in an order where later copies come first in
    other shards."""
    rng = np.random.default_rng(42)
    en = _docs(WORDS, 300, 1, " ")
    km = _docs(KM, 200, 2, "")
    en_a = list(en[:200])
    en_b = list(en[200:])
    for i in range(0, 60, 3):  # near duplicates: one word replaced, a chain of them
        words = en_a[i].split(" ")
        words[len(words) // 2] = "harbour"
        en_b.append(" ".join(words))
        words[1] = "lantern"
        en_a.append(" ".join(words))
    en_b += [en_a[i] for i in rng.choice(200, 25, replace=False)]  # exact copies in a later source
    en_a += [en_a[i] for i in rng.choice(100, 10, replace=False)]  # and inside the source
    km += [km[i] for i in rng.choice(200, 15, replace=False)]
    km += [km[i][:-1] + "ខ្មែរ។" for i in range(0, 40, 4)]
    rng.shuffle(en_b)
    paths = {}
    for name, lines in (("en_a.txt", en_a), ("en_b.txt", en_b), ("km.txt", km)):
        p = tmp_path / name
        p.write_text("\n".join(lines) + "\n", encoding="utf-8")
        paths[name] = str(p)
    return paths


def _digest(out):
    dd, m = load_prepared(out)
    got = {split: hashlib.sha256(json.dumps([list(dd[split]["id"]), list(dd[split]["text"])]).encode()).hexdigest()[:16]
           for split in ("train", "validation")}
    got["rows"] = {split: len(dd[split]) for split in ("train", "validation")}
    got["counts"] = m["counts"]
    return got


def _run(tmp_path, name, **kw):
    p = _corpus(tmp_path)
    cfg = PrepareConfig(output_dir=str(tmp_path / name), english=[p["en_a.txt"], p["en_b.txt"]],
                        khmer=[p["km.txt"]], khmer_weight=0.3, english_weight=0.7, max_epochs=2.5,
                        min_validation_docs=3, validation_fraction=0.1, seed=7, **kw)
    run_prepare(cfg)
    return _digest(tmp_path / name)


# Near-duplicate counts from rensa's R-MinHash (16 bands of 8 rows). All 40 planted English near
# duplicates are dropped; the other 14 English drops are pairs of the random 20-word sentences at
# Jaccard 0.24-0.36 that share a band by chance (21.5 such collisions expected over their 44,850
# pairs). rensa hashing the shingles itself (before tonsai hashed them in numpy) dropped 39 planted
# and 17 chance pairs; the numpy affine-mod-2**32 MinHash before rensa dropped all 40 planted and 36
# chance pairs: about twice the chance collisions theory expects.
EXPECTED = {
    "counts": {
        "en:en_a.txt": {
            "dropped:duplicate": 10,
            "dropped:near_duplicate": 23,
            "kept": 197,
            "passed_filters": 230,
            "read": 230,
            "train_pool": 177,
            "train_selected": 444,
            "validation": 20
        },
        "en:en_b.txt": {
            "dropped:duplicate": 25,
            "dropped:near_duplicate": 31,
            "kept": 89,
            "passed_filters": 145,
            "read": 145,
            "train_pool": 80,
            "train_selected": 199,
            "validation": 9
        },
        "km:km.txt": {
            "dropped:duplicate": 15,
            "dropped:near_duplicate": 10,
            "kept": 200,
            "passed_filters": 225,
            "read": 225,
            "train_pool": 180,
            "train_selected": 336,
            "validation": 20
        }
    },
    "rows": {
        "train": 979,
        "validation": 49
    },
    "train": "4813f02fa468e435",
    "validation": "db96137f508d29b6"
}


@pytest.mark.parametrize("kw", [dict(num_shards=1), dict(num_shards=3, merge_buckets=5),
                                dict(num_shards=2, merge_buckets=1), dict(merge_buckets=7, max_open=3)])
def test_merge_matches_the_in_memory_merge(tmp_path, monkeypatch, kw):
    if "max_open" in kw:  # near-dup buckets in three passes over the shard files
        monkeypatch.setattr("tonsai.data.prepare.MAX_OPEN", kw.pop("max_open"))
    got = _run(tmp_path, "out", **kw)
    assert got == EXPECTED
    assert not (tmp_path / "out.work").exists()  # the merge's bucket files go with the work folder


def test_bucketed_dedup_equals_whole_array_dedup(tmp_path):
    """Random keys with many collisions: exact and near duplicates found bucket by bucket on disk are
    those of the whole-array functions, with the same survivors."""
    from tonsai.data.dedup import BAND_RECORD, EXACT_RECORD, bucket_band_pairs, bucket_exact_duplicates
    from tonsai.data.ondisk import Partition

    rng = np.random.default_rng(0)
    n, bands = 5000, 4
    order = rng.permutation(n).astype(np.int64) * 3 + 7  # survivors: smallest order, not smallest index
    h1 = rng.integers(0, 400, n).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    h2 = (h1 >> np.uint64(3)) ^ rng.integers(0, 2, n).astype(np.uint64)
    keys = rng.integers(0, 3000, (bands, n)).astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
    exact = exact_duplicates(h1, h2, order)
    clusters = NearDuplicateClusters(order)
    for k in range(bands):
        clusters.add_band(keys[k], ~exact)
    near, _ = clusters.duplicates(n)
    near &= ~exact
    assert exact.sum() > 100 and near.sum() > 100
    # slot = rank of order (slots sort like order)
    slot = np.argsort(np.argsort(order))
    for k in (1, 7):
        part = Partition(tmp_path / f"e{k}", "exact", EXACT_RECORD, k)
        for chunk in np.array_split(np.arange(n), 9):
            rec = np.empty(len(chunk), EXACT_RECORD)
            rec["h1"], rec["h2"], rec["slot"] = h1[chunk], h2[chunk], slot[chunk]
            part.add(rec, rec["h1"])
        part.close()
        dup_slots = np.concatenate([bucket_exact_duplicates(r) for r in part.buckets()])
        assert sorted(dup_slots.tolist()) == sorted(slot[exact].tolist())
        part = Partition(tmp_path / f"b{k}", "band", BAND_RECORD, k)
        alive = np.flatnonzero(~exact)
        rec = np.empty(len(alive) * bands, BAND_RECORD)
        rec["band"] = np.repeat(np.arange(bands), len(alive))
        rec["key"] = keys[:, alive].ravel()
        rec["slot"] = np.tile(slot[alive], bands)
        part.add(rec, rec["key"])
        part.close()
        uf = NearDuplicateClusters()
        pairs = [bucket_band_pairs(r) for r in part.buckets()]
        for a, b in pairs:
            uf.add_pairs(a, b)
        assert uf.non_survivors().tolist() == sorted(slot[near].tolist())
        a, b = (np.concatenate(x) for x in zip(*pairs))
        assert pair_non_survivors(a, b).tolist() == sorted(slot[near].tolist())


def test_pair_components_match_union_find():
    rng = np.random.default_rng(1)
    for _ in range(200):
        n, m = int(rng.integers(2, 300)), int(rng.integers(1, 500))
        a, b = rng.integers(0, n, m) * 7 + 3, rng.integers(0, n, m) * 7 + 3
        uf = NearDuplicateClusters()
        uf.add_pairs(a, b)
        assert pair_non_survivors(a, b).tolist() == uf.non_survivors().tolist()
    chain = np.arange(100_000)  # a long chain joined from its far end: all but 0 go
    assert pair_non_survivors(chain[::-1][:-1].copy(), chain[::-1][1:].copy()).tolist() == chain[1:].tolist()
