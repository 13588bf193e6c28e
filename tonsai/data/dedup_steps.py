"""The merge's deduplication as three steps of parallel datatrove tasks on the merging machine.

1. :class:`PartitionKeys`: task ``r`` reads the keys of the documents files of document tasks
   ``r``, ``r + W``, ...; it records each document's status (present), length and id hash in the
   per-slot files of ``<work>/merge`` (each slot belongs to one file, so tasks never write the same
   bytes) and writes its exact keys and band keys into its own file per key bucket.
2. :class:`ExactBuckets`: task ``r`` reads buckets ``r``, ``r + W``, ... of every part and saves the
   slots whose exact key belongs to a smaller slot (:func:`tonsai.data.dedup.bucket_exact_duplicates`).
3. :class:`BandBuckets`: after the exact duplicates are marked, task ``r`` reads band buckets
   ``r``, ``r + W``, ..., drops exact duplicates, and saves the slot pairs that share a band key
   (:func:`tonsai.data.dedup.bucket_band_pairs`).

The merge then joins the pairs into clusters in one process (memory in proportion to the
near-duplicate pairs). Equal keys always share a bucket, and survivors are the smallest slots, so
the result does not depend on the number of tasks or buckets. Band buckets beyond ``MAX_OPEN``
are partitioned and paired ``MAX_OPEN`` at a time (:class:`PartitionBands` then :class:`BandBuckets`
per range), so open files and temporary disk stay bounded.

Why not datatrove's own MinHash stages (MinhashDedupSignature/Buckets/Cluster/Filter): they shingle
words from a language's word tokenizer (Khmer has no spaces; a segmenter runs at about 16k
characters/s) where tonsai uses character 5-grams, and their union-find keeps whichever document
roots a cluster (the larger set's root) in (task, position) order, where tonsai keeps the earliest
document in input order whatever the number of tasks, and counts every drop per source.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from datatrove.pipeline.base import PipelineStep

from tonsai.data import columns
from tonsai.data.dedup import BAND_RECORD, EXACT_RECORD, SKIP_BAND, bucket_band_pairs, bucket_exact_duplicates
from tonsai.data.ondisk import DiskArray, Partition, trim_heap
from tonsai.data.sharding import slots
from tonsai.data.splitwrite import EXACT_DUP, TRAIN
from tonsai.executors import local_executor


def _row_groups(files: list[str], columns: list[str]):
    for f in files:
        pf = pq.ParquetFile(f)
        for i in range(pf.num_row_groups):
            yield pf.read_row_group(i, columns=columns)


def _np(table, name: str) -> np.ndarray:
    return columns.to_numpy(table.column(name))


def _bucket_parts(folder: Path, b: int) -> np.ndarray:
    """Bucket ``b``'s records from every task's part (the files are deleted once read)."""
    parts = sorted(folder.glob(f"*-{b:05d}.bin"))
    dtype = EXACT_RECORD if folder.name == "exact" else BAND_RECORD
    sizes = [p.stat().st_size // dtype.itemsize for p in parts]
    recs = np.empty(sum(sizes), dtype=dtype)  # read in place: no second copy of the bucket
    at = 0
    for p, n in zip(parts, sizes):
        with open(p, "rb") as f:
            got = f.readinto(recs[at:at + n].view(np.uint8))
        if got != n * dtype.itemsize:
            raise OSError(f"{p}: read {got} of {n * dtype.itemsize} bytes")
        at += n
        p.unlink()
    return recs


class _MergeStep(PipelineStep):
    type = "🫂 - DEDUP"

    def __init__(self, mdir: str, files: list[str], offs: list[int], k_exact: int, k_band: int, bands: int):
        super().__init__()
        self.mdir, self.files, self.offs = mdir, files, offs
        self.k_exact, self.k_band, self.bands = k_exact, k_band, bands

    def array(self, name: str, dtype) -> DiskArray:
        return DiskArray(Path(self.mdir) / name, dtype, self.offs[-1], create=False)

    def slots(self, t) -> np.ndarray:
        return slots(_np(t, "order"), np.asarray(self.offs, dtype=np.int64))


class PartitionKeys(_MergeStep):
    """Per-slot status, length and id hash, and the exact keys by bucket."""

    name = "partition keys"

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        status, length, idh = self.array("status.u8", np.uint8), self.array("chars.i64", np.int64), \
            self.array("idh.i64", np.int64)
        exact = Partition(Path(self.mdir) / "exact", f"p{rank:05d}", EXACT_RECORD, self.k_exact)
        for t in _row_groups(self.files[rank::world_size], ["order", "chars", "h1", "h2", "idh"]):
            slot = self.slots(t)
            status.scatter(slot, TRAIN)
            length.scatter(slot, _np(t, "chars"))
            idh.scatter(slot, _np(t, "idh"))
            rec = np.empty(len(slot), dtype=EXACT_RECORD)
            rec["h1"], rec["h2"], rec["slot"] = _np(t, "h1"), _np(t, "h2"), slot
            exact.add(rec, rec["h1"])
            self.stat_update("documents", value=len(slot))
        exact.close()
        return
        yield


class PartitionBands(_MergeStep):
    """The band keys of band buckets ``lo:hi`` (at most MAX_OPEN open files per task)."""

    name = "partition band keys"

    def __init__(self, *args, lo: int = 0, hi: int = 0):
        super().__init__(*args)
        self.lo, self.hi = lo, hi

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        band_ids = np.arange(self.bands, dtype=np.uint16)
        part = Partition(Path(self.mdir) / "band", f"p{rank:05d}", BAND_RECORD, self.k_band, self.lo, self.hi)
        for t in _row_groups(self.files[rank::world_size], ["order"] + [f"b{k}" for k in range(self.bands)]):
            slot = self.slots(t)
            rec = np.empty(len(slot) * self.bands, dtype=BAND_RECORD)
            rec["band"] = np.repeat(band_ids, len(slot))
            rec["key"] = np.concatenate([_np(t, f"b{k}") for k in range(self.bands)])
            rec["slot"] = np.tile(slot, self.bands)
            part.add(rec, rec["key"])
            del t, rec
            trim_heap()
        part.close()
        return
        yield


class ExactBuckets(_MergeStep):
    name = "exact duplicates"

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        out = Path(self.mdir) / "exact_dups"
        out.mkdir(exist_ok=True)
        for b in range(rank, self.k_exact, world_size):
            dup = bucket_exact_duplicates(_bucket_parts(Path(self.mdir) / "exact", b))
            np.save(out / f"{b:05d}.npy", dup)
            self.stat_update("duplicates", value=len(dup))
            trim_heap()
        return
        yield


class BandBuckets(PartitionBands):
    """Near-duplicate pairs of band buckets ``lo:hi``."""

    name = "near-duplicate pairs"

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        out = Path(self.mdir) / "pairs"
        out.mkdir(exist_ok=True)
        status = self.array("status.u8", np.uint8)
        for b in range(self.lo + rank, self.hi, world_size):
            recs = _bucket_parts(Path(self.mdir) / "band", b)
            recs["band"][status.gather(recs["slot"]) == EXACT_DUP] = SKIP_BAND  # in place: no second copy
            a, c = bucket_band_pairs(recs)
            pairs = np.unique(np.stack([a, c], axis=1), axis=0) if len(a) else np.zeros((0, 2), dtype=np.int64)
            np.save(out / f"{b:05d}.npy", pairs)
            self.stat_update("pairs", value=len(pairs))
            del recs, a, c, pairs
            trim_heap()
        return
        yield


def run_step(step: _MergeStep, tasks: int, workers: int, mdir: Path) -> None:
    """``tasks`` datatrove tasks of ``step``, ``workers`` at a time (in this process when 1)."""
    tasks = max(1, tasks)
    local_executor([step], tasks=tasks, workers=max(1, min(workers, tasks)), skip_completed=False,
                   logging_dir=str(mdir / "logs" / step.name.replace(" ", "_"))).run()


def saved(folder: Path) -> np.ndarray:
    """Every array saved by a step's tasks, concatenated (bucket order)."""
    arrays = [np.load(f) for f in sorted(folder.glob("*.npy"))]
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
