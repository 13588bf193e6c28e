"""Checks that stop a long run early and clearly instead of late and silently.

- :class:`NonFiniteLossGuard`: a NaN or infinite training loss, checked at every log (the Trainer's
  NaN filter is off, and --save-steps must be a multiple of --logging-steps, so every save follows a
  check in the same step), stops training at once, before any further checkpoint is written, so the last complete checkpoint predates the problem; the stage
  then exits non-zero with a message (resume with ``--resume-from auto`` and a lower learning rate,
  or look at the data near that step). A non-finite loss has usually already produced non-finite
  gradients and weights, which is why tonsai stops rather than skipping the step and going on.
- :class:`DiskSpaceGuard`: before each checkpoint, free space must exceed the checkpoint's size
  plus ``--min-free-disk-gb``; otherwise the run stops with an error instead of dying in the middle
  of a write. The size is the real one of the newest checkpoint in the run folder (the sum its
  checksums.json records; the next one has the same files) and, before the first,
  :func:`estimate_checkpoint_bytes` from the actual model. A flat bytes-per-parameter rule is wrong
  both ways: a plain fp32 checkpoint of the tiny model takes 12.2 bytes per parameter, a ZeRO-2 one 20.8.
- :func:`cuda_problem`: why torch cannot see a GPU that ``nvidia-smi`` sees, in words, with the uv
  command that installs the CUDA 12.8 build (pyproject.toml's ``cu128`` extra) when that would help.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

from transformers import TrainerCallback

from tonsai.errors import StageError
from tonsai.train.checkpoint import checkpoints, listed_bytes

# the oldest NVIDIA driver for each CUDA major version torch wheels are built with
MIN_DRIVER = {12: 525, 13: 580}


class NonFiniteLossGuard(TrainerCallback):
    def __init__(self) -> None:
        self.bad_step: int | None = None
        self.loss: float | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            self.bad_step, self.loss = state.global_step, loss
            control.should_training_stop = True
            control.should_save = False

    def on_step_end(self, args, state, control, **kwargs):
        if self.bad_step is not None:
            control.should_save = False


def estimate_checkpoint_bytes(model, deepspeed: bool, bf16: bool, extra_bytes: int = 0) -> int:
    """Bytes of the first checkpoint, from the model's own tensors (shared ones counted once):

    - plain Trainer: model.safetensors (the state dict, each tensor in its dtype) and optimizer.pt
      (AdamW's two moments, in each trainable parameter's dtype);
    - DeepSpeed ZeRO-2: the model.safetensors export (tied tensors written twice), DeepSpeed's module copy
      (global_stepN/mp_rank_00_model_states.pt, bf16 when bf16 is on) and its optimizer partitions
      over all ranks (fp32 master weights and two fp32 moments: 12 bytes per trainable parameter).

    ``extra_bytes``: what else every checkpoint holds (the tokenizer files). RNG, scheduler and
    trainer state are a few kB. Muon keeps one moment for matrices, so this is an upper bound there."""
    seen, weights, module_copy, export, trainable = set(), 0, 0, 0, 0
    for t in model.state_dict().values():
        in_module = t.numel() * (2 if bf16 and t.is_floating_point() else t.element_size())
        export += in_module  # DeepSpeed's export writes tied tensors (lm_head = wte) once per name
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), t.numel())
        if key in seen:
            continue
        seen.add(key)
        weights += t.numel() * t.element_size()
        module_copy += in_module
    for p in model.parameters():
        if p.requires_grad:
            trainable += p.numel() * (4 if deepspeed else p.element_size())
    if deepspeed:
        return export + module_copy + 3 * trainable + extra_bytes
    return weights + 2 * trainable + extra_bytes


class DiskSpaceGuard(TrainerCallback):
    def __init__(self, output_dir: str | Path, estimate_bytes: int, min_free_gb: float = 0.0):
        self.output_dir = Path(output_dir)
        self.estimate_bytes, self.min_free = estimate_bytes, min_free_gb * 1e9

    def checkpoint_bytes(self) -> tuple[int, str]:
        """The size of the next checkpoint and where that figure comes from."""
        for p in checkpoints(self.output_dir):
            size = listed_bytes(p)
            if size is not None:
                return size, f"the size of {p.name}"
        return self.estimate_bytes, "estimated from the model and optimizer"

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save and state.is_world_process_zero:
            free = shutil.disk_usage(self.output_dir).free
            size, source = self.checkpoint_bytes()
            if free < size + self.min_free:
                raise StageError(
                    f"only {free / 1e9:.3f} GB free in {self.output_dir}, a checkpoint needs {size / 1e9:.3f} GB "
                    f"({source}){f' plus --min-free-disk-gb {self.min_free / 1e9:g}' if self.min_free else ''}: "
                    f"free space (lower --save-total-limit keeps fewer checkpoints) and resume with --resume-from auto")


def cuda_problem(driver_version: str | None, torch_cuda: str | None) -> str | None:
    """A message when the NVIDIA driver is too old for torch's CUDA build, else None."""
    if not driver_version or not torch_cuda:
        return None
    major = int(torch_cuda.split(".")[0])
    need = MIN_DRIVER.get(major)
    have = int(driver_version.split(".")[0])
    if need is None or have >= need:
        return None
    problem = (f"torch is built for CUDA {torch_cuda}, which needs NVIDIA driver >= {need}, but this machine has "
               f"driver {driver_version}. Upgrade the driver")
    if major > 12 and have >= MIN_DRIVER[12]:
        problem += (f", or install the CUDA 12.8 build of torch (torch 2.10, driver >= {MIN_DRIVER[12]}) with "
                    f"`uv sync --extra cu128` and run tonsai with `uv run --extra cu128 ...` (a plain `uv run` "
                    f"installs the CUDA 13 build over it, and a later `uv sync --extra cu128` then leaves torch "
                    f"without libcudnn: `rm -rf .venv` and sync again)")
    return problem + "."


def nvidia_driver_version() -> str | None:
    """The driver version nvidia-smi reports, or None when there is no NVIDIA driver."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
