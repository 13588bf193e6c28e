"""Where a training run starts: from scratch, from a checkpoint of its own (everything restored), or
from a model folder's weights; and the run folder made ready for it. Shared by train_gpt2.py and
train_sft.py. A checkpoint is resumed only when it verifies (:mod:`tonsai.train.checkpoint`) and
its pickles load as plain tensors; ``--resume-from auto`` takes the newest that does.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
import shutil
from pathlib import Path

from tonsai.atomic import write_text
from tonsai.errors import StageError
from tonsai.train import launch
from tonsai.train.checkpoint import CHECKSUMS, check, newest_verified, unsafe_pickles
from tonsai.train.guards import estimate_checkpoint_bytes

log = logging.getLogger(__name__)
SMALL_FILES_BYTES = 64 * 1024
# what a tokenizer folder's save_pretrained writes (a model folder given as the tokenizer also holds weights)
TOKENIZER_FILES = ("tokenizer*.json", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja",
                   "vocab*", "merges*", "*.model", "*.tiktoken")
# what a run folder made before ownership marks held (tonsai.folders)
RUN_ENTRIES = ("checkpoint-*", "final", ".final-incomplete", "metrics.jsonl", "tokens", "tensorboard",
               "manifest.json")


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest ``checkpoint-N`` folder in ``output_dir`` that verifies (tonsai.train.checkpoint)."""
    return newest_verified(output_dir)[0]


def _looks_like_checkpoint(p: Path) -> bool:
    """A Trainer checkpoint folder, complete or not (a model folder has none of these)."""
    if not p.is_dir():
        return False
    return (re.fullmatch(r"checkpoint-\d+", p.name) is not None or (p / "trainer_state.json").exists()
            or (p / CHECKSUMS).exists() or (p / "optimizer.pt").exists() or any(p.glob("global_step*"))
            or any(p.glob("rng_state*")))


def _safe_to_load(ckpt: Path, how: str) -> None:
    problem = unsafe_pickles(ckpt)
    if problem:
        raise StageError(f"{how} {ckpt}: refused: {problem}. DeepSpeed unpickles its files without "
                         f"restriction, so tonsai loads none that needs more than tensors and numpy arrays. "
                         f"Resume from a checkpoint you trust, or start over")


def _resolve_auto(cfg) -> tuple[str, str | None, list]:
    ckpt, skipped = newest_verified(cfg.output_dir)
    for p, verdict in skipped:
        log.warning("--resume-from auto: skipping %s: %s", p.name, verdict.reason)
    damaged = [f"{p.name} ({v.reason})" for p, v in skipped if v.status in ("corrupt", "unverified")]
    if ckpt is None and damaged and not cfg.overwrite:  # finished checkpoints, not a kill: a person decides
        raise StageError(f"--resume-from auto: no checkpoint in {cfg.output_dir} verifies: {'; '.join(damaged)}. "
                         f"Restore it from a copy, resume one by name (a checkpoint without checksums.json is "
                         f"accepted by name, with a warning), or pass --overwrite to start over (they are then "
                         f"kept as corrupt-/unverified-checkpoint-N)")
    if ckpt is None:
        log.info("--resume-from auto: no complete checkpoint in %s, starting from scratch", cfg.output_dir)
        return "scratch", None, skipped
    _safe_to_load(ckpt, "--resume-from auto:")
    log.info("--resume-from auto: %s verifies (checksums.json)", ckpt.name)
    return "checkpoint", str(ckpt), skipped


def resolve_resume(cfg) -> tuple[str, str | None, list]:
    """Return (kind, path, skipped): kind is 'scratch', 'checkpoint' or 'weights'; skipped lists the
    (checkpoint, Verdict) that --resume-from auto passed over, to be set aside once the folder is ours."""
    r = cfg.resume_from
    if r is None:
        return "scratch", None, []
    if r == "auto":
        return _resolve_auto(cfg)
    p = Path(r)
    if _looks_like_checkpoint(p):
        verdict = check(p)
        if verdict.status == "unverified":
            log.warning("--resume-from %s: %s; resuming it unverified, as asked by name", r, verdict.reason)
        elif not verdict.ok:
            raise StageError(f"--resume-from {r}: the checkpoint does not verify: {verdict.reason}. Resume from an "
                             f"earlier checkpoint, or pass --resume-from auto to pick the newest that verifies")
        _safe_to_load(p, "--resume-from")
        return "checkpoint", str(p), []
    if p.is_dir() and not (p / "config.json").is_file():
        raise StageError(f"--resume-from {r}: neither a training checkpoint (trainer_state.json) "
                         f"nor a model folder (config.json)")
    return "weights", r, []  # a model folder or a Hub id


def prepare_output_dir(cfg, kind: str, resume_path: str | None, step: int, outputs: tuple[str, ...] = ("final",)
                       ) -> None:
    """Refuse to mix a fresh run with an old one; on resume from the checkpoint of ``step``, drop
    metrics logged after it."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if launch.rank() != 0:
        return
    metrics = out / "metrics.jsonl"
    if kind == "checkpoint":
        if metrics.is_file():
            kept = []
            for line in metrics.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line).get("step", 0) <= step:
                        kept.append(line)
                except (json.JSONDecodeError, AttributeError):
                    pass  # blank, or cut short when the run was killed mid-write: dropped
            write_text(metrics, "".join(line + "\n" for line in kept))
        return
    old = sorted(out.glob("checkpoint-*")) + [out / name for name in outputs if (out / name).exists()]
    if cfg.resume_from == "auto":  # none of its checkpoints verified: run_train sets them aside (set_aside)
        old = [p for p in old if not p.name.startswith("checkpoint-")]
    if old and cfg.overwrite and resume_path and any(Path(resume_path).resolve().is_relative_to(p.resolve())
                                                    for p in old):
        raise StageError(f"--resume-from {resume_path} is inside --output-dir {out}, which --overwrite would "
                         f"delete first: copy that model elsewhere, or choose another --output-dir")
    if old and not cfg.overwrite:
        raise StageError(
            f"{out} already holds {', '.join(p.name for p in old[:3])}{' ...' if len(old) > 3 else ''}: "
            f"pass --resume-from auto to continue that run, --overwrite to start over there, "
            f"or choose another --output-dir")
    for p in old:
        shutil.rmtree(p)
    metrics.unlink(missing_ok=True)


def first_checkpoint_bytes(model, tokenizer_dir: str | Path, deepspeed: bool, bf16: bool) -> int:
    """The disk guard's estimate before the first checkpoint (tonsai.train.guards); every checkpoint also
    holds the tokenizer's files and a few small ones (trainer state, RNG, DeepSpeed's zero_to_fp32.py).
    An upper bound for LoRA, whose checkpoints hold the adapter only."""
    tokenizer_files = sum(p.stat().st_size for p in Path(tokenizer_dir).iterdir()
                          if p.is_file() and any(fnmatch.fnmatch(p.name, pat) for pat in TOKENIZER_FILES))
    return estimate_checkpoint_bytes(model, deepspeed, bf16, tokenizer_files + SMALL_FILES_BYTES)
