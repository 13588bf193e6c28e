"""The merge's last phase, writing the shuffled splits, as two steps of parallel datatrove tasks.

1. :class:`SpreadSplits`: task ``r`` reads the documents files of the document tasks ``r``,
   ``r + W``, ... and adds each document to the validation split or, once per planned copy, to the
   training split (by its slot's status and copies, files in ``<work>/merge``), into its own part
   of every shuffle bucket; with ``--write-rejected`` it also writes the duplicates it meets.
2. :class:`SortBuckets`: task ``r`` sorts buckets ``r``, ``r + W``, ... of both splits and writes
   them as the split's data files.

Each bucket's order is a sort by the hash of (seed, id, copy), so the dataset is the same for any
number of tasks. These tasks run in processes on the machine that merges (``--workers`` of them).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datatrove.pipeline.base import PipelineStep

from tonsai.data import columns
from tonsai.data.sharding import slots
from tonsai.data.ondisk import DiskArray, trim_heap
from tonsai.data.writer import SCHEMA, ShuffledSplitWriter, finish_split, write_bucket
from tonsai.executors import local_executor

# status of a document slot in the merge (1 byte per slot, on disk)
ABSENT, TRAIN, EXACT_DUP, NEAR_DUP, VALIDATION = 0, 1, 2, 3, 4
TRIM_EVERY = 32  # batches of documents written between two trim_heap() calls
PARALLEL_MIN_BYTES = 64_000_000  # documents files (zstd Parquet) smaller than this are written in one process


class SpreadSplits(PipelineStep):
    name = "spread splits"
    type = "💽 - WRITER"

    def __init__(self, files: list[str], offs: list[int], names: list[str], langs: list[str], mdir: str, tmp: str,
                 seed: int, buckets: dict[str, int], rejected: bool):
        super().__init__()
        self.files, self.offs, self.names, self.langs = files, offs, names, langs
        self.mdir, self.tmp, self.seed, self.buckets, self.rejected = mdir, tmp, seed, buckets, rejected

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        tmp, mdir, n = Path(self.tmp), Path(self.mdir), self.offs[-1]
        status = DiskArray(mdir / "status.u8", np.uint8, n, create=False)
        copies = DiskArray(mdir / "copies.i32", np.int32, n, create=False)
        offs = np.asarray(self.offs, dtype=np.int64)
        part = f"{rank:05d}"
        names, langs = columns.array(self.names, pa.string()), columns.array(self.langs, pa.string())
        train = ShuffledSplitWriter(tmp / "dataset" / "train", tmp / "tmp-train", self.seed, self.buckets["train"], part)
        val = ShuffledSplitWriter(tmp / "dataset" / "validation", tmp / "tmp-validation", self.seed,
                                  self.buckets["validation"], part)
        rejected = gzip.open(tmp / "rejected" / f"dedup-{part}.jsonl.gz", "wt", encoding="utf-8") if self.rejected else None
        n_batches = 0
        read = ["text", "id", "src", "order"] + (["location"] if self.rejected else [])
        for f in self.files[rank::world_size]:
            pf = pq.ParquetFile(f)
            # one row group at a time (iter_batches may buffer ahead across row groups)
            for batch in (b for i in range(pf.num_row_groups)
                          for b in pf.read_row_group(i, columns=read).to_batches(2048)):
                slot = slots(columns.to_numpy(batch.column("order")), offs)
                st, cp = status.gather(slot), copies.gather(slot).astype(np.int64)
                table = pa.Table.from_arrays([batch.column("text"), langs.take(batch.column("src")),
                                              names.take(batch.column("src")), batch.column("id")], schema=SCHEMA)
                val.add_table(table, rows=np.flatnonzero(st == VALIDATION))
                rows = np.repeat(np.arange(len(cp)), cp)  # copy c of a document: its c-th repeat
                train.add_table(table, (np.arange(len(rows)) - np.repeat(np.cumsum(cp) - cp, cp)).tolist(), rows=rows)
                dup = np.flatnonzero((st == EXACT_DUP) | (st == NEAR_DUP))
                if rejected is not None and len(dup):
                    picked = columns.array(dup, pa.int64())
                    where = batch.column("location").take(picked).to_pylist()
                    for i, loc, row in zip(dup.tolist(), where, table.take(picked).to_pylist()):
                        rejected.write(json.dumps({"id": row["id"], "source": row["source"], "location": loc, "reason":
                                                   "duplicate" if st[i] == EXACT_DUP else "near_duplicate",
                                                   "text": row["text"]}, ensure_ascii=False) + "\n")
                del batch, table
                n_batches += 1
                if n_batches % TRIM_EVERY == 0:
                    trim_heap()
        if rejected is not None:
            rejected.close()
        rows = {"train": train.close_part(), "validation": val.close_part()}
        (tmp / "tmp-rows").mkdir(exist_ok=True)
        (tmp / "tmp-rows" / f"{part}.json").write_text(json.dumps(rows), encoding="utf-8")
        return
        yield


class SortBuckets(PipelineStep):
    name = "sort buckets"
    type = "💽 - WRITER"

    def __init__(self, tmp: str, buckets: dict[str, int]):
        super().__init__()
        self.tmp, self.buckets = tmp, buckets

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        tmp = Path(self.tmp)
        for split, k in self.buckets.items():
            for b in range(rank, k, world_size):
                self.stat_update(f"rows_{split}", value=write_bucket(tmp / f"tmp-{split}", tmp / "dataset" / split, b, k))
        return
        yield


def merge_workers(files: list[Path], workers: int) -> int:
    """Processes for the merge's steps: one below PARALLEL_MIN_BYTES of documents files, where
    starting processes costs more than the work. Measured on the shared data (18 MB of text in 6 MB
    of files), 2 workers: with spawned processes writing took 3.9 s against 0.95 s and near-dedup
    9.1 s against 0.56 s; with the fork server (tonsai.executors.local_executor) the whole merge
    still takes 1.8-2.3 s in two processes against 1.0-1.2 s in one. On the 10x corpus (over 64 MB
    of files) two processes win: 5.2 s against 6.5 s."""
    big = sum(Path(f).stat().st_size for f in files) >= PARALLEL_MIN_BYTES
    return min(workers, os.cpu_count() or 1) if big else 1


def write_splits(files: list[Path], offs: np.ndarray, names: list[str], langs: list[str], mdir: Path, tmp: Path,
                 seed: int, buckets: dict[str, int], rejected: bool, workers: int) -> dict[str, int]:
    """Write the shuffled train and validation splits into ``tmp/dataset``; returns rows per split."""
    tmp, mdir = tmp.resolve(), mdir.resolve()
    spread = SpreadSplits([str(f) for f in files], [int(x) for x in offs], names, langs, str(mdir), str(tmp), seed,
                          buckets, rejected)
    n_spread = len(files)
    local_executor([spread], tasks=n_spread, workers=min(workers, n_spread), skip_completed=False,
                   logging_dir=str(mdir / "logs" / "spread")).run()
    n_sort = max(buckets.values())
    local_executor([SortBuckets(str(tmp), buckets)], tasks=n_sort, workers=min(workers, n_sort),
                   skip_completed=False, logging_dir=str(mdir / "logs" / "sort")).run()
    rows = {split: 0 for split in buckets}
    for f in sorted((tmp / "tmp-rows").glob("*.json")):
        for split, n in json.loads(f.read_text(encoding="utf-8")).items():
            rows[split] += n
    for split in buckets:
        finish_split(tmp / f"tmp-{split}")
    shutil.rmtree(tmp / "tmp-rows")
    return rows
