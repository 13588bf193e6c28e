"""Tokenize documents and pack them into token shards, one folder per split and language.

Each document becomes its tokens followed by the end-of-text id, so packed blocks never need
padding and the model learns where documents end. A folder holds ``shard-NNNNN.bin`` files (raw
little-endian arrays of the narrowest dtype for the vocabulary) and ``meta.json``, which lists the
shards in order and names the dtype and the SHA-256 of the tokenizer.json that produced the ids;
readers refuse a mismatch. Tasks (datatrove's, :mod:`tonsai.tokenizer.tasks`; local processes,
Slurm or Ray) tokenize contiguous ranges of documents into their own shards, so the token order is
the same whatever the number of tasks.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
import shutil
from pathlib import Path
from typing import Iterable

import numpy as np

from tonsai.atomic import staged_dir, write_json
from tonsai.data.prepared import load_prepared
from tonsai.errors import StageError
from tonsai.executors import ExecutorOptions, FinalStep, run_on_ray, slurm_executor
from tonsai.folders import claim_in_place
from tonsai.manifest import MANIFEST_NAME, dataset_hash, tokenizer_hash, write_manifest
from tonsai.text.normalize import NORMALIZER_VERSION
from tonsai.tokenizer import tasks as token_tasks
from tonsai.tokenizer.shards import LANG_SUFFIX, META, folder_meta, write_shard
from tonsai.tokenizer.tasks import Folder

# torch (1.7 s to import on a 2-core machine) is imported inside PackedBlocks.__getitem__ only: the
# tokenize stage (tokenize_dataset.py, and its --help) imports this module and never needs torch.

log = logging.getLogger(__name__)
WORK = ".work"  # the tasks' files while they run, inside the output folder
STAGE = "tokens"


def pack_texts(texts: Iterable[str], tokenizer_dir: str | Path, out_dir: str | Path,
               batch_size: int = 1000, extra_meta: dict | None = None) -> dict:
    """Tokenize ``texts`` in this process into one shard; write the folder ``out_dir`` atomically."""
    with staged_dir(out_dir) as tmp:
        shard = write_shard(texts, str(Path(tokenizer_dir) / "tokenizer.json"), tmp / "shard-00000.bin", batch_size)
        meta = folder_meta(tokenizer_dir, [shard], extra_meta)
        write_json(tmp / META, meta)
    return meta


def pack_dataset_split(dataset_dir: str | Path, split: str, lang: str | None, tokenizer_dir: str | Path,
                       out_dir: str | Path, num_proc: int = 1) -> dict:
    """Tokenize one split (or one language of it) of a prepared dataset into ``out_dir`` with
    ``num_proc`` local tasks, each the shard of a contiguous range of documents."""
    out = Path(out_dir)
    folder = Folder(out.name, split, lang, num_proc)
    metas = _run_folders(dataset_dir, tokenizer_dir, out.parent, out.parent / f".{out.name}.work", [folder],
                         num_proc)
    return metas[out.name]


def _run_folders(dataset_dir, tokenizer_dir, out_root: Path, work: Path, folders: list, workers: int,
                 executor=None, finish_only: bool = False, finish_config: dict | None = None) -> dict:
    """Tokenize ``folders`` (:class:`tonsai.tokenizer.tasks.Folder`) as datatrove tasks whose files
    go to ``work``; return each folder's meta (with Slurm, the submitted jobs instead)."""
    dataset_path, tokenizer_json = str(Path(dataset_dir) / "dataset"), str(Path(tokenizer_dir) / "tokenizer.json")
    data_sha, tok_sha = dataset_hash(dataset_dir), tokenizer_hash(tokenizer_dir)
    specs = token_tasks.plan(dataset_path, folders)
    token_tasks.start_work(work, {"plan": specs, "tokenizer_sha256": tok_sha, "dataset_manifest_sha256": data_sha})
    kind = executor.executor if executor is not None else "local"
    threads = {"local": workers == 1, "slurm": getattr(executor, "slurm_cpus_per_task", 1) > 1, "ray": False}[kind]
    # text prepared with this tonsai's normalizer skips the tokenizer's own chain (the same ids, faster)
    manifest = json.loads((Path(dataset_dir) / MANIFEST_NAME).read_text(encoding="utf-8"))  # checked by the caller
    normalized = manifest.get("normalizer_version") == NORMALIZER_VERSION
    pipeline = token_tasks.tokenize_pipeline(dataset_path, tokenizer_json, work, specs, threads, normalized)
    if finish_only:
        token_tasks.check_finished(work, specs, "before the final job")
    elif kind == "slurm":
        return _submit_slurm(executor, pipeline, work, specs, workers, finish_config)
    elif kind == "ray":
        todo = token_tasks.unfinished(work, specs)
        if todo:
            token_tasks.forget(work, specs, todo)
            run_on_ray(executor, pipeline, tasks=len(specs), workers=workers,
                       logging_dir=str(token_tasks.logs_dir(work.resolve())))
        token_tasks.check_finished(work, specs, "on Ray")
    else:
        token_tasks.run_local(pipeline, work, specs, workers)
        token_tasks.check_finished(work, specs, "here")
    metas = token_tasks.collect(out_root, work, specs, tokenizer_dir, data_sha)
    # a Slurm run keeps its job logs (datatrove writes the final job's own after this returns)
    shutil.rmtree(work / "shards" if finish_only else work, ignore_errors=True)
    return metas


def _submit_slurm(opts, pipeline: list, work: Path, specs: list[dict], workers: int, finish_config: dict) -> dict:
    """Submit the tokenize tasks as an array job and the final step (meta files, manifest) as a
    one-task job that starts after it succeeded."""
    logs = token_tasks.logs_dir(work.resolve())
    todo = token_tasks.unfinished(work, specs)
    token_tasks.forget(work, specs, todo)
    shutil.rmtree(logs.parent / "finish" / "completions", ignore_errors=True)  # the final job always runs
    job = slurm_executor(opts, pipeline, tasks=len(specs), workers=workers, job_name="tonsai-tokenize",
                         logging_dir=str(logs))
    finish = FinalStep("tonsai tokenize finish", run_tokenize, TokenizeConfig, dict(finish_config, executor="local"),
                       finish_only=True)
    final = slurm_executor(opts, [finish], tasks=1, workers=1,
                           job_name="tonsai-tokenize-finish", logging_dir=str(logs.parent / "finish"), depends=job)
    final.run()
    out = {"tokenize_job": job.job_id, "finish_job": final.job_id, "tokenize_script": str(logs / "launch_script.slurm"),
           "finish_script": str(logs.parent / "finish" / "launch_script.slurm")}
    log.info("submitted to Slurm: tokenize tasks job %s, final job %s (after it); the token folders and "
             "manifest.json appear when it is done (squeue -u $USER; logs in %s)", out["tokenize_job"],
             out["finish_job"], logs.parent)
    return out


def pack_dataset(dataset_dir: str | Path, tokenizer_dir: str | Path, out_dir: str | Path, num_proc: int = 1,
                 config=None, *, tasks: int = 0, executor=None, finish_only: bool = False) -> dict[str, Path]:
    """Token folders for the train split (``tasks`` shards, default ``num_proc``) and each
    validation language (one shard), under ``out_dir``, with a manifest; ``num_proc`` tasks run at
    once. Folders that already exist for the same tokenizer and dataset are kept, and finished tasks
    of an interrupted run are skipped (a rerun resumes). ``executor`` (:class:`tonsai.executors.
    ExecutorOptions`) sends the tasks to Slurm or Ray; with Slurm this returns the submitted jobs."""
    dd, _ = load_prepared(dataset_dir)
    tok_sha = tokenizer_hash(tokenizer_dir)
    data_sha = dataset_hash(dataset_dir)
    wanted = [Folder("train", "train", None, tasks or num_proc)]
    wanted += [Folder(f"validation_{lang}", "validation", lang, 1) for lang in sorted(set(dd["validation"]["lang"]))]
    out_dir = Path(out_dir)
    todo = []
    for folder in wanted:
        path = out_dir / folder.name
        if (path / META).is_file():
            try:
                TokenFile(path, tok_sha, expect_dataset_sha256=data_sha)
                log.info("reusing token folder %s", path)
                continue
            except StageError as e:
                log.info("re-tokenizing %s: %s", path, e)
        todo.append(folder)
    if todo:
        slurm = executor is not None and executor.executor == "slurm"
        finish = dataclasses.asdict(config) if slurm else None  # the final job's TokenizeConfig
        jobs = _run_folders(dataset_dir, tokenizer_dir, out_dir, out_dir / WORK, todo, num_proc, executor,
                            finish_only, finish)
        if slurm and not finish_only:
            return jobs
    paths = {f.name: out_dir / f.name for f in wanted}
    folders = {n: json.loads((p / META).read_text()) for n, p in paths.items()}
    shares = token_shares(folders["train"])
    if shares:
        log.info("train tokens by language: %s", ", ".join(
            f"{lang} {v['token_share']:.1%} ({v['tokens_per_character']:.3f} tokens/char)"
            for lang, v in shares.items()))
    write_manifest(out_dir, STAGE, config or {}, dataset_dir=str(dataset_dir), tokenizer_dir=str(tokenizer_dir),
                   tokenizer_sha256=tok_sha, dataset_manifest_sha256=data_sha, train_token_shares=shares,
                   folders=folders)
    return paths


def token_shares(meta: dict) -> dict[str, dict[str, float]]:
    """Each language's share of a token folder's tokens and characters, and its tokens per character.

    Prepare mixes languages by characters; this is what that mix became in this tokenizer's tokens."""
    by_lang = meta.get("by_lang") or {}
    tokens = sum(v["tokens"] for v in by_lang.values())
    chars = sum(v["characters"] for v in by_lang.values())
    # tokens per character of the text itself (without the end-of-text after each document), as the
    # fertility report counts them
    return {lang: {"token_share": round(v["tokens"] / tokens, 4), "character_share": round(v["characters"] / chars, 4),
                   "tokens_per_character": round((v["tokens"] - v["documents"]) / max(1, v["characters"]), 4)}
            for lang, v in sorted(by_lang.items())} if tokens and chars else {}


class ShardedTokens:
    """Read-only concatenation of memory-mapped shards: ``len()``, slices and ``np.asarray``."""

    def __init__(self, arrays: list[np.ndarray], dtype: np.dtype):
        self.arrays = [a for a in arrays if len(a)]
        self.dtype = dtype
        self.starts = np.cumsum([0] + [len(a) for a in self.arrays])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, key: slice) -> np.ndarray:
        start, stop, step = key.indices(len(self))
        if step != 1:
            raise ValueError("ShardedTokens supports contiguous slices only")
        out = []
        first = int(np.searchsorted(self.starts, start, side="right")) - 1
        for i in range(max(first, 0), len(self.arrays)):
            lo, hi = int(self.starts[i]), int(self.starts[i + 1])
            if lo >= stop:
                break
            out.append(self.arrays[i][max(start, lo) - lo:min(stop, hi) - lo])
        return np.concatenate(out) if len(out) != 1 else out[0]

    def __array__(self, dtype=None, copy=None):
        arr = self[0:len(self)] if len(self) else np.zeros(0, self.dtype)
        return arr.astype(dtype) if dtype is not None else arr


class TokenFile:
    """A token folder opened read-only (shards memory-mapped), with its metadata checked."""

    def __init__(self, path: str | Path, expect_tokenizer_sha256: str | None = None,
                 expect_dtype: str | None = None, expect_dataset_sha256: str | None = None):
        self.path = Path(path)
        meta_path = self.path / META
        if not meta_path.is_file():
            raise StageError(f"{self.path} has no {META}: token files are incomplete; delete the folder and rerun")
        self.meta = json.loads(meta_path.read_text())
        if expect_tokenizer_sha256 and self.meta["tokenizer_sha256"] != expect_tokenizer_sha256:
            raise StageError(
                f"{self.path} was tokenized with another tokenizer (sha256 {self.meta['tokenizer_sha256'][:12]}, "
                f"expected {expect_tokenizer_sha256[:12]}); delete it to re-tokenize with --tokenizer-dir"
            )
        if expect_dataset_sha256 and self.meta.get("dataset_manifest_sha256") != expect_dataset_sha256:
            raise StageError(f"{self.path} was tokenized from another preparation of the dataset (its "
                             f"manifest.json changed since); delete it to re-tokenize")
        dtype = np.dtype(self.meta["dtype"])
        if dtype.name not in ("uint16", "uint32"):
            raise StageError(f"{meta_path}: unsupported token dtype {dtype.name}")
        if expect_dtype and dtype.name != expect_dtype:
            raise StageError(f"{self.path} stores {dtype.name} tokens but the tokenizer needs {expect_dtype}; "
                             f"delete it to re-tokenize")
        arrays = []
        for shard in self.meta["shards"]:
            file, n = self.path / shard["file"], shard["tokens"]
            size = file.stat().st_size if file.is_file() else -1
            if size != n * dtype.itemsize:
                raise StageError(f"{file} has {size} bytes, meta says {n} {dtype.name} tokens; re-tokenize")
            arrays.append(np.memmap(file, dtype=dtype, mode="r", shape=(n,)) if n else np.zeros(0, dtype))
        self.tokens = ShardedTokens(arrays, dtype)
        self.langs, self.lang_runs = self._lang_runs(dtype)

    def _lang_runs(self, dtype) -> tuple[list[str], np.ndarray | None]:
        """Languages and their token runs across all shards (None for folders made without them)."""
        langs: list[str] = []
        rows, offset = [], 0
        for shard in self.meta["shards"]:
            if "langs" not in shard:
                return [], None
            f = self.path / (shard["file"].removesuffix(".bin") + LANG_SUFFIX)
            if not f.is_file():
                raise StageError(f"{f} is missing (its meta.json lists languages); re-tokenize")
            runs = np.load(f)
            for lang in shard["langs"]:
                if lang not in langs:
                    langs.append(lang)
            remap = np.asarray([langs.index(x) for x in shard["langs"]], dtype=np.int64)
            rows.append(np.stack([runs[:, 0] + offset, remap[runs[:, 1]]], axis=1))
            offset += shard["tokens"]
        return (langs, np.concatenate(rows)) if rows else ([], None)

    def lang_counts(self, start: int, stop: int) -> np.ndarray:
        """Tokens of each language (in ``self.langs`` order) among positions start..stop-1."""
        out = np.zeros(len(self.langs), dtype=np.int64)
        ends = self.lang_runs[:, 0]
        i = int(np.searchsorted(ends, start, side="right"))
        pos = start
        while pos < stop and i < len(ends):
            end = min(int(ends[i]), stop)
            out[int(self.lang_runs[i, 1])] += end - pos
            pos = end
            i += 1
        return out

    def __len__(self) -> int:
        return len(self.tokens)


class PackedBlocks:
    """Fixed-length blocks cut from a token stream, as a map-style torch dataset: whole blocks only,
    no padding (the tail shorter than a block is not used). Validation does not use blocks: it
    scores the whole stream over sliding windows (tonsai.train.trainer.ValidationStream)."""

    def __init__(self, tokens, block_size: int, token_file: "TokenFile | None" = None):
        self.tokens = tokens
        # with a token file that knows each token's language, items carry "lang_tokens" counts
        self.token_file = token_file if token_file is not None and token_file.lang_runs is not None else None
        self.block_size = block_size
        self.n = len(tokens) // block_size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        import torch

        if not 0 <= i < self.n:
            raise IndexError(i)
        chunk = np.asarray(self.tokens[i * self.block_size:(i + 1) * self.block_size], dtype=np.int64)
        ids = torch.from_numpy(chunk)
        item = {"input_ids": ids, "labels": ids.clone()}
        if self.token_file is not None:
            item["lang_tokens"] = torch.from_numpy(
                self.token_file.lang_counts(i * self.block_size, (i + 1) * self.block_size))
        return item


@dataclasses.dataclass
class TokenizeConfig(ExecutorOptions):
    """Options of scripts/tokenize_dataset.py."""

    dataset_dir: str = dataclasses.field(metadata={"help": "folder written by prepare_dataset.py"})
    tokenizer_dir: str = dataclasses.field(metadata={"help": "folder written by train_tokenizer.py"})
    output_dir: str = dataclasses.field(metadata={
        "help": "folder for the token folders (train, validation_<lang>) and manifest.json"})
    workers: int = dataclasses.field(default=max(1, (multiprocessing.cpu_count() or 1)), metadata={
        "help": "tokenize tasks run at once (processes on this machine; with --executor slurm or ray, the most "
                "tasks running at a time, 1: no limit on Slurm)", "aliases": ("--num-proc",)})
    tasks: int = dataclasses.field(default=0, metadata={
        "help": "shards of the train split, one datatrove task each (0: --workers); any number gives the same "
                "tokens", "aliases": ("--num-shards",)})

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("--workers must be at least 1")
        if self.tasks < 0:
            raise ValueError("--tasks must be >= 0")
        self.check_executor()


def run_tokenize(cfg: TokenizeConfig, finish_only: bool = False) -> dict:
    """Tokenize into --output-dir, a folder this stage owns and resumes (tonsai.folders); return the
    token folders' paths (with --executor slurm, the submitted jobs)."""
    if cfg.executor == "slurm":  # the final job may run in another folder
        cfg = dataclasses.replace(cfg, **{k: os.path.abspath(getattr(cfg, k))
                                          for k in ("dataset_dir", "tokenizer_dir", "output_dir")})
    # submitting to Slurm does not hold the folder's lock: the final job takes it (it may start at once)
    with claim_in_place(cfg.output_dir, STAGE, inputs=[cfg.dataset_dir, cfg.tokenizer_dir],
                        legacy=("train", "validation_*", MANIFEST_NAME), lock=cfg.executor != "slurm"):
        return pack_dataset(cfg.dataset_dir, cfg.tokenizer_dir, cfg.output_dir, cfg.workers, cfg, tasks=cfg.tasks,
                            executor=cfg, finish_only=finish_only)

