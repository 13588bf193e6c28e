"""Trainer callbacks: metrics.jsonl with throughput, MFU and per-language bits per byte (also sent
to TensorBoard, whose own callback logs only what the Trainer logs)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from tonsai.model.cost import mfu


class MetricsLogger(TrainerCallback):
    """Append one JSON object per log event to ``metrics.jsonl`` (main process only).

    Train events carry step, loss, learning rate, grad norm, tokens/s since the previous train
    event, and on a GPU the MFU (:mod:`tonsai.model.cost`, against the device's bf16 peak) and the
    peak GPU memory; validation events carry ``eval_<lang>_loss`` and the derived ``eval_<lang>_bpb`` (bits
    per UTF-8 byte: loss in nats times tokens per byte of that validation set, over ln 2; the bytes
    count one per end-of-text, as eval_model.py does, so the two report the same figure).

    Every event also carries ``step_total`` and ``tokens_total``: ``step`` and ``tokens_seen`` plus
    the counts of the base model a continual-pretraining run started from (both 0 otherwise), so
    the curves of a base run and its continuation can be drawn on one axis. With ``tb_writer`` the
    derived figures (bits per byte, tokens/s, MFU) also go to TensorBoard, beside the Trainer's.
    """

    def __init__(self, path: str | Path, tokens_per_step: int, tokens_per_byte: dict[str, float],
                 flops_per_token: float | None = None, peak_flops: float | None = None, world_size: int = 1,
                 base_steps: int = 0, base_tokens: int = 0, tb_writer=None):
        self.path = Path(path)
        self.tokens_per_step = tokens_per_step
        self.tokens_per_byte = tokens_per_byte
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops
        self.world_size = world_size
        self.base_steps, self.base_tokens = base_steps, base_tokens
        self.tb_writer = tb_writer
        self._t = None
        self._step = 0
        self._tokens: int | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._t, self._step = time.perf_counter(), state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, **logs}
        for lang, tpb in self.tokens_per_byte.items():
            key = f"eval_{lang}_loss"
            if key in logs:
                record[f"eval_{lang}_bpb"] = logs[key] * tpb / math.log(2)
        if "loss" in logs and self._t is not None:
            now = time.perf_counter()
            steps = state.global_step - self._step
            if steps > 0 and now > self._t:
                if "tokens_seen" in logs and self._tokens is not None:
                    tokens = logs["tokens_seen"] - self._tokens  # exact, from the trainer
                else:
                    tokens = steps * self.tokens_per_step
                record["tokens_per_s"] = tokens / (now - self._t)
                if self.flops_per_token and self.peak_flops:
                    record["mfu"] = mfu(record["tokens_per_s"], self.flops_per_token, self.peak_flops,
                                        self.world_size)
            self._t, self._step = now, state.global_step
            if torch.cuda.is_available():
                record["gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 1e9
        if "tokens_seen" in logs:
            self._tokens = logs["tokens_seen"]
        elif "loss" in logs or self._tokens is None:
            # a plain Trainer does not count: steps x tokens per step (overcounts short epoch-end batches)
            record["tokens_seen"] = state.global_step * self.tokens_per_step
        else:
            record["tokens_seen"] = self._tokens  # validation events: the count at the last training log
        record["step_total"] = self.base_steps + state.global_step
        record["tokens_total"] = self.base_tokens + int(record["tokens_seen"])
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb_writer is not None:
            self._to_tensorboard(record)

    def _to_tensorboard(self, record: dict) -> None:
        """The figures this callback derives, under the names TensorBoardCallback gives the Trainer's
        (``eval/<name>``, ``train/<name>``)."""
        step = record["step"]
        for lang in self.tokens_per_byte:
            if f"eval_{lang}_bpb" in record:
                self.tb_writer.add_scalar(f"eval/{lang}_bpb", record[f"eval_{lang}_bpb"], step)
        for key in ("tokens_per_s", "mfu"):
            if key in record:
                self.tb_writer.add_scalar(f"train/{key}", record[key], step)
        self.tb_writer.flush()
