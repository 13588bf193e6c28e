"""Writing a split of the prepared dataset as Arrow files, shuffled, in bounded memory.

Documents are spread over ``num_buckets`` temporary Arrow files by a hash of (seed, id, copy);
each bucket is then read alone, sorted by that hash and written as one
``data-0000k-of-0000K.arrow`` file (an Arrow stream, the format ``datasets`` itself keeps). The
order depends only on the seed and the documents, not on how many tasks or processes made them:
several writers (``part``) may spread into the same temporary folder at once, each into its own
file per bucket (``bucket-k/<part>.arrow``), and each bucket is then sorted by one task
(:func:`write_bucket`). Memory: while spreading, at most ``FLUSH_BYTES`` characters of text
(``FLUSH_ROWS`` rows) wait in Python lists, spread over the buckets (4 KB per bucket at least);
while sorting, one bucket is in memory (plus 1,000 rows being copied out). :func:`buckets_for`
picks buckets of about ``bucket_mb`` MB, at most ``MAX_BUCKETS`` of them (open files), so memory
stays flat up to ``MAX_BUCKETS x bucket_mb`` of selected text (128 GB with the default 256 MB) and
grows beyond that (1 GB buckets for 512 GB).

The split folder holds these files and nothing else: no ``datasets`` metadata (``state.json``,
``dataset_info.json``) is written, because its fields are private to ``datasets``. Readers join
the files through public APIs: :func:`tonsai.data.prepared.load_splits` memory-maps each with
``datasets.Dataset.from_file`` and joins them with ``concatenate_datasets`` (no copy), and a user
can call ``datasets.load_dataset("arrow", data_dir="runs/data/dataset")`` (which copies them into
its cache). ``Dataset.save_to_disk`` is not used: it copies every file through a memory map, which
raised peak RSS from 164 to 327 MB on the 10x corpus's train split (168 MB), growing with the
corpus where this writer's stays flat.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import xxhash

from tonsai.data import columns
from tonsai.data.ondisk import trim_heap

COLUMNS = ("text", "lang", "source", "id")
SCHEMA = pa.schema([(c, pa.string()) for c in COLUMNS])
_BUCKET_SCHEMA = SCHEMA.append(pa.field("key", pa.uint64()))
FLUSH_ROWS = 8192  # rows waiting in all buckets together, at most
FLUSH_BYTES = 1024 * 1024  # characters waiting in all buckets together, at most
MAX_BUCKETS = 512
WRITE_ROWS = 1000


def buckets_for(chars: int, bucket_mb: int) -> int:
    """Buckets needed so that each holds about ``bucket_mb`` MB (3 bytes per character at most)."""
    return min(MAX_BUCKETS, max(1, math.ceil(3 * chars / (bucket_mb * 1e6))))


class ShuffledSplitWriter:
    """Spread documents into the bucket files of one ``part`` under ``tmp_dir``; :meth:`finish`
    (one writer) or :meth:`close_part` then :func:`write_bucket` per bucket and
    :func:`finish_split` (several writers) write the split."""

    def __init__(self, out_dir: Path, tmp_dir: Path, seed: int, num_buckets: int, part: str = "0"):
        self.out_dir, self.tmp_dir, self.seed, self.k = Path(out_dir), Path(tmp_dir), seed, num_buckets
        for b in range(self.k):
            (self.tmp_dir / f"bucket-{b}").mkdir(parents=True, exist_ok=True)
        self.files = [pa.OSFile(str(self.tmp_dir / f"bucket-{b}" / f"{part}.arrow"), "wb") for b in range(self.k)]
        self.writers = [pa.ipc.new_stream(f, _BUCKET_SCHEMA) for f in self.files]
        self.buf: list[dict[str, list]] = [{c: [] for c in _BUCKET_SCHEMA.names} for _ in range(self.k)]
        self.size = [0] * self.k
        self.rows = 0
        # the buffers' total is bounded, not each one's: with many buckets each flushes sooner
        self.flush_rows = max(16, FLUSH_ROWS // self.k)
        self.flush_bytes = max(4096, FLUSH_BYTES // self.k)

    def add(self, text: str, lang: str, source: str, doc_id: str, copy: int = 0) -> None:
        key = xxhash.xxh3_64_intdigest(f"{doc_id}\0{copy}".encode("utf-8"), seed=self.seed)
        b = key % self.k
        buf = self.buf[b]
        buf["text"].append(text); buf["lang"].append(lang); buf["source"].append(source)
        buf["id"].append(doc_id); buf["key"].append(key)
        self.size[b] += len(text)
        if len(buf["key"]) >= self.flush_rows or self.size[b] >= self.flush_bytes:
            self._flush(b)
        self.rows += 1

    def _flush(self, b: int) -> None:
        if self.buf[b]["key"]:
            self.writers[b].write_table(columns.table(self.buf[b], _BUCKET_SCHEMA))
            self.buf[b] = {c: [] for c in _BUCKET_SCHEMA.names}
            self.size[b] = 0

    def close_part(self) -> int:
        """Write out what waits and close this part's files; returns its number of rows."""
        for b in range(self.k):
            self._flush(b)
            self.writers[b].close()
            self.files[b].close()
        return self.rows

    def finish(self) -> int:
        """Close this part, sort each bucket and write the split folder; returns the number of rows."""
        self.close_part()
        for b in range(self.k):
            write_bucket(self.tmp_dir, self.out_dir, b, self.k)
        finish_split(self.tmp_dir)
        return self.rows


def bucket_name(b: int, k: int) -> str:
    return f"data-{b:05d}-of-{k:05d}.arrow"


def write_bucket(tmp_dir: Path, out_dir: Path, b: int, k: int) -> int:
    """Read bucket ``b`` of every part, sort it by key and write it as the split's file ``b``;
    returns its rows. Memory: the bucket (about ``--shuffle-bucket-mb``) and its sort order."""
    parts = sorted((Path(tmp_dir) / f"bucket-{b}").glob("*.arrow"))
    tables = []
    for path in parts:
        with pa.OSFile(str(path)) as f:
            tables.append(pa.ipc.open_stream(f).read_all())
    table = pa.concat_tables(tables) if tables else _BUCKET_SCHEMA.empty_table()
    del tables
    order = np.argsort(columns.to_numpy(table.column("key")), kind="stable")
    table = table.drop_columns(["key"])
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    with pa.OSFile(str(Path(out_dir) / bucket_name(b, k)), "wb") as f, pa.ipc.new_stream(f, SCHEMA) as w:
        for i in range(0, len(order), WRITE_ROWS):
            w.write_table(table.take(columns.array(order[i:i + WRITE_ROWS], pa.int64())))
    rows = len(order)
    del table, order
    trim_heap()
    for path in parts:
        path.unlink()
    return rows


def finish_split(tmp_dir: Path) -> None:
    """Remove a split's emptied bucket folders once every bucket is written."""
    shutil.rmtree(tmp_dir, ignore_errors=True)
