"""tonsai's per-document work as datatrove pipeline blocks.

Each block is a plain datatrove :class:`~datatrove.pipeline.base.PipelineStep`, so a datatrove user
can drop it into their own pipeline (after any datatrove reader, before any writer)::

    from datatrove.pipeline.readers import JsonlReader
    from tonsai.data.blocks import KhmerNormalizer, ScriptRouter, QualityFilter
    pipeline = [JsonlReader("km/"), KhmerNormalizer(), ScriptRouter("km"), QualityFilter(), ...]

- :class:`SourceReader`: tonsai's readers (every input format of the prepare stage, Hub streams
  included); task ``rank`` of ``world_size`` reads its stripe of each source's files
  (:mod:`tonsai.data.sharding`), so the output is the same whatever the number of tasks.
- :class:`KhmerNormalizer` (a formatter): :func:`tonsai.text.normalize` (Khmer cluster order,
  invisible characters, legacy-font clean-up; see KHMER.md), then strip.
- :class:`ReaderSkips`, :class:`LengthFilter`, :class:`ScriptRouter`, :class:`QualityFilter`:
  the filters of :mod:`tonsai.data.filters` in their fixed order, each drop counted in datatrove's
  stats under its reason (``dropped_<reason>``) and, for the stage's accounting, per source
  (``dropped:<reason>@<source>``); ``exclusion_writer`` keeps the dropped documents.
- :class:`ToxicLexiconFilter` (optional): documents dense in terms of the safety lexicon.
- :class:`DedupKeys`: the exact key (xxh3-128) and the MinHash band keys of :mod:`tonsai.data.dedup`.
- :class:`KeyedDocsWriter`: each task's surviving documents with their keys, one Parquet file per
  task in ``<work>/docs/`` (written under a temporary name, renamed when the task is done), for the
  deduplication, split and mixing steps of :mod:`tonsai.data.prepare`.

Documents carry ``lang`` and ``source`` in their metadata (a datatrove reader's documents get the
language the filters are built with).
"""

from __future__ import annotations

import collections
import contextlib
import gc
import json
import os
import time
import resource
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.formatters.base import BaseFormatter
from datatrove.pipeline.writers.jsonl import JsonlWriter
from loguru import logger
from tqdm.auto import tqdm

from tonsai.atomic import write_json
from tonsai.errors import StageError
from tonsai.data import columns
from tonsai.data.dedup import band_key_matrix, exact_key, id_hash
from tonsai.data.filters import FilterThresholds, quality_reason, script_mismatch, too_short
from tonsai.data.sharding import ORDER_BITS, task_units
from tonsai.data.sources import ReadOptions, ReadStats, Source, iter_unit, unit_inputs
from tonsai.text import RoutingThresholds, count_scripts, normalize
from tonsai.text.script import ScriptCounts

BATCH_ROWS = 4096  # documents per Parquet row group, at most
BATCH_CHARS = 1_000_000  # characters per row group, at most (writer and readers hold one row group)
KEY_BATCH_ROWS, KEY_BATCH_CHARS = 1024, 250_000  # one rensa call: its arrays are about 50 bytes a character


def count_key(key: str, source: str) -> str:
    """The stats label of a per-source count (``read@km:news.txt``); see :func:`split_count_key`."""
    return f"{key}@{source}"


def split_count_key(label: str) -> tuple[str, str] | None:
    key, sep, source = label.partition("@")
    return (key, source) if sep else None


def docs_schema(bands: int, locations: bool = False) -> pa.Schema:
    """The documents files' columns; ``locations``: also each document's file:line (for the
    duplicates that ``--write-rejected`` writes)."""
    return pa.schema([("text", pa.string()), ("id", pa.string()), ("src", pa.int32()), ("order", pa.int64()),
                      ("chars", pa.int64()), ("h1", pa.uint64()), ("h2", pa.uint64()), ("idh", pa.int64())]
                     + [(f"b{k}", pa.uint64()) for k in range(bands)]
                     + ([("location", pa.string())] if locations else []))


def peak_rss_mb() -> float:
    """Largest resident set of this process so far, in MB (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _no_traceback_for_input_errors(record) -> None:
    """A loguru patcher: datatrove logs a failing task's exception with its traceback; for a
    StageError (bad input, named with its file and line) the message says it all."""
    exc = record["exception"]
    if exc is not None and isinstance(exc.value, StageError):
        record["exception"] = None


class SourceReader(PipelineStep):
    """Read tonsai sources; this task's share is its stripe of each source's files
    (:func:`tonsai.data.sharding.task_units`; documents of a file it shares with other tasks are
    found, not decoded or parsed, unless they are its own).

    Per task it writes ``<summary_dir>/<rank>.json``: the UTF-8 bytes, invalid UTF-8 lines and the
    first locations of skipped records of its own documents, the document count of each unit it
    read, and the hashes of the units it leads (for the manifest)."""

    name = "tonsai sources"
    type = "📖 - READER"

    def __init__(self, sources: list[Source], options: ReadOptions, summary_dir: str | None = None):
        super().__init__()
        self.sources, self.options, self.summary_dir = sources, options, summary_dir

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        logger.configure(patcher=_no_traceback_for_input_errors)
        stats = {s.name: ReadStats() for s in self.sources}
        units: dict[int, dict] = {}  # unit -> source, documents, inputs (when this task leads it)
        clock = time.perf_counter
        with _Tally(self) as tally:  # its time: all of its own work, not the blocks after it
            t = clock()
            for u in task_units(self.sources, rank, world_size):
                source, share = self.sources[u.source], u.share
                docs = tqdm(iter_unit(source, u.path, stats[source.name], self.options, share),
                            desc=f"task {rank} {source.name if u.path is None else u.path.name}", unit="doc",
                            leave=False, mininterval=2.0, disable=None)
                label, base, n = count_key("read", source.name), u.unit << ORDER_BITS, 0
                for doc in docs:
                    n += 1
                    document = Document(text=doc.text, id=doc.id, metadata={
                        "lang": doc.lang, "source": doc.source, "location": doc.location, "src": u.source,
                        "order": base | share.pos, "skip_reason": doc.skip_reason})
                    tally.spent += clock() - t
                    yield document
                    t = clock()
                tally.counts[label] += n
                tally.counts["total"] += n
                units[u.unit] = {"source": u.source, "documents": share.pos + 1,
                                 "input": str(u.path or source.path),
                                 "inputs": unit_inputs(source, u.path) if u.lead else None}
            if self.summary_dir is not None:
                self._write_summary(rank, stats, units)
            tally.spent += clock() - t

    def _write_summary(self, rank: int, stats: dict[str, ReadStats], units: dict[int, dict]) -> None:
        # each task counts what it read of its own documents (the merge adds the tasks up)
        summary = {
            "bytes_in": sum(st.bytes for st in stats.values()),
            "invalid_utf8_lines": {n: st.invalid_utf8_lines for n, st in stats.items() if st.invalid_utf8_lines},
            "malformed_records": {n: st.malformed_records for n, st in stats.items() if st.malformed_records},
            "skipped_locations": {n: st.locations for n, st in stats.items() if st.locations},
            "text_fields": {n: st.text_fields for n, st in stats.items() if st.text_fields},
            "units": {str(k): v for k, v in units.items()},
        }
        path = Path(self.summary_dir) / f"{rank:05d}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, summary)


class KhmerNormalizer(BaseFormatter):
    """tonsai's Unicode normalization (:func:`tonsai.text.normalize`), then leading and trailing
    whitespace stripped."""

    name = "tonsai normalize"

    def format(self, text: str) -> str:
        return normalize(text).strip()

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        clock, fmt = time.perf_counter, self.format
        with _Tally(self) as tally:
            spent, total = 0.0, 0
            try:
                for doc in data:
                    t0 = clock()
                    doc.text = fmt(doc.text)
                    spent += clock() - t0
                    total += 1
                    yield doc
            finally:
                tally.spent += spent
                if total:
                    tally.counts["total"] += total


class _Tally:
    """Counts and seconds of a block, added to its datatrove stats once at the end: per document,
    datatrove's ``stat_update``, ``track_time`` and document-length stats cost a third of the whole
    document step on the shared data (profiled), more than normalization."""

    def __init__(self, step: PipelineStep):
        self.step, self.counts, self.spent = step, collections.Counter(), 0.0

    def __enter__(self) -> _Tally:
        return self

    def __exit__(self, *exc) -> None:
        for label, n in self.counts.items():
            self.step.stat_update(label, value=n)
        if self.counts["total"] or self.spent:
            self.step.stats.time_stats.update(self.spent, unit="task")


class _SourceFilter(BaseFilter):
    """A filter that also counts each drop per source (``dropped:<reason>@<source>``); the same
    stats as datatrove's filters (total, forwarded, dropped, dropped_<reason>, the exclusion
    writer), tallied per task (:class:`_Tally`)."""

    def __init__(self, exclusion_writer=None):
        super().__init__(exclusion_writer=exclusion_writer)

    def reason(self, doc: Document) -> str | None:
        raise NotImplementedError

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        reason = self.reason(doc)
        return True if reason is None else (False, reason)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        clock, reason_of = time.perf_counter, self.reason
        with self.exclusion_writer if self.exclusion_writer else contextlib.nullcontext() as writer, \
                _Tally(self) as tally:
            counts = tally.counts
            spent, total, forwarded = 0.0, 0, 0  # kept in locals per document, added to the tally once
            try:
                for doc in data:
                    t0 = clock()
                    reason = reason_of(doc)
                    spent += clock() - t0
                    total += 1
                    if reason is None:
                        forwarded += 1
                        yield doc
                        continue
                    self._drop(doc, reason, counts, writer, rank)
            finally:
                tally.spent += spent
                for label, n in (("total", total), ("forwarded", forwarded)):
                    if n:
                        counts[label] += n

    def _drop(self, doc: Document, reason: str, counts: collections.Counter, writer, rank: int) -> None:
        counts["dropped"] += 1
        counts[f"dropped_{reason}"] += 1
        counts[count_key(f"dropped:{reason}", doc.metadata.get("source", "?"))] += 1
        if writer:
            doc.metadata["filter_reason"] = reason
            writer.write(doc, rank)


class ReaderSkips(_SourceFilter):
    """Drop what the reader marked: invalid UTF-8 (``--invalid-utf8 skip``) or a bad record
    (``--bad-records skip``), under that reason."""

    name = "reader skips"

    def reason(self, doc: Document) -> str | None:
        return doc.metadata.get("skip_reason")


class LengthFilter(_SourceFilter):
    """``too_short``: fewer than ``min_chars`` non-space characters."""

    name = "too short"

    def __init__(self, min_chars: int = FilterThresholds.min_chars, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.min_chars = min_chars

    def reason(self, doc: Document) -> str | None:
        return too_short(doc.text, self.min_chars)


def script_counts(doc: Document) -> ScriptCounts:
    """The document's script counts, computed once and kept in its metadata for later filters."""
    c = doc.metadata.get("script_counts")
    if c is None:
        counts = count_scripts(doc.text)
        doc.metadata["script_counts"] = [counts.khmer, counts.latin, counts.digit, counts.punct, counts.other]
        return counts
    return ScriptCounts(*c)


class ScriptRouter(_SourceFilter):
    """Drop documents whose script disagrees with their declared language (``lang`` in the metadata,
    else ``lang`` given here): reason ``script_<routed>_in_<declared>_source``."""

    name = "script routing"

    def __init__(self, lang: str | None = None, thresholds: RoutingThresholds = RoutingThresholds(),
                 exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.lang, self.thresholds = lang, thresholds

    def reason(self, doc: Document) -> str | None:
        declared = doc.metadata.setdefault("lang", self.lang)
        return script_mismatch(script_counts(doc), declared, self.thresholds)


class QualityFilter(_SourceFilter):
    """tonsai's quality filters in order: too_few_words (Khmer syllables count as units), digits,
    symbols, URLs, repeated lines, repeated unit 5-grams, then the text quality flags (U+FFFD,
    invalid Khmer clusters, legacy-font suspects)."""

    name = "tonsai quality"

    def __init__(self, thresholds: FilterThresholds = FilterThresholds(), exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.t = thresholds

    def reason(self, doc: Document) -> str | None:
        return quality_reason(doc.text, script_counts(doc), self.t)


class ToxicLexiconFilter(_SourceFilter):
    """``toxic_lexicon``: documents with at least ``min_hits_per_1k`` occurrences of the safety lexicon's
    terms per 1,000 characters (:class:`tonsai.safety.lexicon.Lexicon`, matched on the normalized text;
    off unless prepare's ``--toxic-lexicon`` is given). A density, not a single hit: a long news report
    that names a crime once stays, a short comment made of insults goes."""

    name = "toxic lexicon"

    def __init__(self, lexicon, min_hits_per_1k: float = 5.0, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.lexicon, self.min_hits_per_1k = lexicon, min_hits_per_1k

    def reason(self, doc: Document) -> str | None:
        hits = self.lexicon.count(doc.text, normalized=True)
        return "toxic_lexicon" if hits and hits * 1000 >= self.min_hits_per_1k * len(doc.text) else None


class DedupKeys(PipelineStep):
    """Exact key (xxh3-128 of the text) and MinHash band keys in the metadata (``h1``, ``h2``,
    ``bands``: a list of ``bands`` ints, or empty without near-duplicate keys). Documents pass in
    batches of up to KEY_BATCH_ROWS documents and KEY_BATCH_CHARS characters, in their order: the
    band keys of a batch are one rensa call (:func:`tonsai.data.dedup.band_key_matrix`)."""

    name = "dedup keys"
    type = "🫂 - DEDUP"

    def __init__(self, near_dedup: bool = True, num_perm: int = 128, bands: int = 16):
        super().__init__()
        self.near_dedup, self.num_perm, self.bands = near_dedup, num_perm, bands

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        with _Tally(self) as tally:
            for batch in _batches(data, KEY_BATCH_ROWS, KEY_BATCH_CHARS):
                t0 = time.perf_counter()
                keys = (band_key_matrix([d.text for d in batch], self.num_perm, self.bands).tolist()
                        if self.near_dedup else [[]] * len(batch))
                for doc, bkeys in zip(batch, keys):
                    doc.metadata["h1"], doc.metadata["h2"] = exact_key(doc.text)
                    doc.metadata["bands"] = bkeys
                tally.spent += time.perf_counter() - t0
                tally.counts["total"] += len(batch)
                yield from batch


def _batches(data: DocumentsPipeline, rows: int = BATCH_ROWS, max_chars: int = BATCH_CHARS) -> Iterator[list[Document]]:
    """The documents in lists of at most ``rows`` documents and ``max_chars`` characters (a longer
    document is a batch of its own)."""
    batch: list[Document] = []
    chars = 0
    for doc in data:
        if batch and (len(batch) >= rows or chars + len(doc.text) > max_chars):
            yield batch
            batch, chars = [], 0
        batch.append(doc)
        chars += len(doc.text)
    if batch:
        yield batch


@contextlib.contextmanager
def fewer_gc_passes(young: int = 50_000) -> Iterator[None]:
    """Python's cycle collector less often while documents stream through the blocks (the writer
    drains the whole pipeline): each document's metadata, units and n-grams are many small
    containers, and by default a pass runs every 700 of them. Documents form no cycles, so passes
    find nothing: every ``young`` allocations instead saves 6% of the document step on the shared
    data (4.44 s to 4.19 s, one task, measured)."""
    before = gc.get_threshold()
    gc.set_threshold(young, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


class KeyedDocsWriter(PipelineStep):
    """Write this task's documents with their keys to ``<folder>/<rank>.parquet`` (zstd, row groups
    of at most BATCH_ROWS documents and BATCH_CHARS characters), under a temporary name renamed at
    the end, and count them per source (``passed_filters@<source>``)."""

    name = "keyed docs"
    type = "💽 - WRITER"

    def __init__(self, folder: str, bands: int = 16, locations: bool = False):
        super().__init__()
        self.folder, self.bands, self.locations = folder, bands, locations

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        final = Path(self.folder) / f"{rank:05d}.parquet"
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".tmp-{final.name}")
        schema = docs_schema(self.bands, self.locations)
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer, _Tally(self) as tally, \
                fewer_gc_passes():
            for batch in _batches(data):
                t0 = time.perf_counter()  # its time: tables and Parquet, not the blocks before it
                tally.counts.update(count_key("passed_filters", d.metadata["source"]) for d in batch)
                tally.counts["total"] += len(batch)
                writer.write_table(self._table(batch, schema))
                tally.spent += time.perf_counter() - t0
        os.replace(tmp, final)
        self.stat_update("peak_rss_mb", value=round(peak_rss_mb()), unit="task")
        return
        yield  # a generator: the executor drains it

    def _table(self, batch: list[Document], schema: pa.Schema) -> pa.Table:
        meta = [d.metadata for d in batch]
        cols = {"text": [d.text for d in batch], "id": [d.id for d in batch],
                "src": [m["src"] for m in meta], "order": [m["order"] for m in meta],
                "chars": [len(d.text) for d in batch], "h1": [m["h1"] for m in meta],
                "h2": [m["h2"] for m in meta], "idh": [id_hash(d.id) for d in batch]}
        bands = np.array([m["bands"] or [0] * self.bands for m in meta], dtype=np.uint64).reshape(len(batch), self.bands)
        for k in range(self.bands):
            cols[f"b{k}"] = bands[:, k]
        if self.locations:
            cols["location"] = [m["location"] for m in meta]
        return columns.table(cols, schema)


def rejected_writer(folder: str, block: str) -> JsonlWriter:
    """An exclusion writer for ``--write-rejected``: one gzipped JSON line per dropped document with
    its id, source, location, reason and normalized text."""

    def adapter(_writer, doc: Document) -> dict:
        m = doc.metadata
        return {"id": doc.id, "source": m.get("source"), "location": m.get("location"),
                "reason": m.get("filter_reason"), "text": doc.text}

    return JsonlWriter(folder, output_filename=f"{block}-${{rank}}.jsonl.gz", compression="gzip", adapter=adapter)


def read_summary(folder: Path, rank: int) -> dict:
    return json.loads((folder / f"{rank:05d}.json").read_text(encoding="utf-8"))
