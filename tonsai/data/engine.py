"""The prepare stage's document step as a datatrove pipeline, on one machine, Slurm or Ray.

The document step (read, normalize, route, filter, dedup keys; :mod:`tonsai.data.blocks`) runs as
``--num-shards`` datatrove tasks (default: ``--workers``); task ``i`` reads the ``i``-th of ``N``
stripes of each source's files (:mod:`tonsai.data.sharding`), so the dataset is the same for any
number of tasks. datatrove's executor runs them
and marks each finished task in ``<work>/logs/docs/completions/``, so a rerun (after a crash, a
kill -9 or a preempted node) skips finished tasks. The merge (:func:`tonsai.data.prepare.merge`)
then deduplicates, splits, mixes and writes the dataset from the tasks' files.

- ``--executor local`` (default): ``--workers`` tasks at a time in processes on this machine.
- ``--executor slurm``: one sbatch array job for the document tasks and a one-task merge job that
  starts after it (``afterok``); the command returns once both are submitted. Every job runs in the
  Python environment that submitted it, in the same folder.
- ``--executor ray``: the document tasks on a Ray cluster (``--ray-address``, else a local Ray
  instance started for the run), then the merge here. Paths must be on a filesystem that every
  node sees.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
from pathlib import Path

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.base import PipelineStep

from tonsai.errors import StageError
from tonsai.data.blocks import (DedupKeys, KeyedDocsWriter, KhmerNormalizer, LengthFilter, QualityFilter,
                                ReaderSkips, ScriptRouter, SourceReader, ToxicLexiconFilter, read_summary,
                                rejected_writer, split_count_key)
from tonsai.data.sources import HF_PREFIX, Source
from tonsai.executors import FinalStep, forget_ranks, local_executor, run_on_ray, slurm_executor, unfinished_ranks
from tonsai.safety.lexicon import load_lexicon

log = logging.getLogger(__name__)


def docs_dir(work: Path) -> Path:
    return work / "docs"


def logs_dir(work: Path, step: str = "docs") -> Path:
    return work / "logs" / step


def absolute(source: Source) -> Source:
    """The source with an absolute path (a local ``hf:`` folder too): tasks on Ray or Slurm nodes
    do not run in the folder the command was typed in."""
    out = copy.copy(source)
    if not source.is_hub:
        out.path = os.path.abspath(source.path)
    elif Path(source.hub_args()[0]).is_dir():
        out.path = HF_PREFIX + os.path.abspath(source.hub_args()[0]) + source.path[len(HF_PREFIX) + len(
            source.hub_args()[0]):]
    return out


def docs_pipeline(cfg, sources: list[Source], work: Path) -> list[PipelineStep]:
    """The document step for ``cfg`` (a PrepareConfig): tonsai's blocks from reader to writer."""
    sources, work = [absolute(s) for s in sources], work.resolve()
    rejected = (lambda block: rejected_writer(str(work / "rejected"), block)) if cfg.write_rejected else (lambda b: None)
    return [
        SourceReader(sources, cfg.read_options(), summary_dir=str(work / "read")),
        KhmerNormalizer(),
        ReaderSkips(exclusion_writer=rejected("reader")),
        LengthFilter(cfg.min_chars, exclusion_writer=rejected("length")),
        ScriptRouter(thresholds=cfg.thresholds(), exclusion_writer=rejected("script")),
        QualityFilter(cfg.filter_thresholds(), exclusion_writer=rejected("quality")),
        *([ToxicLexiconFilter(load_lexicon(cfg.toxic_lexicon), cfg.toxic_min_hits_per_1k,
                              exclusion_writer=rejected("toxic"))] if cfg.toxic_lexicon else []),
        DedupKeys(cfg.near_dedup, cfg.minhash_perm, cfg.minhash_bands),
        KeyedDocsWriter(str(docs_dir(work)), cfg.minhash_bands, locations=cfg.write_rejected),
    ]


def docs_executor(cfg, sources: list[Source], work: Path, ranks: range | None = None) -> LocalPipelineExecutor:
    ranks = ranks if ranks is not None else range(cfg.tasks())
    return local_executor(docs_pipeline(cfg, sources, work), tasks=cfg.tasks(),
                          workers=min(cfg.workers, len(ranks)) or 1, logging_dir=str(logs_dir(work.resolve())),
                          local_tasks=len(ranks), local_rank_offset=ranks.start)


def _docs_files(work: Path, tasks: int) -> list[Path]:
    return [docs_dir(work) / f"{r:05d}.parquet" for r in range(tasks)]


def unfinished_tasks(work: Path, tasks: int) -> list[int]:
    return unfinished_ranks(logs_dir(work), _docs_files(work, tasks))


def run_docs_local(cfg, sources: list[Source], work: Path) -> None:
    """Run this job's document tasks here (one with --shard-index, else every unfinished one)."""
    ranks = range(cfg.shard_index, cfg.shard_index + 1) if cfg.shard_index is not None else range(cfg.tasks())
    todo = [r for r in unfinished_tasks(work, cfg.tasks()) if r in ranks]
    if len(todo) < len(ranks):
        log.info("%d of %d document tasks are finished already; skipping them", len(ranks) - len(todo), len(ranks))
    if not todo:
        return
    forget_ranks(logs_dir(work), _docs_files(work, cfg.tasks()), todo)
    docs_executor(cfg, sources, work, ranks).run()


def _total(metric) -> float:
    return metric.get("total", 0) if isinstance(metric, dict) else metric


def task_infos(work: Path, tasks: int) -> list[dict]:
    """Per document task: counts per source (from datatrove's stats), what its reader recorded,
    times per block and peak RSS; the merge's view of the document step. A JSON file of which no
    task found a record with the text field is an error (as one reader of the whole file raises)."""
    infos = []
    text_fields: dict[tuple[str, str], list] = {}  # (source, JSON file) -> [records with text, error]
    for rank in range(tasks):
        raw = json.loads((logs_dir(work) / "stats" / f"{rank:05d}.json").read_text(encoding="utf-8"))
        counts: dict[str, dict[str, int]] = {}
        steps: dict[str, float] = {}
        peak = None
        for block in raw:  # datatrove's stats: a number, or a dict with its total
            steps[block["name"]] = round(_total(block["time_stats"]), 3)
            for label, metric in block["stats"].items():
                if label == "peak_rss_mb":
                    peak = _total(metric)
                parts = split_count_key(label)
                if parts:
                    key, source = parts
                    counts.setdefault(source, {})
                    counts[source][key] = counts[source].get(key, 0) + int(_total(metric))
        summary = read_summary(work / "read", rank)
        for kind in ("invalid_utf8_lines", "malformed_records"):  # of this task's documents
            for source, n in summary[kind].items():
                counts.setdefault(source, {})[kind] = n
        for source, files in summary.get("text_fields", {}).items():
            for path, (with_text, message) in files.items():
                fields = text_fields.setdefault((source, path), [0, None])
                fields[0] += with_text
                fields[1] = fields[1] or message
        infos.append({"shard": rank, "counts": counts, "skipped_locations": summary["skipped_locations"],
                      "units": summary["units"], "bytes_in": summary["bytes_in"], "worker_step_s": steps,
                      "elapsed_s": round(sum(steps.values()), 3), "peak_rss_mb": peak})
    for with_text, message in text_fields.values():  # each task saw part of the file
        if message and not with_text:  # --bad-records skip must not hide a wrong --text-column
            raise StageError(message)
    return infos


def submit_slurm(cfg, sources: list[Source], work: Path) -> dict:
    """Submit the document tasks and the merge to Slurm; return the job ids and scripts."""
    work = work.resolve()
    docs = slurm_executor(cfg, docs_pipeline(cfg, sources, work), tasks=cfg.tasks(), workers=cfg.workers,
                          job_name="tonsai-prepare-docs", logging_dir=str(logs_dir(work)))
    # the merge job: the same tasks, as many processes as its CPUs
    from tonsai.data.prepare import run_prepare  # here: tonsai.data.prepare imports this module

    merge_cfg = dict(dataclasses.asdict(cfg), num_shards=cfg.tasks(), workers=cfg.slurm_cpus_per_task,
                     executor="local", merge_only=True, shard_index=None)
    step = FinalStep("tonsai merge", run_prepare, type(cfg), merge_cfg)
    merge = slurm_executor(cfg, [step], tasks=1, workers=1, job_name="tonsai-prepare-merge",
                           logging_dir=str(logs_dir(work, "merge")), depends=docs)
    merge.run()
    out = {"docs_job": docs.job_id, "merge_job": merge.job_id,
           "docs_script": str(logs_dir(work) / "launch_script.slurm"),
           "merge_script": str(logs_dir(work, "merge") / "launch_script.slurm"), "output_dir": cfg.output_dir}
    log.info("submitted to Slurm: document tasks job %s, merge job %s (after it); %s appears when the merge "
             "is done (squeue -u $USER; logs in %s)", out["docs_job"], out["merge_job"], cfg.output_dir,
             work / "logs")
    return out


def run_docs_ray(cfg, sources: list[Source], work: Path) -> None:
    """Run the document tasks on Ray (an existing cluster at --ray-address, else a local instance)."""
    todo = unfinished_tasks(work, cfg.tasks())
    if not todo:
        return
    forget_ranks(logs_dir(work), _docs_files(work, cfg.tasks()), todo)
    run_on_ray(cfg, docs_pipeline(cfg, sources, work), tasks=cfg.tasks(), workers=cfg.workers,
               logging_dir=str(logs_dir(work.resolve())))
    left = unfinished_tasks(work, cfg.tasks())
    if left:
        raise StageError(f"document tasks {left} of {cfg.tasks()} failed on Ray; their logs, with the error, are "
                         f"in {logs_dir(work) / 'logs'}. Fix the cause and rerun the same command: finished tasks "
                         f"are kept")
