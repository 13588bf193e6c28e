"""Tokenization of a prepared dataset as datatrove tasks, on one machine, Slurm or Ray.

Each token folder (``train``, ``validation_<lang>``) is cut into contiguous ranges of documents:
task ``i`` of a folder cut into ``N`` gets documents ``[i*n/N, (i+1)*n/N)`` and writes the shard
``shard-<i>.bin``, so shard order is task order and the token stream is the same for any ``N``.
One datatrove pipeline runs every task of every folder (rank ``r`` is ``plan[r]``):
:class:`DatasetRangeReader` yields the range's documents, :class:`TokenShardWriter` tokenizes them
into tonsai's shard format (:func:`tonsai.tokenizer.shards.write_shard`; datatrove's own
DocumentTokenizer writes another format, with no per-token language runs or hashes that tonsai's
readers check).

Tasks write into ``<work>/shards/<folder>/`` (a task's files appear under their final names only
when it is done) and datatrove marks each finished task in ``<work>/logs/completions/``, so a
rerun after a crash or a kill -9 skips finished tasks. :func:`collect` then puts each folder's
shards in place at once (hard links, then a rename), with its ``meta.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from tonsai.atomic import staged_dir, write_json
from tonsai.data.prepared import load_splits
from tonsai.errors import StageError
from tonsai.executors import forget_ranks, local_executor, unfinished_ranks
from tonsai.tokenizer.shards import META, folder_meta, write_shard

# datasets (0.7 s to import on a 2-core machine) is imported inside tonsai.data.prepared.load_splits:
# tonsai.tokenizer.pack imports this module at the top, and tokenize_dataset.py --help must not pay it.

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Folder:
    """A token folder to write: a split, or one language of it, cut into ``tasks`` shards."""

    name: str
    split: str
    lang: str | None
    tasks: int


def plan(dataset_path: str, folders: list[Folder]) -> list[dict]:
    """One entry per task: its folder, split, language filter, document range and shard index."""
    dd = load_splits(dataset_path)
    specs = []
    for f in folders:
        n = len(dd[f.split])
        if n == 0:
            raise StageError(f"{Path(dataset_path).parent}: split {f.split!r} is empty")
        parts = max(1, min(f.tasks, n))
        specs += [{"folder": f.name, "split": f.split, "lang": f.lang, "start": n * i // parts,
                   "end": n * (i + 1) // parts, "shard": i} for i in range(parts)]
    return specs


def shard_dir(work: Path, spec: dict) -> Path:
    return work / "shards" / spec["folder"]


def counts_path(work: Path, spec: dict) -> Path:
    return shard_dir(work, spec) / f"shard-{spec['shard']:05d}.json"


def logs_dir(work: Path) -> Path:
    return work / "logs"


class DatasetRangeReader(PipelineStep):
    """Task ``rank`` reads the documents of ``plan[rank]``: a contiguous range of a split of the
    prepared dataset (only those of its language, if it has one), in order, with their language."""

    name = "tonsai dataset range"
    type = "📖 - READER"

    def __init__(self, dataset_path: str, specs: list[dict]):
        super().__init__()
        self.dataset_path, self.specs = dataset_path, specs

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if world_size != len(self.specs):
            raise ValueError(f"the tokenize pipeline has {len(self.specs)} tasks, not {world_size}")
        spec = self.specs[rank]
        ds = load_splits(self.dataset_path)[spec["split"]].select(range(spec["start"], spec["end"]))
        pos = spec["start"]
        for batch in ds.iter(batch_size=1000):
            for text, lang in zip(batch["text"], batch["lang"]):
                if spec["lang"] is None or lang == spec["lang"]:
                    self.stat_update("documents")
                    yield Document(text=text, id=f"{spec['split']}/{pos}", metadata={"lang": lang})
                pos += 1


class TokenShardWriter(PipelineStep):
    """Tokenize task ``rank``'s documents into its shard of ``plan[rank]``'s folder under ``work``.

    Files are written in a temporary folder and renamed when done, the counts (``shard-<i>.json``:
    tokens, documents, bytes, characters, languages) last. A mixed split (no language in the plan)
    records every token's language as runs beside the shard, for training's per-language counts."""

    name = "tonsai token shard"
    type = "🔢 - TOKENIZER"

    def __init__(self, tokenizer_json: str, work: str, specs: list[dict], batch_size: int = 1000,
                 threads: bool = True, normalized: bool = False):
        super().__init__()
        self.tokenizer_json, self.work, self.specs, self.batch_size = tokenizer_json, Path(work), specs, batch_size
        self.threads, self.normalized = threads, normalized

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if not self.threads:  # one CPU per task: the tokenizer's thread pool would only contend with the others
            os.environ["TOKENIZERS_PARALLELISM"] = "false"
        spec = self.specs[rank]
        name = f"shard-{spec['shard']:05d}"
        final = shard_dir(self.work, spec)
        tmp = final / f".tmp-{name}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        mixed = spec["lang"] is None
        texts = ((d.text, d.metadata["lang"]) if mixed else d.text for d in data)
        with self.track_time():
            counts = write_shard(texts, self.tokenizer_json, tmp / f"{name}.bin", self.batch_size, self.normalized)
        for key in ("tokens", "documents", "bytes", "characters"):
            self.stat_update(key, value=counts[key])
        for f in sorted(tmp.iterdir()):
            os.replace(f, final / f.name)
        tmp.rmdir()
        write_json(counts_path(self.work, spec), counts)
        return
        yield  # a generator: the executor drains it


def tokenize_pipeline(dataset_path: str, tokenizer_json: str, work: Path, specs: list[dict],
                      threads: bool = True, normalized: bool = False) -> list[PipelineStep]:
    """The tokenize tasks' pipeline; ``threads``: a task may use every CPU it sees (the tokenizer
    encodes each batch on a thread pool), false where tasks run side by side on one CPU each;
    ``normalized``: the dataset's text is in this tonsai's normalized form (see write_shard)."""
    return [DatasetRangeReader(os.path.abspath(dataset_path), specs),
            TokenShardWriter(os.path.abspath(tokenizer_json), str(work.resolve()), specs, threads=threads,
                             normalized=normalized)]


def start_work(work: Path, settings: dict) -> None:
    """Keep the work folder of an earlier run of the same plan (its finished tasks), else start afresh."""
    path = work / "settings.json"
    if path.is_file() and json.loads(path.read_text(encoding="utf-8")) != settings:
        log.info("the work folder %s was made for another plan (dataset, tokenizer or tasks); starting afresh", work)
        shutil.rmtree(work)
    if not path.is_file():
        work.mkdir(parents=True, exist_ok=True)
        write_json(path, settings)


def unfinished(work: Path, specs: list[dict]) -> list[int]:
    return unfinished_ranks(logs_dir(work), [counts_path(work, spec) for spec in specs])


def forget(work: Path, specs: list[dict], ranks: list[int]) -> None:
    """A task redone from scratch: its completion mark and counts go first."""
    forget_ranks(logs_dir(work), [counts_path(work, spec) for spec in specs], ranks)


def run_local(pipeline: list[PipelineStep], work: Path, specs: list[dict], workers: int) -> None:
    """Run the unfinished tasks here, ``workers`` processes at a time (1: in this process)."""
    todo = unfinished(work, specs)
    if len(todo) < len(specs):
        log.info("%d of %d tokenize tasks are finished already; skipping them", len(specs) - len(todo), len(specs))
    if not todo:
        return
    forget(work, specs, todo)
    local_executor(pipeline, tasks=len(specs), workers=max(1, min(workers, len(todo))),
                   logging_dir=str(logs_dir(work.resolve()))).run()


def check_finished(work: Path, specs: list[dict], where: str) -> None:
    left = unfinished(work, specs)
    if left:
        raise StageError(f"tokenize tasks {left} of {len(specs)} did not finish {where}; their logs, with the error, "
                         f"are in {logs_dir(work) / 'logs'}. Fix the cause and rerun the same command: finished "
                         f"tasks are kept")


def collect(out_root: Path, work: Path, specs: list[dict], tokenizer_dir: str | Path, dataset_sha: str) -> dict:
    """Link each folder's finished shards into ``out_root/<folder>`` with its meta.json (atomically)."""
    metas = {}
    for name in dict.fromkeys(s["folder"] for s in specs):
        mine = sorted((s for s in specs if s["folder"] == name), key=lambda s: s["shard"])
        shards = [json.loads(counts_path(work, s).read_text(encoding="utf-8")) for s in mine]
        split, lang = mine[0]["split"], mine[0]["lang"]
        with staged_dir(out_root / name) as tmp:
            for s, counts in zip(mine, shards):
                for f in shard_dir(work, s).glob(counts["file"].removesuffix(".bin") + ".*"):
                    if f.suffix != ".json":  # a link: the work folder stays whole until the end
                        os.link(f, tmp / f.name)
            meta = folder_meta(tokenizer_dir, shards, {"split": split, "lang": lang,
                                                         "dataset_manifest_sha256": dataset_sha})
            if meta["documents"] == 0:
                raise StageError(f"split {split!r} of the dataset has no {lang} documents")
            write_json(tmp / META, meta)
        log.info("tokenized %s%s: %d documents, %d tokens, %d shard(s)", split, f" ({lang})" if lang else "",
                 meta["documents"], meta["tokens"], len(shards))
        metas[name] = meta
    return metas
