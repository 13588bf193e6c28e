"""Exact and near-duplicate detection across all sources and both languages.

Per document (computed in the document tasks, a batch of documents at a time):

- exact key: xxh3-128 of the normalized text, stored as two uint64 (16 bytes per document);
- near-duplicate keys: a MinHash signature of the document's character 5-grams (lower-cased,
  whitespace runs collapsed to one space: character n-grams need no word segmentation, so they
  work for Khmer, which has no spaces between words, as for English), computed by rensa's
  R-MinHash (``num_perm`` 32-bit slots, fixed seed; Rust), cut into ``bands`` bands of
  ``num_perm / bands`` rows; each band is hashed to one uint64 (8 bytes x bands per document,
  128 bytes with 16 bands). Two documents whose Jaccard similarity is s collide in at least one
  band with probability ``1 - (1 - s**r)**b``: with 128 permutations in 16 bands of 8 rows that
  is 50% at s = 0.67, 95% at s = 0.8 and 99.99% at s = 0.9.

  Why rensa, and which of its sketches: tonsai used to apply datasketch's affine32 permutations
  (h -> a*h + b mod 2**32) in numpy. rensa's R-MinHash is a full-set MinHash (every shingle
  counts; shingle order and repeats do not change the signature) whose slot agreement estimates
  the Jaccard similarity as closely as datasketch's on real pairs (tests/data/test_dedup.py);
  the affine mod 2**32 permutations also gave about twice the chance band collisions that theory
  predicts for unrelated short documents (test_prepare_merge.py). rensa's C-MinHash was slower
  here, and its "rho" sketch samples token positions, so it is not a MinHash of the whole
  shingle set.

  Why tonsai hashes the shingles itself: rensa's batch entry point for pre-hashed tokens
  (``digest_matrix_from_flat_token_hashes``) takes one flat array for a whole batch of
  documents, and numpy hashes every 5-gram of the batch in a few vector passes (splitmix64's
  finalizer after each code point: :func:`shingle_hashes`, checked against the plain
  per-shingle :func:`shingle_hash`). Building one ``bytes`` object per shingle in Python for
  rensa to hash cost more than the MinHash itself; the batch is about twice as fast
  (bench/bench_minhash.py). The keys depend on rensa's ``ALGORITHM_VERSION`` (2 in rensa 0.5):
  a rensa that changes it changes every key, which the golden test in test_dedup.py catches.

Globally (in the merge step, on keys, never on texts): the exact duplicates of a key are all its
documents but the survivor; then documents that share a band key with another are joined into
clusters (the connected components of the colliding pairs, found by minimum-label propagation
over numpy arrays of the pairs only, :func:`pair_non_survivors`) and each cluster keeps one
survivor. The survivor is always the document with the smallest *order* (source position in the
command line or mix file, then position inside the source), so it does not depend on the number of
shards or processes. The merge (:mod:`tonsai.data.prepare`) does this bucket by bucket: the keys go
to files partitioned by a hash prefix (:class:`tonsai.data.ondisk.Partition`; equal keys share a bucket),
:func:`bucket_exact_duplicates` and :func:`bucket_band_pairs` work on one bucket at a time, and
only the colliding pairs meet in memory (the documents are numbered by *slot*, which sorts like
order). :func:`exact_duplicates` and :class:`NearDuplicateClusters` (a union-find, also the
reference the tests check :func:`pair_non_survivors` against) are the same rules on whole arrays.
"""

from __future__ import annotations

import itertools
import numpy as np
import rensa
import xxhash

SHINGLE = 5
SEED = 1  # rensa's permutation seed: changing it changes every band key
# Changes whenever band_keys can change (shingles, shingle hash, sketch, seed, band hashing): keys
# made under two versions must not meet in one merge, so a stage's shard fingerprint records it.
KEYS_VERSION = f"rensa-rminhash-{rensa.RMinHash.ALGORITHM_VERSION}-seed{SEED}-char{SHINGLE}-splitmix"

# A shingle's hash: start from _START, and for each code point c, h = splitmix64's finalizer of
# (h xor c). The finalizer after every character matters: FNV-1a (xor, then one multiply per
# character, one finalizer at the end) gave rensa signatures twice the chance band collisions of
# rensa's own byte hashing on the same random sentences (6 x 400 documents: 337-341 against 145),
# this hash 153.
_START = 0x9E3779B97F4A7C15
_MIX1, _MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_MASK = (1 << 64) - 1


def exact_key(text: str) -> tuple[int, int]:
    """128-bit hash of the normalized text as two unsigned 64-bit ints."""
    d = xxhash.xxh3_128_intdigest(text.encode("utf-8"))
    return d >> 64, d & 0xFFFFFFFFFFFFFFFF


def id_hash(doc_id: str, seed: int = 0) -> int:
    """Stable 63-bit hash of a document id (for the validation split and output order)."""
    return xxhash.xxh3_64_intdigest(doc_id.encode("utf-8"), seed=seed) >> 1


def canonical(text: str) -> str:
    """What the shingles are cut from: the lower-cased text with runs of whitespace (``str.split``)
    collapsed to one space."""
    return " ".join(text.lower().split())


def shingles(text: str, n: int = SHINGLE) -> list[str]:
    """The character ``n``-grams of :func:`canonical` text; a text shorter than ``n`` is its own
    single shingle."""
    t = canonical(text)
    if len(t) <= n:
        return [t]
    return [t[i:i + n] for i in range(len(t) - n + 1)]


def shingle_hash(shingle: str) -> int:
    """The 64-bit hash of one shingle (the reference that :func:`shingle_hashes` computes in numpy)."""
    h = _START
    for c in shingle:
        h = _finalize(h ^ ord(c))
    return h


def _finalize(h: int) -> int:
    h = ((h ^ (h >> 30)) * _MIX1) & _MASK
    h = ((h ^ (h >> 27)) * _MIX2) & _MASK
    return h ^ (h >> 31)


def _finalize_np(h: np.ndarray) -> np.ndarray:
    h ^= h >> np.uint64(30)
    h *= np.uint64(_MIX1)
    h ^= h >> np.uint64(27)
    h *= np.uint64(_MIX2)
    h ^= h >> np.uint64(31)
    return h


def shingle_hashes(texts: list[str], n: int = SHINGLE) -> tuple[np.ndarray, np.ndarray]:
    """(hashes, offsets): the :func:`shingle_hash` of every shingle of every text, concatenated
    (text ``i`` owns ``hashes[offsets[i]:offsets[i + 1]]``), computed for the whole batch at once:
    the texts' code points in one array, each position's n-gram hashed in ``n`` vector steps, then
    the positions whose n-gram crosses into the next text left out."""
    canon = [canonical(t) for t in texts]
    lens = np.fromiter(map(len, canon), dtype=np.int64, count=len(canon))
    counts = np.maximum(lens - n + 1, 1)
    offsets = np.zeros(len(canon) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    cp = np.frombuffer("".join(canon).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    m = len(cp) - n + 1  # positions where an n-gram starts
    if m > 0:
        window = np.full(m, _START, dtype=np.uint64)
        for j in range(n):  # the hash of the n code points starting at each position
            window ^= cp[j:j + m]
            _finalize_np(window)
        starts = np.zeros(len(canon), dtype=np.int64)
        np.cumsum(lens[:-1], out=starts[1:])
        doc = np.repeat(np.arange(len(canon)), counts)
        pos = np.arange(offsets[-1], dtype=np.int64) - offsets[:-1][doc] + starts[doc]
        hashes = window[np.minimum(pos, m - 1)]  # a short text's position may be past the end
    else:
        hashes = np.zeros(offsets[-1], dtype=np.uint64)
    for i in np.flatnonzero(lens < n).tolist():  # a short text is its single shingle
        hashes[offsets[i]] = shingle_hash(canon[i])
    return hashes, offsets


def signatures(texts: list[str], num_perm: int = 128) -> np.ndarray:
    """rensa's R-MinHash of each text's shingle hashes: a (texts, ``num_perm``) uint32 matrix, the
    same in every process and run (fixed seed, no per-process salt). The share of equal slots
    between two rows estimates the Jaccard similarity of the texts' :func:`shingles`."""
    if not texts:
        return np.zeros((0, num_perm), dtype=np.uint32)
    hashes, offsets = shingle_hashes(texts)
    matrix = rensa.RMinHash.digest_matrix_from_flat_token_hashes(hashes, offsets.astype(np.uint64), num_perm, SEED)
    rows = itertools.chain.from_iterable(matrix.to_rows())  # rensa's only way out: lists of ints
    return np.fromiter(rows, dtype=np.uint32, count=len(texts) * num_perm).reshape(len(texts), num_perm)


def signature(text: str, num_perm: int = 128) -> np.ndarray:
    """:func:`signatures` of one text: ``num_perm`` uint32 slots."""
    return signatures([text], num_perm)[0]


def band_key_matrix(texts: list[str], num_perm: int = 128, bands: int = 16) -> np.ndarray:
    """(texts, ``bands``) uint64: each LSH band of a text's :func:`signatures` row hashed to one key
    (the shingle hash's steps over the band's rows), so two texts have equal keys in band i
    exactly when their signatures agree on its rows (up to a 64-bit hash collision)."""
    sig = signatures(texts, num_perm).reshape(len(texts), bands, num_perm // bands).astype(np.uint64)
    key = np.full((len(texts), bands), _START, dtype=np.uint64)
    for j in range(sig.shape[2]):
        key ^= sig[:, :, j]
        _finalize_np(key)
    return key


def band_keys(text: str, num_perm: int = 128, bands: int = 16) -> list[int]:
    """:func:`band_key_matrix` of one text, as Python ints."""
    return band_key_matrix([text], num_perm, bands)[0].tolist()


def exact_duplicates(h1: np.ndarray, h2: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Boolean mask: True for every document whose exact key belongs to a document of smaller order."""
    idx = np.lexsort((order, h2, h1))
    s1, s2 = h1[idx], h2[idx]
    same = np.zeros(len(idx), dtype=bool)
    if len(idx) > 1:
        same[1:] = (s1[1:] == s1[:-1]) & (s2[1:] == s2[:-1])
    dup = np.zeros(len(idx), dtype=bool)
    dup[idx] = same
    return dup


EXACT_RECORD = np.dtype([("h1", "<u8"), ("h2", "<u8"), ("slot", "<i8")])  # 24 bytes
BAND_RECORD = np.dtype([("band", "<u2"), ("key", "<u8"), ("slot", "<i8")])  # 18 bytes


def bucket_exact_duplicates(recs: np.ndarray) -> np.ndarray:
    """Slots of the documents of one exact-key bucket whose key belongs to a smaller slot."""
    if len(recs) < 2:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((recs["slot"], recs["h2"], recs["h1"]))  # no sorted copy of the records
    h1, h2 = recs["h1"][order], recs["h2"][order]
    same = (h1[1:] == h1[:-1]) & (h2[1:] == h2[:-1])
    del h1, h2
    return recs["slot"][order[1:][same]]


SKIP_BAND = np.iinfo(np.uint16).max  # a band record to leave out (its document is an exact duplicate)


def bucket_band_pairs(recs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(head, other): slot pairs to join, from the records of one band-key bucket (several bands):
    every document sharing a (band, key) with others is paired with the first of them in sort order.
    Which member is the head does not change the clusters, so neither the survivors (each cluster's
    smallest slot, :func:`pair_non_survivors`); sorting by key, then stably by band, is 2x faster
    than a three-key lexsort that also ordered the slots. Records whose band is :data:`SKIP_BAND`
    (marked in place, without a filtered copy of the bucket) take no part."""
    if len(recs) < 2:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    order = np.argsort(recs["key"])
    order = order[np.argsort(recs["band"][order], kind="stable")]
    order = order[:np.searchsorted(recs["band"][order], SKIP_BAND)]  # skipped records sort last
    if len(order) < 2:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    band, key = recs["band"][order], recs["key"][order]  # the slots only where needed (memory)
    new = np.empty(len(order), dtype=bool)
    new[0] = True
    np.not_equal(band[1:], band[:-1], out=new[1:])
    new[1:] |= key[1:] != key[:-1]
    del band, key
    starts = np.flatnonzero(new)
    same = np.flatnonzero(~new)
    del new
    head = starts[np.searchsorted(starts, same, side="right") - 1]
    slot = recs["slot"]
    return slot[order[head]], slot[order[same]]


def pair_non_survivors(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sorted numbers of the documents joined by the pairs ``(a[i], b[i])`` that are not the
    smallest of their connected component: the same components as the union-find of
    :class:`NearDuplicateClusters` without ``order``, on arrays (about 40 bytes per pair while it
    runs, no Python objects). Minimum-label propagation with pointer jumping until no label changes."""
    if not len(a):
        return np.zeros(0, dtype=np.int64)
    nodes, inv = np.unique(np.concatenate([a, b]), return_inverse=True)
    u, v = inv[:len(a)], inv[len(a):]
    del inv
    label = np.arange(len(nodes), dtype=np.int64)  # nodes are sorted: the smallest label is the earliest
    while True:
        lu, lv = label[u], label[v]
        m = np.minimum(lu, lv)
        new = label.copy()
        np.minimum.at(new, lu, m)  # each root adopts the smallest label it is joined to
        np.minimum.at(new, lv, m)
        np.minimum.at(new, u, m)
        np.minimum.at(new, v, m)
        while True:  # pointer jumping: follow labels to their roots
            nxt = new[new]
            if np.array_equal(nxt, new):
                break
            new = nxt
        if np.array_equal(new, label):
            break
        label = new
    return nodes[label != np.arange(len(nodes))]


class NearDuplicateClusters:
    """Union-find over the documents that collide in some LSH band; roots are the smallest order
    (with ``order=None``: the documents are numbered so that the smallest number is the earliest)."""

    def __init__(self, order: np.ndarray | None = None):
        self.order = order
        self.parent: dict[int, int] = {}

    def _find(self, i: int) -> int:
        root = i
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while self.parent.get(i, i) != root:  # path compression
            self.parent[i], i = root, self.parent[i]
        return root

    def _union(self, a: int, b: int) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra == rb:
            return
        if (rb < ra) if self.order is None else (self.order[rb] < self.order[ra]):
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.parent.setdefault(ra, ra)

    def add_pairs(self, a: np.ndarray, b: np.ndarray) -> None:
        for x, y in zip(a.tolist(), b.tolist()):
            self._union(x, y)

    def non_survivors(self) -> np.ndarray:
        """Sorted numbers of the documents that are not their cluster's survivor."""
        out = [i for i in list(self.parent) if self._find(i) != i]
        return np.sort(np.array(out, dtype=np.int64))

    def add_band(self, keys: np.ndarray, alive: np.ndarray) -> None:
        """Join the live documents (indices into ``keys``) that share a key in this band."""
        cand = np.flatnonzero(alive)
        if len(cand) < 2:
            return
        k = keys[cand]
        srt = np.lexsort((self.order[cand], k))
        ks = k[srt]
        same = np.flatnonzero(ks[1:] == ks[:-1]) + 1  # positions equal to their predecessor
        if not len(same):
            return
        # first element of each run of equal keys
        starts = np.flatnonzero(np.concatenate(([True], ks[1:] != ks[:-1])))
        head_of = starts[np.searchsorted(starts, same, side="right") - 1]
        for a, b in zip(cand[srt[head_of]].tolist(), cand[srt[same]].tolist()):
            self._union(a, b)

    def duplicates(self, n: int) -> tuple[np.ndarray, dict[int, int]]:
        """(mask of documents that are not their cluster's survivor, {duplicate: survivor})."""
        dup = np.zeros(n, dtype=bool)
        survivor = {}
        for i in list(self.parent):
            r = self._find(i)
            if r != i:
                dup[i] = True
                survivor[i] = r
        return dup, survivor
