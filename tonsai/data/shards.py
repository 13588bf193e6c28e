"""Phase 1 of the prepare stage, one shard at a time: read, normalize, filter, hash.

Shard ``i`` of ``N`` takes the documents whose position inside their source is ``i`` modulo ``N``
(every shard reads the inputs, but decodes, normalizes and filters only its own documents: reading
is a small part of the cost). For each document it records the reason it was dropped, or writes it
with its exact-duplicate key, MinHash band keys, character count and id hash to Parquet files in
``<work>/shard-0000i-of-0000N/`` (row groups of at most ``BATCH_ROWS`` documents and ``BATCH_CHARS``
characters: readers hold one row group, so memory does not grow with the corpus). The folder is written under a temporary name and renamed when the shard is
done, with ``shard.json`` (counts and a fingerprint of the settings), so a rerun skips finished
shards and an interrupted one never looks finished. ``num_proc`` worker processes normalize and
filter batches of documents; results come back in input order, so output does not depend on it.
"""

from __future__ import annotations

import collections
import dataclasses
import gzip
import hashlib
import json
import logging
import multiprocessing
import time
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from tonsai.atomic import staged_dir, write_json
from tonsai.data.dedup import band_keys, exact_key, id_hash
from tonsai.data.filters import FilterThresholds, first_reason
from tonsai.data.sources import ReadOptions, ReadStats, Source, input_record, iter_documents
from tonsai.folders import FolderLock, remove_stale_staging
from tonsai.text import RoutingThresholds, count_scripts, normalize
from tonsai.text.normalize import NORMALIZER_VERSION

log = logging.getLogger(__name__)
BATCH_DOCS = 256  # documents per task sent to a worker
BATCH_ROWS = 4096  # documents per Parquet row group, at most
BATCH_CHARS = 1_000_000  # characters per row group, at most (writer and readers hold one row group in memory)
ORDER_BITS = 40  # order = source index << 40 | position inside the source (up to 1.1e12 documents)
SHARD_INFO = "shard.json"


@dataclasses.dataclass(frozen=True)
class DocParams:
    """What a worker needs to process documents (picklable)."""

    routing: RoutingThresholds
    filters: FilterThresholds
    near_dedup: bool = True
    num_perm: int = 128
    bands: int = 16


def shard_name(index: int, num_shards: int) -> str:
    return f"shard-{index:05d}-of-{num_shards:05d}"


def schema(bands: int) -> pa.Schema:
    return pa.schema([("text", pa.string()), ("id", pa.string()), ("src", pa.int32()), ("order", pa.int64()),
                      ("chars", pa.int64()), ("h1", pa.uint64()), ("h2", pa.uint64()), ("idh", pa.int64())]
                     + [(f"b{k}", pa.uint64()) for k in range(bands)])


def process_batch(lang: str, docs: list[tuple[str, str | None]], p: DocParams) -> tuple[list[tuple], dict]:
    """Normalize and filter ``(text, skip_reason)`` pairs of one language.

    Returns per document ``(reason, text)`` when dropped, or ``(None, text, chars, h1, h2, bands)``,
    and the seconds spent per step.
    """
    out = []
    clock = time.perf_counter
    t_norm = t_filt = t_hash = 0.0
    for raw, skip in docs:
        t0 = clock()
        text = normalize(raw).strip()
        t1 = clock()
        reason = skip or first_reason(text, count_scripts(text), lang, p.routing, p.filters)
        t2 = clock()
        t_norm += t1 - t0
        t_filt += t2 - t1
        if reason:
            out.append((reason, text))
            continue
        h1, h2 = exact_key(text)
        out.append((None, text, len(text), h1, h2, band_keys(text, p.num_perm, p.bands) if p.near_dedup else []))
        t_hash += clock() - t2
    return out, {"normalize": t_norm, "filters": t_filt, "dedup_keys": t_hash}


def _process_star(args):
    return process_batch(*args)


def peak_rss_mb() -> float:
    """Largest resident set of this process so far, in MB (Linux reports kB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fingerprint(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def source_identity(source: Source) -> dict:
    """Paths with sizes and modification times (cheap), to notice changed inputs on a rerun."""
    if source.is_hub:
        return {"path": source.path}
    files = []
    for f in source.files():
        st = f.stat()
        files.append([str(f), st.st_size, int(st.st_mtime)])
    return {"path": source.path, "name": source.name, "files": files, "text_column": source.text_column,
            "split": source.split}


def read_shard_info(path: Path) -> dict | None:
    info = path / SHARD_INFO
    if not info.is_file() or not (path / "docs.parquet").is_file():
        return None
    try:
        return json.loads(info.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


class _RowBuffer:
    def __init__(self, writer: pq.ParquetWriter, bands: int):
        self.writer, self.bands = writer, bands
        self.cols: dict[str, list] = collections.defaultdict(list)
        self.n = 0
        self.chars = 0

    def add(self, text, doc_id, src, order, chars, h1, h2, idh, bkeys) -> None:
        c = self.cols
        c["text"].append(text); c["id"].append(doc_id); c["src"].append(src); c["order"].append(order)
        c["chars"].append(chars); c["h1"].append(h1); c["h2"].append(h2); c["idh"].append(idh)
        for k in range(self.bands):
            c[f"b{k}"].append(bkeys[k] if bkeys else 0)
        self.n += 1
        self.chars += chars
        if self.n >= BATCH_ROWS or self.chars >= BATCH_CHARS:
            self.flush()

    def flush(self) -> None:
        if self.n:
            self.writer.write_table(pa.table(dict(self.cols), schema=self.writer.schema))
            self.cols.clear()
            self.n = self.chars = 0


def _own_documents(sources: list[Source], index: int, num_shards: int, opts: ReadOptions,
                   stats: dict[str, ReadStats]) -> Iterator[tuple[int, int, object]]:
    for si, source in enumerate(sources):
        st = stats[source.name]
        docs = iter_documents(source, st, options=opts)
        for pos, doc in enumerate(tqdm(docs, desc=f"shard {index} {source.name}", unit="doc", leave=False,
                                       mininterval=2.0)):
            if pos % num_shards == index:
                yield si, pos, doc


def run_shard(sources: list[Source], index: int, num_shards: int, work_dir: Path, opts: ReadOptions,
              params: DocParams, settings: dict, num_proc: int = 1, write_rejected: bool = False,
              with_inputs: bool = False) -> dict:
    """Process shard ``index`` of ``num_shards`` into ``work_dir``; skip it when already done with
    the same settings. Returns its shard.json."""
    final = work_dir / shard_name(index, num_shards)
    with FolderLock(final, "prepare-shard"):
        remove_stale_staging(final)
        return _run_shard(sources, index, num_shards, final, opts, params, settings, num_proc, write_rejected,
                          with_inputs)


def _run_shard(sources: list[Source], index: int, num_shards: int, final: Path, opts: ReadOptions,
               params: DocParams, settings: dict, num_proc: int, write_rejected: bool, with_inputs: bool) -> dict:
    fp = fingerprint(settings)
    done = read_shard_info(final)
    if done is not None and done.get("fingerprint") == fp:
        log.info("%s is complete, skipping it", final.name)
        return done
    if done is not None:
        log.warning("%s was made with other settings or inputs; redoing it", final.name)
    counts = {s.name: collections.Counter() for s in sources}
    steps: collections.Counter = collections.Counter()
    started = time.perf_counter()
    stats = {s.name: ReadStats() for s in sources}
    pool = multiprocessing.get_context("spawn").Pool(num_proc) if num_proc > 1 else None
    try:
        with staged_dir(final) as tmp:
            writer = pq.ParquetWriter(tmp / "docs.parquet", schema(params.bands), compression="zstd")
            rows = _RowBuffer(writer, params.bands)
            rejected = gzip.open(tmp / "rejected.jsonl.gz", "wt", encoding="utf-8") if write_rejected else None
            pending: collections.deque = collections.deque()

            def drain(limit: int) -> None:
                while len(pending) > limit:
                    meta, res = pending.popleft()
                    results, times = res.get() if pool else res
                    steps.update(times)
                    for (si, pos, doc), r in zip(meta, results):
                        c = counts[doc.source]
                        if r[0] is not None:
                            c[f"dropped:{r[0]}"] += 1
                            if rejected:
                                rejected.write(json.dumps({"id": doc.id, "source": doc.source, "location": doc.location,
                                                           "reason": r[0], "text": r[1]}, ensure_ascii=False) + "\n")
                            continue
                        c["passed_filters"] += 1
                        _, text, chars, h1, h2, bkeys = r
                        rows.add(text, doc.id, si, (si << ORDER_BITS) | pos, chars, h1, h2, id_hash(doc.id), bkeys)

            batch: list = []
            batch_lang = None

            def submit() -> None:
                nonlocal batch
                if not batch:
                    return
                args = (batch_lang, [(d.text, d.skip_reason) for _, _, d in batch], params)
                pending.append((batch, pool.apply_async(_process_star, (args,)) if pool else process_batch(*args)))
                batch = []
                drain(2 * num_proc)

            for si, pos, doc in _own_documents(sources, index, num_shards, opts, stats):
                counts[doc.source]["read"] += 1
                if doc.lang != batch_lang or len(batch) >= BATCH_DOCS:
                    submit()
                    batch_lang = doc.lang
                batch.append((si, pos, doc))
            submit()
            drain(0)
            rows.flush()
            writer.close()
            if rejected:
                rejected.close()
            for name, st in stats.items():
                if st.invalid_utf8_lines:
                    counts[name]["invalid_utf8_lines"] = st.invalid_utf8_lines
                if st.malformed_records:
                    counts[name]["malformed_records"] = st.malformed_records
            info = {
                "shard": index, "num_shards": num_shards, "fingerprint": fp,
                "normalizer_version": NORMALIZER_VERSION,
                "counts": {k: dict(v) for k, v in counts.items()},
                "skipped_locations": {k: v.locations for k, v in stats.items() if v.locations},  # kind -> where
                "inputs": [input_record(s) for s in sources] if with_inputs else None,
                "elapsed_s": round(time.perf_counter() - started, 3),
                "worker_step_s": {k: round(v, 3) for k, v in steps.items()},
                "bytes_in": sum(st.bytes for st in stats.values()),
                "peak_rss_mb": round(peak_rss_mb()),
            }
            write_json(tmp / SHARD_INFO, info)
    finally:
        if pool:
            pool.terminate()  # every task has been collected, or an error is on its way up
            pool.join()
    log.info("%s done: %s", final.name, {k: v.get("passed_filters", 0) for k, v in counts.items()})
    return info
