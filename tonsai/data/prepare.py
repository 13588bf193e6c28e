"""The prepare stage: raw Khmer and English text to a mixed, split DatasetDict on disk.

It streams, in two phases, so memory does not grow with the corpus:

1. Shards (:mod:`tonsai.data.shards`): read every source (:mod:`tonsai.data.sources`), normalize,
   filter with reasons (:mod:`tonsai.data.filters`), and write the surviving documents with their
   exact and MinHash keys to Parquet in a work folder. ``--num-shards N --shard-index i`` runs one
   shard (on any machine that sees the inputs and the work folder); without ``--shard-index`` all
   unfinished shards run here, one after the other, each with ``--num-proc`` processes.
2. Merge: exact and near-duplicate removal across all sources and languages on keys partitioned
   on disk by hash and processed one bucket at a time (:mod:`tonsai.data.dedup`,
   :mod:`tonsai.data.ondisk`), the validation split per source by hashed id, the mixing plan per
   source (:mod:`tonsai.data.mix`), then one pass over the shard files that writes the shuffled
   splits (:mod:`tonsai.data.writer`) and manifest.json into a temporary folder renamed at the end.
   Per-document state (status, length, id hash, copies) lives in files in ``<work>/merge``; see
   :func:`merge` for what is held in memory.

Every document read is counted as kept or dropped with a reason in manifest.json.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np

from tonsai.atomic import staged_dir, write_json
from tonsai.errors import StageError
from tonsai.data.dedup import BAND_RECORD, EXACT_RECORD, KEYS_VERSION, pair_non_survivors
from tonsai.data.dedup_steps import BandBuckets, ExactBuckets, PartitionBands, PartitionKeys, run_step, saved
from tonsai.data.filters import FilterThresholds
from tonsai.data.mix import STRATEGIES, normalize_weights, plan_sources_lazy, source_shares, unweighted
from tonsai.data.ondisk import ARROW_POOL_VARIABLE, MAX_OPEN, DiskArray, num_buckets, release_memory_promptly, trim_heap
from tonsai.data.blocks import peak_rss_mb
from tonsai.data.engine import (absolute, docs_dir, run_docs_local, run_docs_ray, submit_slurm, task_infos,
                                unfinished_tasks)
from tonsai.data.sharding import crowded_inputs, unit_layout
from tonsai.data.sources import MAX_LOCATIONS, ReadOptions, Source, folder_files, load_mix_file
from tonsai.data.splitwrite import EXACT_DUP, NEAR_DUP, TRAIN, VALIDATION, merge_workers, write_splits
from tonsai.data.writer import buckets_for
from tonsai.executors import ExecutorOptions
from tonsai.folders import check_output_dir, claim_in_place, claim_output, static_prefix
from tonsai.data.prepared import STAGE
from tonsai.manifest import accounting_line, file_sha256, write_manifest
from tonsai.safety.lexicon import lexicon_files
from tonsai.text import RoutingThresholds
from tonsai.text.normalize import NORMALIZER_VERSION

log = logging.getLogger(__name__)
WORK_STAGE = "prepare-work"  # the ownership mark of --work-dir
LANGS = ("km", "en")


@dataclasses.dataclass
class PrepareConfig(ExecutorOptions):
    """Options of scripts/prepare_dataset.py."""

    output_dir: str = dataclasses.field(metadata={"help": "folder to write the DatasetDict and manifest.json into"})
    khmer: list[str] = dataclasses.field(default_factory=list, metadata={
        "help": "Khmer sources: .txt/.jsonl/.json/.parquet files (.gz/.zst too), .arrow files, save_to_disk folders, "
                "folders or globs of these, or hf:NAME[:CONFIG[:SPLIT]] (a Hub dataset, streamed)",
        "metavar": "PATH"})
    english: list[str] = dataclasses.field(default_factory=list, metadata={
        "help": "English sources, as for --khmer", "metavar": "PATH"})
    khmer_weight: float = dataclasses.field(default=0.5, metadata={
        "help": "share of Khmer characters in the training mixture (normalized with --english-weight)"})
    english_weight: float = dataclasses.field(default=0.5, metadata={
        "help": "share of English characters in the training mixture"})
    doc_mode: str = dataclasses.field(default="line", metadata={
        "help": "how .txt files split into documents: one per line, or per blank-line-separated paragraph",
        "choices": ["line", "paragraph"]})
    text_column: str = dataclasses.field(default="text", metadata={
        "help": "the field of JSON records, or the column of Parquet, Arrow and Hub datasets, that holds the text"})
    min_chars: int = dataclasses.field(default=20, metadata={
        "help": "drop documents with fewer non-space characters than this"})
    validation_fraction: float = dataclasses.field(default=0.05, metadata={
        "help": "fraction of each source's documents held out for validation"})
    min_validation_docs: int = dataclasses.field(default=2, metadata={
        "help": "hold out at least this many documents per source"})
    max_epochs: float = dataclasses.field(default=1.0, metadata={
        "help": "most passes over any language's training documents when mixing (>1 allows upsampling)"})
    seed: int = dataclasses.field(default=0, metadata={"help": "seed for mixing and shuffling"})
    khmer_min_share: float = dataclasses.field(default=RoutingThresholds.khmer_min_share, metadata={
        "help": "route a document to Khmer when Khmer is at least this share of its letters"})
    khmer_min_chars: int = dataclasses.field(default=RoutingThresholds.khmer_min_chars, metadata={
        "help": "... and it has at least this many Khmer characters"})
    mixed_min_share: float = dataclasses.field(default=RoutingThresholds.mixed_min_share, metadata={
        "help": "below --khmer-min-share but at least this Khmer share: 'mixed' (dropped from both languages)"})
    latin_min_share: float = dataclasses.field(default=RoutingThresholds.latin_min_share, metadata={
        "help": "route to English when Latin letters are at least this share of the letters"})

    mix: str | None = dataclasses.field(default=None, metadata={
        "help": "YAML/JSON mix file (see configs/data/) with a list of sources: path, lang, and optional "
                "name, weight, max_epochs, text_column, split; adds to --khmer/--english"})
    source_weights: list[str] = dataclasses.field(default_factory=list, metadata={
        "help": "NAME=WEIGHT: a source's share inside its language (names as in the manifest, e.g. "
                "km:news.txt); a language's sources all get a weight or none (none: by characters)",
        "metavar": "NAME=W"})
    mix_strategy: str = dataclasses.field(default="weights", metadata={
        "help": "weights: language shares from --khmer-weight/--english-weight; temperature: shares "
                "proportional to characters**alpha; unimax: equal budgets capped at --max-epochs",
        "choices": list(STRATEGIES)})
    temperature_alpha: float = dataclasses.field(default=0.3, metadata={
        "help": "alpha of temperature sampling (1: natural shares, 0: uniform)"})
    target_chars: int = dataclasses.field(default=0, metadata={
        "help": "size of the training mixture in characters (0: as large as the weights and --max-epochs "
                "allow; for unimax, the budget to spread)"})
    allow_unmet_shares: bool = dataclasses.field(default=False, metadata={
        "help": "when a language's requested share cannot be met (e.g. filtering or deduplication leaves no "
                "English), write the mixture anyway with a warning and the requested and realized shares in "
                "manifest.json (default: stop with an error before writing)"})
    invalid_utf8: str = dataclasses.field(default="replace", metadata={
        "help": "lines with invalid UTF-8: decode with U+FFFD (counted), or skip the document (counted)",
        "choices": ["replace", "skip"]})
    bad_records: str = dataclasses.field(default="error", metadata={
        "help": "a bad JSON record (malformed, not an object, no text field, text not a string): stop with "
                "its file:line, or skip it (counted by kind, first locations in the manifest)",
        "choices": ["error", "skip"]})
    min_words: int = dataclasses.field(default=FilterThresholds.min_units, metadata={
        "help": "drop documents with fewer word-like units (Khmer syllables, other words)"})
    max_dup_line_frac: float = dataclasses.field(default=FilterThresholds.max_dup_line_frac, metadata={
        "help": "drop documents where more than this share of lines repeat an earlier line"})
    max_dup_ngram_frac: float = dataclasses.field(default=FilterThresholds.max_dup_ngram_frac, metadata={
        "help": "drop documents where more than this share of word-like units sit in a repeated n-gram (5 words; "
                "12 syllables, about 5 words, in Khmer text)"})
    max_digit_frac: float = dataclasses.field(default=FilterThresholds.max_digit_frac, metadata={
        "help": "drop documents with more digits than this share of non-space characters"})
    max_symbol_frac: float = dataclasses.field(default=FilterThresholds.max_symbol_frac, metadata={
        "help": "drop documents with more punctuation/symbols than this share of non-space characters"})
    max_url_frac: float = dataclasses.field(default=FilterThresholds.max_url_frac, metadata={
        "help": "drop documents with more URL characters than this share"})
    toxic_lexicon: list[str] = dataclasses.field(default_factory=list, metadata={
        "help": "drop documents dense in toxic terms (reason toxic_lexicon): lexicon YAML files or folders, "
                "e.g. eval_suites/safety (the safety check's lexicon; default: no such filter)", "metavar": "PATH"})
    toxic_min_hits_per_1k: float = dataclasses.field(default=5.0, metadata={
        "help": "with --toxic-lexicon: drop a document with at least this many term occurrences per 1,000 "
                "characters (one hit drops a document of up to 200 characters at 5)"})
    near_dedup: bool = dataclasses.field(default=True, metadata={
        "help": "remove near-duplicates (MinHash LSH over character 5-grams) besides exact duplicates"})
    minhash_perm: int = dataclasses.field(default=128, metadata={"help": "MinHash permutations"})
    minhash_bands: int = dataclasses.field(default=16, metadata={
        "help": "LSH bands (permutations / bands rows each; 128/16 catches 95%% of pairs at Jaccard 0.8)"})
    num_shards: int = dataclasses.field(default=0, metadata={
        "help": "number of document tasks (datatrove tasks; 0: --workers); any number gives the same dataset",
        "aliases": ("--tasks",)})
    shard_index: int | None = dataclasses.field(default=None, metadata={
        "help": "run only this document task into the work folder and stop (run --merge-only after all; "
                "--executor slurm or ray do this for you)"})
    merge_only: bool = dataclasses.field(default=False, metadata={
        "help": "do not run document tasks here: merge finished ones (an error lists missing ones)"})
    work_dir: str | None = dataclasses.field(default=None, metadata={
        "help": "folder for the document tasks' files (default: <output-dir>.work beside the output); "
                "finished tasks there are skipped on a rerun"})
    keep_work_dir: bool = dataclasses.field(default=False, metadata={
        "help": "keep the work folder after a successful merge"})
    overwrite: bool = dataclasses.field(default=False, metadata={
        "help": "replace a complete earlier prepare output in --output-dir (never anything else: a folder "
                "holding other files, or any input, is always refused)"})
    workers: int = dataclasses.field(default=1, metadata={
        "help": "document tasks run at once (processes on this machine; with --executor slurm or ray, the "
                "most tasks running at a time, 1: no limit there)", "aliases": ("--num-proc",)})
    write_rejected: bool = dataclasses.field(default=False, metadata={
        "help": "write dropped documents with their reasons to <output-dir>/rejected/ for inspection"})
    shuffle_bucket_mb: int = dataclasses.field(default=256, metadata={
        "help": "the output shuffle holds about this many MB of text at once (bounds peak memory)"})
    merge_memory_mb: int = dataclasses.field(default=64, metadata={
        "help": "the merge sorts dedup keys in on-disk buckets of about a quarter of this many MB each "
                "(the number of buckets follows from the number of documents; bounds peak memory)"})
    merge_buckets: int = dataclasses.field(default=0, metadata={
        "help": "number of on-disk key buckets of the merge (0: from --merge-memory-mb)"})

    def __post_init__(self) -> None:
        if not self.khmer and not self.english and not self.mix:
            raise ValueError("give at least one source with --khmer, --english or --mix")
        for flag, w in (("--khmer-weight", self.khmer_weight), ("--english-weight", self.english_weight)):
            if not (math.isfinite(w) and w >= 0):  # nan and inf would fail only after the shard phase
                raise ValueError(f"{flag} {w}: weights must be >= 0 and finite")
        normalize_weights(self.weights())  # raises on all-zero weights
        if self.khmer and self.khmer_weight <= 0 or self.english and self.english_weight <= 0:
            raise ValueError("a language with sources needs a positive weight (--khmer-weight / --english-weight)")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"--validation-fraction must be between 0 and 1, got {self.validation_fraction}")
        if not (math.isfinite(self.max_epochs) and self.max_epochs > 0):
            raise ValueError(f"--max-epochs must be a finite number > 0, got {self.max_epochs}")
        if self.min_validation_docs < 1:
            raise ValueError("--min-validation-docs must be at least 1")
        for name in ("khmer_min_share", "mixed_min_share", "latin_min_share", "max_dup_line_frac",
                     "max_dup_ngram_frac", "max_digit_frac", "max_symbol_frac", "max_url_frac"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"--{name.replace('_', '-')} must be between 0 and 1")
        if self.mixed_min_share > self.khmer_min_share:
            raise ValueError("--mixed-min-share must not exceed --khmer-min-share")
        self.parsed_source_weights()
        if self.target_chars < 0:
            raise ValueError("--target-chars must be >= 0")
        if not 0 <= self.temperature_alpha <= 1:
            raise ValueError("--temperature-alpha must be between 0 and 1")
        if self.num_shards < 0:
            raise ValueError("--num-shards must be >= 0")
        if self.shard_index is not None and not 0 <= self.shard_index < self.tasks():
            raise ValueError(f"--shard-index must be in 0..{self.tasks() - 1}")
        if self.shard_index is not None and self.merge_only:
            raise ValueError("--shard-index and --merge-only exclude each other")
        if self.shard_index is not None and self.executor != "local":
            raise ValueError(f"--shard-index runs one task here; with --executor {self.executor} leave it out")
        if self.workers < 1:
            raise ValueError("--workers must be at least 1")
        self.check_executor()
        if self.minhash_perm < 1 or self.minhash_bands < 1 or self.minhash_perm % self.minhash_bands:
            raise ValueError("--minhash-bands must divide --minhash-perm")
        if self.shuffle_bucket_mb < 1:
            raise ValueError("--shuffle-bucket-mb must be at least 1")
        if self.merge_memory_mb < 1:
            raise ValueError("--merge-memory-mb must be at least 1")
        if self.merge_buckets < 0:
            raise ValueError("--merge-buckets must be >= 0")
        if not (math.isfinite(self.toxic_min_hits_per_1k) and self.toxic_min_hits_per_1k > 0):
            raise ValueError("--toxic-min-hits-per-1k must be a finite number > 0")

    def parsed_source_weights(self) -> dict[str, float]:
        out = {}
        for item in self.source_weights:
            name, sep, w = item.rpartition("=")
            try:
                value = float(w)
            except ValueError:
                value = None
            if not sep or not name or value is None:
                raise ValueError(f"--source-weights {item!r}: expected NAME=WEIGHT, e.g. km:news.txt=2")
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"--source-weights {item!r}: weights must be >= 0 and finite")
            out[name] = value
        return out

    def tasks(self) -> int:
        """The number of document tasks: --num-shards, or one per worker."""
        return self.num_shards or self.workers

    def thresholds(self) -> RoutingThresholds:
        return RoutingThresholds(self.khmer_min_share, self.khmer_min_chars, self.mixed_min_share,
                                 self.latin_min_share)

    def weights(self) -> dict[str, float]:
        """Language weights of the languages given on the command line (both with a mix file)."""
        w = {}
        if self.khmer or self.mix:
            w["km"] = self.khmer_weight
        if self.english or self.mix:
            w["en"] = self.english_weight
        return w

    def filter_thresholds(self) -> FilterThresholds:
        return FilterThresholds(self.min_chars, self.min_words, self.max_dup_line_frac, self.max_dup_ngram_frac,
                                self.max_digit_frac, self.max_symbol_frac, self.max_url_frac)

    def read_options(self) -> ReadOptions:
        return ReadOptions(self.doc_mode, self.text_column, self.invalid_utf8, self.bad_records)

    def sources(self) -> list[Source]:
        """The declared sources, command line first, then the mix file; names made unique, weights
        from --source-weights applied. Reads the mix file (so it is not called in validation)."""
        out = [Source(p, "km") for p in self.khmer] + [Source(p, "en") for p in self.english]
        if self.mix:
            out += load_mix_file(self.mix)
        seen: collections.Counter = collections.Counter()
        for s in out:
            seen[s.name] += 1
            if seen[s.name] > 1:
                log.warning("two sources are named %s: the one from %s is %s#%d in the counts, weights and manifest",
                            s.name, s.path, s.name, seen[s.name])
                s.name = f"{s.name}#{seen[s.name]}"
        weights = self.parsed_source_weights()
        unknown = sorted(set(weights) - {s.name for s in out})
        if unknown:
            raise StageError(f"--source-weights names {unknown} match no source; the sources are "
                             f"{[s.name for s in out]}")
        for s in out:
            if s.name in weights:
                s.weight = weights[s.name]
        if self.mix_strategy != "temperature":  # checked before any work (the mixing plan needs it at the end)
            for lang in sorted({s.lang for s in out}):
                missing = unweighted({s.name: s.weight for s in out if s.lang == lang})
                if missing:
                    raise StageError(f"sources {missing} have no weight while others of their language do; give "
                                     f"every {lang} source a weight (--source-weights NAME=W or the mix file's "
                                     f"weight:), or none")
        return out

    def work_path(self) -> Path:
        out = Path(self.output_dir)
        return Path(self.work_dir) if self.work_dir else out.with_name(out.name + ".work")


def _task_settings(cfg: PrepareConfig, sources: list[Source]) -> dict:
    """What the document tasks' files depend on; a work folder made with other settings is redone."""
    keys = ("doc_mode", "text_column", "invalid_utf8", "bad_records", "min_chars", "min_words",
            "max_dup_line_frac", "max_dup_ngram_frac", "max_digit_frac", "max_symbol_frac",
            "max_url_frac", "near_dedup", "minhash_perm", "minhash_bands", "write_rejected", "khmer_min_share",
            "khmer_min_chars", "mixed_min_share", "latin_min_share")
    settings = {"config": {k: getattr(cfg, k) for k in keys}, "tasks": cfg.tasks(), "normalizer": NORMALIZER_VERSION,
                "engine": ENGINE_VERSION, "dedup_keys": KEYS_VERSION,
                "sources": [dict(source_identity(s), lang=s.lang) for s in sources]}
    if cfg.toxic_lexicon:  # only then: work made before the option existed stays valid without it
        settings["toxic_lexicon"] = {"min_hits_per_1k": cfg.toxic_min_hits_per_1k,
                                     "files": [[str(f), file_sha256(f)] for f in lexicon_files(cfg.toxic_lexicon)]}
    return settings


# 4: each task reads its stripe of the files, documents are numbered per file (tonsai.data.sharding);
# 3: each task counts what it read of its own documents (2: task 0 counted the whole input; its
# work folders are redone); 2: datatrove tasks; 1: tonsai's own shard runner, shard-* folders
ENGINE_VERSION = 4
TASK_OUTPUTS = ("docs", "read", "logs", "rejected")


def source_identity(source: Source) -> dict:
    """Paths with sizes and modification times (cheap), to notice changed inputs on a rerun: of
    every file, those inside a save_to_disk folder (or a local ``hf:`` folder) too, hidden ones
    (``.git``, ``.cache`` of ``hf download``) aside."""
    files = None
    if not source.is_hub:
        files = _file_stats(source.files())
    elif Path(source.hub_args()[0]).is_dir():
        files = _file_stats([Path(source.hub_args()[0])])
    return {"path": source.path, "name": source.name, "files": files, "text_column": source.text_column,
            "split": source.split, "revision": source.revision}


def _file_stats(paths: list[Path]) -> list[list]:
    out = []
    for p in paths:
        for f in folder_files(p) if p.is_dir() else [p]:
            st = f.stat()
            out.append([str(f), st.st_size, st.st_mtime_ns])
    return out


def changed_inputs(before: dict, now: dict) -> list[str]:
    """The input files of the same sources that differ (added, removed, another size or time)
    between two settings; none when the sources themselves differ (another command, not a change)."""
    if [s.get("path") for s in before.get("sources", [])] != [s.get("path") for s in now.get("sources", [])]:
        return []
    files = [{f[0]: f[1:] for s in settings.get("sources", []) for f in s.get("files") or []}
             for settings in (before, now)]
    return sorted(p for p in files[0].keys() | files[1].keys() if files[0].get(p) != files[1].get(p))


def _changed_note(before: dict | None, now: dict) -> str:
    changed = changed_inputs(before or {}, now)
    return f"; changed inputs: {', '.join(changed[:3])}{', ...' if len(changed) > 3 else ''}" if changed else ""


def _size(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def _settings_file(work: Path) -> Path:
    return work / "settings.json"


def _mark_stale(work: Path, why: str) -> None:
    """Record in the work folder's settings that its tasks must be redone (the next run that owns
    the folder redoes them; a --shard-index job is refused, with the remedy)."""
    path = _settings_file(work)
    if path.is_file():
        write_json(path, dict(json.loads(path.read_text(encoding="utf-8")), stale=why))


def _redo_hint(cfg: PrepareConfig) -> str:
    if cfg.merge_only or cfg.shard_index is not None:
        return (f"delete {cfg.work_path()} and run every --shard-index job again, then --merge-only (or run the "
                f"stage without --shard-index: it redoes the tasks; with --executor slurm, submit the same command "
                f"again)")
    return "rerun the same command: the tasks are redone"


def start_work(cfg: PrepareConfig, sources: list[Source]) -> None:
    """Make ``--work-dir`` hold files of these settings: files of other settings (or of the previous
    engine) are removed first, with a warning, so that no finished task of another run is reused."""
    work = cfg.work_path()
    streams = [s.path for s in sources if s.is_hub and not Path(s.hub_args()[0]).is_dir()]
    if streams and cfg.tasks() > 1:
        log.warning("%s: each of the %d document tasks streams the whole dataset from the Hub and keeps 1/%d of "
                    "the documents; for many tasks, download it first (hf download NAME --repo-type dataset "
                    "--local-dir DIR) and give the local folder: each task then reads its own files",
                    ", ".join(streams), cfg.tasks(), cfg.tasks())
    for file, size, tasks, stripe in crowded_inputs(sources, cfg.tasks()):
        log.warning("%s (%s) is shared by up to %d document tasks, and each reads it whole to find its part; "
                    "split it into files of under %s (its source over --num-shards), or Parquet files, and each "
                    "task reads only its own", file, _size(size), tasks, _size(stripe))
    settings = _task_settings(cfg, sources)
    path = _settings_file(work)
    old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    stored = json.loads(json.dumps(settings, default=str))  # as settings.json holds it
    if old == stored:
        return
    stale = [p for p in work.iterdir() if p.name in TASK_OUTPUTS or p.name.startswith("shard-")] if work.is_dir() else []
    if stale and cfg.shard_index is not None and old is not None:
        # one job of several sharing this folder: removing the others' finished tasks would lose their work
        if old.get("stale"):
            raise StageError(f"--work-dir {work}: {old['stale']}. Its tasks must all be redone: {_redo_hint(cfg)}")
        changed = _settings_diff(old, stored)
        remedy = (f"An input changed since the jobs in it ran: {_redo_hint(cfg)}" if changed_inputs(old, stored)
                  else "Run this job with the others' options, or give it another --work-dir")
        raise StageError(f"--work-dir {work} holds document tasks made with other settings or inputs "
                         f"({', '.join(changed) or 'inputs, tasks or normalizer'} differ{_changed_note(old, stored)}); "
                         f"every --shard-index job of one preparation needs the same options and inputs. {remedy}")
    if stale:
        log.warning("%s holds document tasks of other settings or inputs; redoing them", work)
    for p in stale:
        shutil.rmtree(p)
    work.mkdir(parents=True, exist_ok=True)
    write_json(path, settings)


def _settings_diff(old: dict, now: dict) -> list[str]:
    """What differs between two work-folder settings: option names, "inputs", "tasks", ..."""
    before, after = old.get("config", {}), now.get("config", {})
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    return changed + [{"sources": "inputs", "engine": "tonsai's engine version"}.get(k, k) for k in
                      ("sources", "tasks", "normalizer", "engine", "dedup_keys", "toxic_lexicon")
                      if old.get(k) != now.get(k)]


def _check_tasks_done(cfg: PrepareConfig, sources: list[Source]) -> None:
    work = cfg.work_path()
    path = _settings_file(work)
    made = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    now = json.loads(json.dumps(_task_settings(cfg, sources), default=str))
    if made is not None and made.get("stale"):
        raise StageError(f"--work-dir {work}: {made['stale']}. Its tasks must all be redone: {_redo_hint(cfg)}")
    if made is not None and made != now and changed_inputs(made, now):
        why = f"the inputs changed since the document tasks read them{_changed_note(made, now)}"
        _mark_stale(work, why)
        raise StageError(f"{why}. Leave them alone while the stage runs, and {_redo_hint(cfg)}")
    if made is None:
        raise StageError(f"{work} holds no document tasks: run the --shard-index jobs first (or drop --merge-only)")
    if made != now:  # another command than the jobs': its tasks stay as they are
        raise StageError(f"{work} holds document tasks made with other settings or inputs "
                         f"({', '.join(_settings_diff(made, now)) or 'settings'} differ); run --merge-only with the "
                         f"same options and inputs as the --shard-index jobs")
    missing = unfinished_tasks(work, cfg.tasks())
    if missing:
        raise StageError(f"document tasks {missing} of {cfg.tasks()} are not finished in {work}; run them with "
                         f"--shard-index, or drop --merge-only")


ID_BIN_SHIFT = 47  # 63-bit id hashes in 65,536 bins for the validation cut


def _validation(status: DiskArray, length: DiskArray, idh: DiskArray, lo: int, hi: int, fraction: float,
                min_docs: int) -> tuple[int, int]:
    """Mark a source's validation documents (slots ``lo:hi``): the surviving documents with the
    smallest id hashes, at least ``min_docs`` and ``fraction`` of them, always leaving one for
    training. Depends only on the ids that survive filtering and deduplication, so it stays the
    same when mixing weights change. Two passes over the slots: a histogram of the id hashes'
    top 16 bits finds the bin where the cut falls, then only that bin's documents are sorted (ties
    of equal hashes, i.e. equal ids, by slot). Returns (documents, characters) held out."""
    hist = np.zeros(1 << (63 - ID_BIN_SHIFT), dtype=np.int64)
    n_kept = 0
    for a, st in status.chunks(lo, hi):
        m = st == TRAIN
        n_kept += int(m.sum())
        hist += np.bincount(idh.read(a, a + len(st))[m] >> ID_BIN_SHIFT, minlength=len(hist))
    if n_kept < 2:
        return 0, 0
    n_val = min(n_kept - 1, max(min_docs, math.ceil(fraction * n_kept)))
    cum = np.cumsum(hist)
    cut = int(np.searchsorted(cum, n_val))  # the bin where the n_val-th smallest hash lies
    rest = n_val - (int(cum[cut - 1]) if cut else 0)
    chars = 0
    cand_h, cand_s = [], []
    for a, st in status.chunks(lo, hi):
        m = st == TRAIN
        h = idh.read(a, a + len(st))
        b = h >> ID_BIN_SHIFT
        below = m & (b < cut)
        if below.any():
            chars += int(length.read(a, a + len(st))[below].sum())
            st[below] = VALIDATION
            status.write(a, st)
        at = np.flatnonzero(m & (b == cut))
        cand_s.append(at + a)
        cand_h.append(h[at])
    cs, ch = np.concatenate(cand_s), np.concatenate(cand_h)
    take = np.sort(cs[np.lexsort((cs, ch))[:rest]])
    status.scatter(take, VALIDATION)
    chars += int(length.gather(take).sum())
    return n_val, chars


def merge(cfg: PrepareConfig, sources: list[Source], document_step_s: float | None = None) -> dict:
    """Phase 2: deduplicate, split, mix and write the output folder from finished shards.

    Memory does not grow with the corpus: every document has a *slot* (its file's offset plus its
    position in the file, from the tasks' counts, so slots sort like the input order;
    :mod:`tonsai.data.sharding`), and the per-slot arrays are
    files in ``<work>/merge`` (status 1 byte, characters 8, id hash 8, copies 4) read and written in
    slices of 1M slots. Dedup keys are partitioned on disk by hash (``--merge-memory-mb``) and
    processed one bucket at a time; only the colliding pairs of near duplicates (16 bytes a pair,
    about 40 while their components are found) and, while a
    source is planned for a fractional epoch, its shuffled order (4 bytes per training document of
    that source) are held in memory.
    """
    work = cfg.work_path()
    _check_tasks_done(cfg, sources)
    infos = task_infos(work, cfg.tasks())
    # only here: the fixed glibc thresholds cost the shard phase's numpy temporaries 40% of MinHash time
    release_memory_promptly()
    mdir = work / "merge"
    shutil.rmtree(mdir, ignore_errors=True)
    mdir.mkdir(parents=True)
    try:
        return _merge(cfg, sources, infos, work, mdir, document_step_s)
    finally:
        shutil.rmtree(mdir, ignore_errors=True)


@dataclasses.dataclass
class _Merge:
    """What the merge's steps share: the sources, the slot layout (``offs``: each source's first
    slot; ``unit_offs``: each input file's), the per-source counts, the per-slot files in ``mdir``,
    and time and memory per step."""

    cfg: PrepareConfig
    sources: list[Source]
    files: list[Path]  # the document tasks' files
    mdir: Path
    counts: dict[str, collections.Counter]
    offs: np.ndarray
    unit_offs: np.ndarray
    inputs: list[dict]
    workers: int
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    rss: dict[str, float] = dataclasses.field(default_factory=lambda: {"before_merge": peak_rss_mb()})

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sources]

    @property
    def lang_of(self) -> dict[str, str]:
        return {s.name: s.lang for s in self.sources}

    def array(self, name: str, dtype, create: bool = True) -> DiskArray:
        return DiskArray(self.mdir / name, dtype, int(self.offs[-1]), create=create)

    def done(self, step: str, t0: float) -> float:
        """Record a step's seconds and the peak RSS after it; returns the clock for the next."""
        self.timings[f"{step}_s"] = time.perf_counter() - t0
        self.rss[step] = peak_rss_mb()
        return time.perf_counter()

    def count_per_source(self, slots: np.ndarray, key: str) -> None:
        per = np.bincount(np.searchsorted(self.offs, slots, side="right") - 1, minlength=len(self.sources))
        for s, c in enumerate(per.tolist()):
            if c:
                self.counts[self.sources[s].name][key] += c


def _merge(cfg: PrepareConfig, sources: list[Source], infos: list[dict], work: Path, mdir: Path,
           document_step_s: float | None) -> dict:
    names = [s.name for s in sources]
    counts, skipped = _task_counts(infos, names)
    try:
        unit_offs, offs, inputs = unit_layout([i["units"] for i in infos], [absolute(s) for s in sources])
        if np.diff(offs).tolist() != [counts[n].get("read", 0) for n in names]:  # each document read by one task
            raise StageError(f"the document tasks read {[counts[n].get('read', 0) for n in names]} documents per "
                             f"source of {np.diff(offs).tolist()} they found: the inputs changed while the stage ran")
    except StageError as e:
        _mark_stale(work, str(e))  # the tasks disagree: redo them all
        raise StageError(f"{e}. Leave the inputs alone while the stage runs, and {_redo_hint(cfg)}") from e
    files = [docs_dir(work) / f"{i:05d}.parquet" for i in range(cfg.tasks())]
    m = _Merge(cfg, sources, files, mdir, counts, offs, unit_offs, inputs, merge_workers(files, cfg.workers))
    buckets = _deduplicate(m)
    t0 = time.perf_counter()
    val_per, val_chars, available, pool_len_of = _validation_and_pools(m)
    plan = _plan_mixture(m, available, pool_len_of)
    _mark_copies(m, plan["selection"], plan["plans"])
    m.done("split_and_plan", t0)
    return _write_output(m, work, infos, skipped, plan, val_per, val_chars, buckets, document_step_s)


def _task_counts(infos: list[dict], names: list[str]) -> tuple[dict[str, collections.Counter], dict]:
    """The document tasks' counts per source, and the first locations of skipped records by kind."""
    counts: dict[str, collections.Counter] = {n: collections.Counter(read=0) for n in names}  # an empty source too
    skipped: dict[str, dict[str, list]] = {}
    for info in infos:
        for n, c in info["counts"].items():
            counts[n].update(c)
        for n, by_kind in info.get("skipped_locations", {}).items():
            for kind, locs in by_kind.items():
                skipped.setdefault(n, {}).setdefault(kind, []).extend(locs)
    for by_kind in skipped.values():  # each task kept its first ones: the first of all, in input order
        for kind, locs in by_kind.items():
            by_kind[kind] = sorted(locs, key=_location_order)[:MAX_LOCATIONS]
    return counts, skipped


def _location_order(where: str) -> tuple[tuple[str, ...], int]:
    """``path:12``, ``path#row12``, ``path[12]`` as (the path's parts, 12): the order the files of a
    source are read in (``Source.files`` sorts paths, which compare part by part), then the line."""
    m = re.fullmatch(r"(.*?)(?::|#row|\[)(\d+)\]?", where)
    return (Path(m.group(1)).parts, int(m.group(2))) if m else (Path(where).parts, 0)


def _deduplicate(m: _Merge) -> dict[str, int]:
    """Mark exact and near duplicates in the status file (tonsai.data.dedup_steps); returns the
    bucket counts. Only the near-duplicate pairs are in memory, to be joined into clusters."""
    cfg, t0 = m.cfg, time.perf_counter()
    n_docs = sum(c.get("passed_filters", 0) for c in m.counts.values())
    bands, near_on = cfg.minhash_bands, bool(cfg.near_dedup and n_docs)
    budget = cfg.merge_memory_mb * 1_000_000 // 4  # a bucket's records; sorting needs a copy and an index
    # exact keys: one pass, at most MAX_OPEN buckets (flat up to MAX_OPEN x budget / 24 B = 340M documents)
    k_exact = min(MAX_OPEN, cfg.merge_buckets or num_buckets(n_docs, EXACT_RECORD.itemsize, budget))
    k_band = cfg.merge_buckets or num_buckets(n_docs * bands, BAND_RECORD.itemsize, budget)
    status = m.array("status.u8", np.uint8)
    for name, dtype in (("chars.i64", np.int64), ("idh.i64", np.int64)):
        m.array(name, dtype)  # created here, filled by the partition tasks
    args = (str(m.mdir.resolve()), [str(f.resolve()) for f in m.files], [int(x) for x in m.unit_offs], k_exact, k_band,
            bands)
    run_step(PartitionKeys(*args), len(m.files), m.workers, m.mdir)
    t0 = m.done("partition", t0)
    run_step(ExactBuckets(*args), k_exact, m.workers, m.mdir)
    dup = np.sort(saved(m.mdir / "exact_dups"))
    status.scatter(dup, EXACT_DUP)
    m.count_per_source(dup, "dropped:duplicate")
    del dup
    t0 = m.done("exact_dedup", t0)
    if near_on:
        for lo in range(0, k_band, MAX_OPEN):
            hi = min(k_band, lo + MAX_OPEN)
            run_step(PartitionBands(*args, lo=lo, hi=hi), len(m.files), m.workers, m.mdir)
            run_step(BandBuckets(*args, lo=lo, hi=hi), hi - lo, m.workers, m.mdir)
        pairs = saved(m.mdir / "pairs").reshape(-1, 2)
        near = pair_non_survivors(pairs[:, 0].copy(), pairs[:, 1].copy())
        del pairs
        trim_heap()
        status.scatter(near, NEAR_DUP)
        m.count_per_source(near, "dropped:near_duplicate")
    m.done("near_dedup", t0)
    return {"exact": k_exact, "near": k_band if near_on else 0}


def _validation_and_pools(m: _Merge):
    """The validation cut per source, then each source's training pool: the lengths of its
    training documents in slot order, in one file. Returns validation documents per source,
    validation characters, (documents, characters) available per source, and a function giving
    the lengths of a source's pool documents by index. Final counts are checked here."""
    status = m.array("status.u8", np.uint8, create=False)
    length = m.array("chars.i64", np.int64, create=False)
    idh = m.array("idh.i64", np.int64, create=False)
    val_per, val_chars = [], 0
    for s in range(len(m.sources)):
        nv, cv = _validation(status, length, idh, int(m.offs[s]), int(m.offs[s + 1]), m.cfg.validation_fraction,
                             m.cfg.min_validation_docs)
        val_per.append(nv)
        val_chars += cv
    pool_len = m.array("pool_chars.i64", np.int64)
    pool_off: dict[str, int] = {}
    available: dict[str, tuple[int, int]] = {}
    filled = 0
    for s, n in enumerate(m.names):
        pool_off[n] = filled
        kept = chars = 0
        for a, st in status.chunks(int(m.offs[s]), int(m.offs[s + 1])):
            kept += int(np.isin(st, (TRAIN, VALIDATION)).sum())
            ln = length.read(a, a + len(st))[st == TRAIN]
            pool_len.write(filled, ln)
            filled += len(ln)
            chars += int(ln.sum())
        available[n] = (filled - pool_off[n], chars)
        m.counts[n]["kept"] = kept
        m.counts[n]["validation"] = val_per[s]
        m.counts[n]["train_pool"] = kept - val_per[s]
    _check_accounting(m.counts)  # the counts are final here: check before hours of writing, and write nothing
    return val_per, val_chars, available, lambda name, idx: pool_len.gather(pool_off[name] + idx)


def _plan_mixture(m: _Merge, available: dict[str, tuple[int, int]], pool_len_of) -> dict:
    """The mixing plan (tonsai.data.mix) after the checks of empty languages and unmet shares."""
    cfg, sources = m.cfg, m.sources
    warnings = _empty_source_warnings(sources, m.counts) + _invalid_utf8_warnings(sources, m.counts)
    lang_weights = {"km": cfg.khmer_weight, "en": cfg.english_weight}
    langs = sorted({s.lang for s in sources})
    requested = normalize_weights({lang: lang_weights[lang] for lang in langs})
    empty = [lang for lang in langs if not any(available[s.name][0] for s in sources if s.lang == lang)]
    for lang in empty:
        what = (f"no {lang} documents are left after filtering and deduplication "
                f"({_dropped_summary([s.name for s in sources if s.lang == lang], m.counts)})")
        if len(empty) == len(langs):
            raise StageError(f"{what}: nothing to write. Check the inputs and the filter thresholds")
        if not cfg.allow_unmet_shares:
            raise StageError(f"{what}: the requested {lang} share cannot be met. Check the {lang} inputs and the "
                             f"filter thresholds, or pass --allow-unmet-shares to write the mixture without {lang}")
        warnings.append(f"{what}; --allow-unmet-shares: the mixture has no {lang}")
        lang_weights[lang] = 0.0
    for w in warnings:
        log.warning("%s", w)
    max_epochs = {s.name: s.max_epochs or cfg.max_epochs for s in sources}
    weighted = [s.name for s in sources if s.weight is not None]
    if cfg.mix_strategy == "temperature" and weighted:
        warnings.append(f"--mix-strategy temperature shares sources inside a language by characters**alpha too: "
                        f"the weights of {', '.join(weighted)} (--source-weights or the mix file) are ignored; use "
                        f"--mix-strategy weights or unimax to apply them")
        log.warning("%s", warnings[-1])
    try:
        shares = source_shares(
            [{"name": s.name, "lang": s.lang, "weight": s.weight, "chars": available[s.name][1],
              "max_epochs": max_epochs[s.name]} for s in sources],
            lang_weights, cfg.mix_strategy, cfg.temperature_alpha, cfg.target_chars or None, max_epochs)
        selection, plans, total, reached = plan_sources_lazy(available, pool_len_of, m.lang_of, shares, max_epochs,
                                                             cfg.seed, cfg.target_chars or None)
    except ValueError as e:
        raise StageError(str(e)) from e
    unmet = _unmet_shares(requested if cfg.mix_strategy == "weights" else None, plans)
    _check_shares(unmet, available, m.counts, m.lang_of, cfg.allow_unmet_shares, empty, warnings,
                  cfg.target_chars)
    if not reached:  # in the manifest's warnings too, as every warning of the plan
        warnings.append(f"--target-chars {cfg.target_chars} cannot be reached within the sources' max epochs: the "
                        f"mixture has {total} characters; raise --max-epochs or add data")
        log.warning("%s", warnings[-1])
    return {"selection": selection, "plans": plans, "total": total, "reached": reached, "unmet": unmet,
            "warnings": warnings, "max_epochs": max_epochs}


def _mark_copies(m: _Merge, selection: dict, plans: dict) -> None:
    """Each training document's number of copies in the mixture, in the copies file."""
    status = m.array("status.u8", np.uint8, create=False)
    copies = m.array("copies.i32", np.int32)
    for s, n in enumerate(m.names):
        full, extra = selection[n]
        m.counts[n]["train_selected"] = plans[n].selected_docs
        rank = 0
        for a, st in status.chunks(int(m.offs[s]), int(m.offs[s + 1])):
            pool = np.flatnonzero(st == TRAIN)
            ranks = rank + np.arange(len(pool))
            c = np.zeros(len(st), dtype=np.int32)
            pos = np.searchsorted(extra, ranks)
            c[pool] = full + ((pos < len(extra)) & (extra[np.minimum(pos, len(extra) - 1)] == ranks)
                              if len(extra) else 0)
            copies.write(a, c)
            rank += len(pool)
        del extra
    selection.clear()


def _write_output(m: _Merge, work: Path, infos: list[dict], skipped: dict, plan: dict, val_per: list[int],
                  val_chars: int, buckets: dict[str, int], document_step_s: float | None) -> dict:
    """Write the shuffled splits (tonsai.data.splitwrite) and manifest.json into a staged folder."""
    cfg, sources, lang_of = m.cfg, m.sources, m.lang_of
    plans, unmet = plan["plans"], plan["unmet"]
    mixture, mixture_sources = _mixture_report(sources, plans)
    for lang, u in unmet.items():
        mixture[lang]["requested_share"] = u["requested_share"]  # the user's, not the planned 0 of an empty language
    val_docs_per_lang = collections.Counter()
    for s, n in enumerate(m.names):
        val_docs_per_lang[lang_of[n]] += int(val_per[s])
    for name in m.names:
        log.info("%s", accounting_line(name, m.counts[name]))
    for lang, mx in mixture.items():
        log.info("%s: %.2f%% of training characters (requested %.2f%%), %d docs, %.2f epochs; %d validation docs",
                 lang, 100 * mx["realized_share"], 100 * mx["requested_share"], mx["selected_docs"], mx["epochs"],
                 val_docs_per_lang[lang])
    t0 = time.perf_counter()
    train_chars = int(sum(p.selected_chars for p in plans.values()))
    with staged_dir(cfg.output_dir) as tmp:
        if cfg.write_rejected:
            (tmp / "rejected").mkdir()
            for r in sorted((work / "rejected").glob("*.jsonl.gz")):
                shutil.copy(r, tmp / "rejected" / f"filters-{r.name}")
        shuffle = {"train": buckets_for(train_chars, cfg.shuffle_bucket_mb),
                   "validation": buckets_for(val_chars, cfg.shuffle_bucket_mb)}
        rows = write_splits(m.files, m.unit_offs, m.names, [lang_of[n] for n in m.names], m.mdir, tmp, cfg.seed, shuffle,
                            cfg.write_rejected, m.workers)
        m.done("write", t0)
        manifest = write_manifest(
            tmp, STAGE, cfg, inputs=m.inputs,
            sources=[{"name": s.name, "lang": s.lang, "path": s.path, "weight": s.weight,
                      "max_epochs": plan["max_epochs"][s.name]} for s in sources],
            counts={n: dict(c) for n, c in m.counts.items()},
            counts_by_lang=_counts_by_lang(m.counts, lang_of),
            skipped_record_locations=skipped,
            mixture=mixture,
            mixture_sources=mixture_sources,
            mixture_total_chars=plan["total"],
            target_chars=cfg.target_chars or None,
            target_reached=plan["reached"],
            unmet_shares=unmet,
            warnings=plan["warnings"],
            splits=rows,
            validation_docs_per_lang=dict(val_docs_per_lang),
            mixing_unit="characters of normalized text (a Khmer character is 3 UTF-8 bytes; token shares "
                        "depend on the tokenizer: the tokens manifest written by tokenize_dataset.py or "
                        "train_gpt2.py states them as train_token_shares)",
            seed=cfg.seed,
            document_tasks=cfg.tasks(),
            dedup_keys=KEYS_VERSION,
            executor=cfg.executor,
            merge_buckets=buckets,
            document_step_s=None if document_step_s is None else round(document_step_s, 3),
            merge_timings_s={k: round(v, 3) for k, v in m.timings.items()},
            peak_rss_mb_after={k: round(v) for k, v in m.rss.items()},
            shard_timings=[{"shard": i["shard"], "elapsed_s": i.get("elapsed_s"), "bytes_in": i.get("bytes_in"),
                            "inputs_opened": len(i["units"]), "worker_step_s": i.get("worker_step_s"),
                            "peak_rss_mb": i.get("peak_rss_mb")}
                           for i in infos],
        )
    log.info("wrote %s (train %d docs, validation %d docs)", cfg.output_dir, rows["train"], rows["validation"])
    return manifest


def _counts_by_lang(counts: dict[str, collections.Counter], lang_of: dict[str, str]) -> dict:
    out: dict[str, collections.Counter] = {}
    for n, c in counts.items():
        out.setdefault(lang_of[n], collections.Counter()).update(c)
    return {k: dict(v) for k, v in out.items()}


def _check_accounting(counts: dict) -> None:
    """Every document read is kept or dropped with a reason; a mismatch is a bug, not bad input."""
    for name, c in counts.items():
        dropped = sum(v for k, v in c.items() if k.startswith("dropped:"))
        if c.get("read", 0) != c.get("kept", 0) + dropped:
            raise StageError(f"source {name}: {c.get('read', 0)} documents read but {c.get('kept', 0)} kept + "
                             f"{dropped} dropped ({dict(c)}); this is a tonsai bug, please report it with "
                             f"the command line")


SHARE_TOLERANCE = 0.05  # a language's realized share may miss the requested by this much (whole documents)


def _dropped_summary(names: list[str], counts: dict) -> str:
    """"N documents read; dropped: reason n, ..." over the sources ``names``, largest reasons first."""
    drops: collections.Counter = collections.Counter()
    for n in names:
        drops.update({k.removeprefix("dropped:"): v for k, v in counts[n].items() if k.startswith("dropped:") and v})
    read = sum(counts[n].get("read", 0) for n in names)
    held = sum(counts[n].get("validation", 0) for n in names)
    return (f"{read} documents read" + (f", {held} held out for validation by --validation-fraction and "
                                        f"--min-validation-docs" if held else "")
            + (f"; dropped: {', '.join(f'{r} {c}' for r, c in drops.most_common(3))}" if drops else ""))


def _empty_source_warnings(sources: list[Source], counts: dict) -> list[str]:
    """A line for every source that kept no document, with its top drop reason and what it suggests."""
    out = []
    for s in sources:
        c = counts[s.name]
        if c.get("kept", 0):
            continue
        drops = collections.Counter({k.removeprefix("dropped:"): v for k, v in c.items() if k.startswith("dropped:")})
        top = drops.most_common(1)[0][0] if drops else None
        routed = top.split("_")[1] if top and top.startswith("script_") else None
        hint = (f": its text is {routed}; was it meant for {'--khmer' if routed == 'km' else '--english'} "
                f"(lang: {routed} in a mix file)?" if routed in ("km", "en") else
                ": its documents repeat those of other sources" if top in ("duplicate", "near_duplicate") else
                ": --write-rejected writes the dropped documents for inspection" if top else "")
        out.append(f"source {s.name} ({s.path}) kept 0 of its {c.get('read', 0)} documents"
                   + (f"; top drop reason {top} ({drops[top]}){hint}" if top else ""))
    return out


INVALID_UTF8_WARN = 0.01  # share of a source's documents with invalid UTF-8 that is worth a warning


def _invalid_utf8_warnings(sources: list[Source], counts: dict) -> list[str]:
    """A line for every source with many lines that are not UTF-8: a file in another encoding, or
    not text at all."""
    out = []
    for s in sources:
        bad, read = counts[s.name].get("invalid_utf8_lines", 0), counts[s.name].get("read", 0)
        if bad and bad >= INVALID_UTF8_WARN * max(1, read):
            out.append(f"source {s.name} ({s.path}): {bad} of its lines are not valid UTF-8 (against {read} "
                       f"documents read): is it a text file in UTF-8? Convert it (iconv -f ENCODING -t UTF-8), "
                       f"or --invalid-utf8 skip drops such lines")
    return out


def _unmet_shares(requested: dict[str, float] | None, plans: dict) -> dict[str, dict]:
    """Languages that get nothing of a positive request, or miss it by more than SHARE_TOLERANCE.
    ``requested``: the language weights, or None for the strategies that derive shares from the
    data (then the planned shares)."""
    chars: collections.Counter = collections.Counter()
    planned: collections.Counter = collections.Counter()
    for p in plans.values():
        chars[p.lang] += p.selected_chars
        planned[p.lang] += p.share
    total = sum(chars.values())
    unmet = {}
    for lang, want in (requested or dict(planned)).items():
        got = chars[lang] / total if total else 0.0
        if abs(got - want) > SHARE_TOLERANCE or (want > 0 and got == 0):
            unmet[lang] = {"requested_share": want, "realized_share": got}
    return unmet


def _check_shares(unmet: dict[str, dict], available: dict[str, tuple[int, int]], counts: dict,
                  lang_of: dict[str, str], allowed: bool, empty: list[str], warnings: list[str],
                  target_chars: int = 0) -> None:
    """A language that gets nothing of its request is an error (with ``allowed`` a warning); a share
    that is only off is a warning. The planner sizes the mixture by the scarcest source, so a share
    can only be off when whole documents are coarse against a small mixture (few documents left after
    filtering and deduplication); ``empty`` languages are warned of already."""
    if not unmet or set(unmet) <= set(empty):
        return
    lines = []
    for lang, u in sorted(unmet.items()):
        docs = sum(available[n][0] for n in available if lang_of[n] == lang)
        chars = sum(available[n][1] for n in available if lang_of[n] == lang)
        lines.append(f"{lang}: {100 * u['requested_share']:.1f}% of the training characters requested, "
                     f"{100 * u['realized_share']:.1f}% realized ({docs:,} training document(s) of {chars:,} "
                     f"characters left: {_dropped_summary([n for n in counts if lang_of[n] == lang], counts)})")
    what = "the requested language shares cannot be met: " + "; ".join(lines)
    # the planner sizes the mixture by the language with the fewest characters for its share
    chars_of = {lang: sum(c for n, (_, c) in available.items() if lang_of[n] == lang) for lang in unmet}
    short = min((lang for lang, u in unmet.items() if u["requested_share"] > 0),
                key=lambda lang: chars_of[lang] / unmet[lang]["requested_share"], default=None)
    starved = [lang for lang, u in unmet.items() if lang not in empty and u["requested_share"] > 0
               and u["realized_share"] == 0]
    if short is not None and starved and short not in starved:
        what += (f". The mixture is sized by {short}, the short language: {chars_of[short]:,} characters left for "
                 f"its share, so {' and '.join(starved)} rounds to no whole document")
    advice = (f"sources contribute whole documents, at most --max-epochs passes: add data to the short language"
              f"{f' ({short})' if short else ''}, or raise its max_epochs or --max-epochs")
    wanted = [lang for lang, u in unmet.items() if u["requested_share"] > 0]
    if target_chars and starved and set(starved) == set(wanted):  # no language got a whole document
        advice = (f"--target-chars {target_chars} is smaller than a whole document of each language's share: "
                  f"raise it (sources contribute whole documents)")
    if starved and not allowed:
        rest = "" if set(starved) == set(wanted) else (f", or pass --allow-unmet-shares to write the mixture "
                                                       f"without {' and '.join(starved)}")
        raise StageError(f"{what}. {advice[0].upper()}{advice[1:]}{rest}")
    warnings.append(f"{what}; " + ("accepted (--allow-unmet-shares)" if starved or empty else advice))
    log.warning("%s", warnings[-1])


def _mixture_report(sources: list[Source], plans: dict) -> tuple[dict, dict]:
    total = sum(p.selected_chars for p in plans.values())
    by_lang: dict[str, dict] = {}
    for s in sources:
        p = plans[s.name]
        m = by_lang.setdefault(s.lang, {"requested_share": 0.0, "available_chars": 0, "selected_chars": 0,
                                        "selected_docs": 0})
        m["requested_share"] += p.share
        m["available_chars"] += p.available_chars
        m["selected_chars"] += p.selected_chars
        m["selected_docs"] += p.selected_docs
    for m in by_lang.values():
        m["realized_share"] = m["selected_chars"] / total if total else 0.0
        m["epochs"] = round(m["selected_chars"] / m["available_chars"], 4) if m["available_chars"] else 0.0
    per_source = {s.name: {"lang": s.lang, "requested_share": plans[s.name].share,
                           "realized_share": plans[s.name].selected_chars / total if total else 0.0,
                           "available_chars": plans[s.name].available_chars,
                           "selected_chars": plans[s.name].selected_chars,
                           "selected_docs": plans[s.name].selected_docs,
                           "epochs": round(plans[s.name].epochs, 4),
                           "max_epochs": plans[s.name].max_epochs} for s in sources}
    return by_lang, per_source


def _input_paths(cfg: PrepareConfig, sources: list[Source]) -> list[Path]:
    """Local paths the stage reads: the output and work folders must stay apart from them."""
    paths = [static_prefix(s.path) for s in sources if not s.is_hub]
    paths += [Path(s.hub_args()[0]) for s in sources if s.is_hub and Path(s.hub_args()[0]).is_dir()]
    return paths + ([Path(cfg.mix)] if cfg.mix else [])


def run_prepare(cfg: PrepareConfig) -> dict:
    """Run the prepare stage and return its manifest (with --shard-index, that task's summary; with
    --executor slurm, the submitted jobs).

    The output folder is claimed and locked for the whole run (tonsai.folders); a --shard-index job
    locks only the work folder's settings check, so that task jobs of one preparation can share the
    work folder. Slurm jobs claim the output in the merge job."""
    os.environ.setdefault(ARROW_POOL_VARIABLE, "system")  # for the task processes (tonsai.data.ondisk)
    sources = cfg.sources()
    for s in sources:
        if not s.is_hub:
            s.files()  # a missing path or an empty folder stops here, before any work
    inputs = _input_paths(cfg, sources)
    work, out = cfg.work_path(), Path(cfg.output_dir)
    if work.resolve() == out.resolve() or work.resolve().is_relative_to(out.resolve()):
        raise StageError(f"--work-dir {work} must not be --output-dir {out} or inside it: choose a folder beside it")
    legacy = ("shard-*", ".shard-*.lock", "merge", "settings.json", *TASK_OUTPUTS)
    claim_work = claim_in_place(work, WORK_STAGE, inputs=inputs, flag="--work-dir", legacy=legacy,
                                lock=cfg.shard_index is None)
    if cfg.shard_index is not None:
        with claim_work:
            start_work(cfg, sources)
            run_docs_local(cfg, sources, work)
            left = unfinished_tasks(work, cfg.tasks())
            log.info("document task %d of %d is done in %s; %s", cfg.shard_index, cfg.tasks(), work,
                     f"{len(left)} task(s) left before --merge-only: {left[:10]}{' ...' if len(left) > 10 else ''}"
                     if left else "every task is done: run the same command with --merge-only instead of --shard-index")
            return {"task": cfg.shard_index, "tasks": cfg.tasks(), "work_dir": str(work)}
    if cfg.executor == "slurm":
        check_output_dir(out, STAGE, inputs=inputs, overwrite=cfg.overwrite)
        with claim_work:
            start_work(cfg, sources)
        return submit_slurm(cfg, sources, work)
    with claim_output(out, STAGE, inputs=inputs, overwrite=cfg.overwrite), claim_work:
        return _run_prepare(cfg, sources)


def _run_prepare(cfg: PrepareConfig, sources: list[Source]) -> dict:
    work = cfg.work_path()
    wall = None
    if not cfg.merge_only:
        start_work(cfg, sources)
        t0 = time.perf_counter()
        (run_docs_ray if cfg.executor == "ray" else run_docs_local)(cfg, sources, work)
        wall = time.perf_counter() - t0
        log.info("document tasks done in %.1f s", wall)
    manifest = merge(cfg, sources, wall)
    if not cfg.keep_work_dir:
        shutil.rmtree(work, ignore_errors=True)
    return manifest
