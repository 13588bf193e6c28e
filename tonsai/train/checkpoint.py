"""Checkpoints that verify themselves, and resuming that never runs code from a file.

Why tonsai writes this instead of using a library: the HF Trainer (and DeepSpeed under it) writes a
checkpoint as a folder of files with no record of what a complete one holds. A kill or a full disk
leaves a folder that looks like a checkpoint; a truncated or deleted file is found only as a
traceback, or not at all (without optimizer.pt the Trainer silently continues on a fresh optimizer).
torchtitan's distributed checkpoints solve this with a metadata file written last; tonsai does the
same for the Trainer's folders:

- :func:`write_checksums` writes ``checksums.json`` (size and sha256 of every file in the folder,
  recursively, DeepSpeed's ``global_stepN/`` shards of every rank included) LAST and atomically.
  A folder without it was never finished.
- :func:`check` compares a folder with its ``checksums.json``: every listed file present with its
  size and sha256, and no file that is not listed.
- :func:`unsafe_pickles` loads every pickle file of a checkpoint with ``weights_only=True`` under a
  short allow-list, before the Trainer and DeepSpeed load them (DeepSpeed's own load is
  ``weights_only=False``: a crafted ``mp_rank_00_model_states.pt`` would run its code).

What happens to a checkpoint that fails (see :func:`set_aside`): one that was never finished (no
checksums.json, and the ``.tonsai-writing`` marker tonsai makes before the Trainer writes, or no
complete trainer_state.json) is this run's own half-written output and is removed, so that the same
step can be saved again cleanly; one that has a checksums.json but does not match it, or that has a
complete trainer_state.json, no marker and no checksums.json (written by a tonsai without checksums)
is renamed ``corrupt-checkpoint-N`` / ``unverified-checkpoint-N``, which the Trainer's rotation glob
(``checkpoint-*``) ignores, so the user can inspect it and nothing is lost.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tonsai.atomic import write_json
from tonsai.manifest import file_sha256

# deepspeed is imported inside allowed_globals, for checkpoints that DeepSpeed wrote: it adds 0.18 s (on a
# 2-core machine) to the torch and transformers that train_gpt2.py and train_sft.py load at start, --help
# included, and runs without DeepSpeed never need it.

log = logging.getLogger(__name__)
CHECKSUMS = "checksums.json"
WRITING = ".tonsai-writing"  # made before the Trainer writes a checkpoint, removed once checksums.json exists
PICKLE_SUFFIXES = (".pt", ".pth", ".bin")
# the Trainer pickles its TrainingArguments here; nothing reads it on resume (transformers, accelerate
# and DeepSpeed only write it), so it is not loaded and needs no allow-list of its many classes
NEVER_LOADED = {"training_args.bin"}
STEP = re.compile(r"checkpoint-(\d+)")


@dataclass(frozen=True)
class Verdict:
    """``status``: 'ok', 'unfinished' (killed while being written), 'unverified' (complete Trainer
    state but no checksums.json) or 'corrupt' (does not match its checksums.json)."""

    status: str
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in (CHECKSUMS, WRITING))


def _digests(paths: list[Path]) -> list[str]:
    """sha256 of each file, several at a time (hashlib releases the GIL on large reads)."""
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(file_sha256, paths))


def write_checksums(folder: str | Path) -> Path:
    """Write ``folder/checksums.json`` for every file now in ``folder``; call it after every
    process has finished writing its part (see TonsaiTrainer._save_checkpoint)."""
    folder = Path(folder)
    files = _files(folder)
    listing = {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": d}
               for p, d in zip(files, _digests(files))}
    write_json(folder / CHECKSUMS, {"format": 1, "files": listing})
    (folder / WRITING).unlink(missing_ok=True)
    return folder / CHECKSUMS


def _trainer_state_complete(folder: Path) -> bool:
    try:
        json.loads((folder / "trainer_state.json").read_text())
        return True
    except (OSError, ValueError):
        return False


def check(folder: str | Path) -> Verdict:
    """Whether ``folder`` is exactly what was written when its checksums.json was made."""
    try:
        return _check(Path(folder))
    except OSError as e:  # e.g. another process of the same run set it aside while this one read it
        return Verdict("corrupt", f"unreadable ({e})")


def _check(folder: Path) -> Verdict:
    try:
        listing = json.loads((folder / CHECKSUMS).read_text())["files"]
    except FileNotFoundError:
        if _trainer_state_complete(folder) and not (folder / WRITING).exists():
            return Verdict("unverified", f"no {CHECKSUMS} although trainer_state.json is complete: written by a "
                                         f"tonsai without checksums (or its {CHECKSUMS} was deleted)")
        return Verdict("unfinished", f"no {CHECKSUMS}: the run was killed (or ran out of disk) while writing it")
    except (OSError, ValueError, KeyError, TypeError) as e:
        return Verdict("corrupt", f"{CHECKSUMS} is unreadable ({e})")
    present = {p.relative_to(folder).as_posix(): p for p in _files(folder)}
    for name in sorted(listing):
        if name not in present:
            return Verdict("corrupt", f"{name} is listed in {CHECKSUMS} but missing")
        size = present[name].stat().st_size
        if size != listing[name]["bytes"]:
            return Verdict("corrupt", f"{name} has {size:,} bytes, {CHECKSUMS} says {listing[name]['bytes']:,} "
                                      f"(truncated or replaced)")
    extra = sorted(set(present) - set(listing))
    if extra:
        return Verdict("corrupt", f"{extra[0]} is not listed in {CHECKSUMS} (added after the checkpoint was written)")
    names = sorted(listing)
    for name, digest in zip(names, _digests([present[n] for n in names])):
        if digest != listing[name]["sha256"]:
            return Verdict("corrupt", f"{name} has another sha256 than {CHECKSUMS} records (its content changed)")
    return Verdict("ok")


def listed_bytes(folder: str | Path) -> int | None:
    """The size of a checkpoint according to its checksums.json (no hashing), or None without one."""
    try:
        listing = json.loads((Path(folder) / CHECKSUMS).read_text())["files"]
        return sum(int(f["bytes"]) for f in listing.values()) + (Path(folder) / CHECKSUMS).stat().st_size
    except (OSError, ValueError, KeyError, TypeError):
        return None


def checkpoints(output_dir: str | Path) -> list[Path]:
    """The ``checkpoint-N`` folders of ``output_dir``, newest step first."""
    found = [(int(m.group(1)), p) for p in Path(output_dir).glob("checkpoint-*")
             if p.is_dir() and (m := STEP.fullmatch(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def newest_verified(output_dir: str | Path) -> tuple[Path | None, list[tuple[Path, Verdict]]]:
    """The newest checkpoint that verifies (or None), and the newer ones skipped, with why."""
    skipped = []
    for p in checkpoints(output_dir):
        verdict = check(p)
        if verdict.ok:
            return p, skipped
        skipped.append((p, verdict))
    return None, skipped


def set_aside(skipped: list[tuple[Path, Verdict]]) -> None:
    """Remove never-finished checkpoints (the run's own half-written output) and rename the others
    ``corrupt-checkpoint-N`` / ``unverified-checkpoint-N`` (kept for inspection; ignored by the
    Trainer's rotation), so a later save of the same step starts from an empty name."""
    for p, verdict in skipped:
        if not p.exists():
            continue
        if verdict.status == "unfinished":
            shutil.rmtree(p)
            log.warning("removed %s: %s", p, verdict.reason)
            continue
        target = p.with_name(f"{verdict.status}-{p.name}")
        n = 1
        while target.exists():
            target, n = p.with_name(f"{verdict.status}-{p.name}.{n}"), n + 1
        os.replace(p, target)
        log.warning("renamed %s to %s (kept for inspection): %s", p, target.name, verdict.reason)


def allowed_globals(deepspeed: bool) -> list:
    """What the Trainer and DeepSpeed ZeRO-2 store in their pickles besides tensors and containers,
    found by loading real checkpoints of both (tests/train/test_checkpoints.py): numpy arrays (the RNG
    state in rng_state*.pth) and, in DeepSpeed's optimizer partitions, its loss scaler, ZeRO stage enum
    and fragment addresses. Each is a plain value class: building one runs no code from the file."""
    allowed = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    if deepspeed:
        from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
        from deepspeed.runtime.zero.config import ZeroStageEnum
        from deepspeed.utils.tensor_fragment import fragment_address

        allowed += [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]
    return allowed


def unsafe_pickles(folder: str | Path) -> str | None:
    """Why some pickle file in ``folder`` cannot be loaded without running code, or None when every
    one loads with ``weights_only=True`` and :func:`allowed_globals` (tensors are memory-mapped, not read)."""
    folder = Path(folder)
    allowed = allowed_globals(deepspeed=any(folder.glob("global_step*")))
    for p in _files(folder):
        if p.suffix not in PICKLE_SUFFIXES or p.name in NEVER_LOADED:
            continue
        try:
            with torch.serialization.safe_globals(allowed):
                torch.load(p, weights_only=True, mmap=True, map_location="cpu")
        except Exception as e:  # noqa: BLE001 - any failure means the file cannot be shown safe
            needs = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
            why = (f"it needs {needs.group(1)}, which is not on the allow-list" if needs
                   else (str(e).strip().splitlines() or [type(e).__name__])[0])
            return f"{p.relative_to(folder).as_posix()} cannot be loaded without running code from it ({why})"
    return None
