"""The Hugging Face Trainer with three additions: validation by tonsai's own evaluation code,
exact tokens seen, in all and per language, and checkpoints that verify themselves.

Validation: each language's validation tokens are one stream, ``<eot> doc1 <eot> doc2 <eot>``
(:class:`ValidationStream`), scored by :func:`tonsai.eval.perplexity.score_tokens` over sliding
windows, the function eval_model.py uses. With the same window and stride the ``eval_<lang>_loss``
a run logs is the loss eval_model.py reports for that model and split (up to --eval-max-tokens).
Processes score every world-th window each and sum their results.

Every training log gets ``tokens_seen``: the tokens of the batches really consumed (the last batch
of an epoch may be short, so steps x tokens per step would overcount). Training blocks carry
``lang_tokens`` (how many of their tokens come from documents of each language;
:class:`tonsai.tokenizer.pack.PackedBlocks`). The trainer takes that field out of the batch
before the forward pass, sums it on the device (no host sync per step), and adds the running
totals to every training log as ``tokens_seen_<lang>``, summed over all processes. On resume the
totals continue from the checkpoint's last log, which is always at the checkpoint's step
(``--save-steps`` is a multiple of ``--logging-steps``), so they stay exact.

Checkpoints: every checkpoint gets ``checksums.json`` (tonsai.train.checkpoint), written after every
process has written its files and BEFORE older checkpoints are rotated away (see
:meth:`TonsaiTrainer._save_checkpoint`).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from transformers import Trainer
from transformers.trainer_utils import rotate_checkpoints

from tonsai.eval.perplexity import score_tokens
from tonsai.train.checkpoint import WRITING, write_checksums


class ValidationStream:
    """One language's validation split as a token stream that starts with an end-of-text, read
    from the memory-mapped token shards a window at a time (nothing is loaded whole). With
    ``max_tokens`` only the first that many tokens after the leading end-of-text are scored."""

    def __init__(self, tokens, eos_id: int, block_size: int, stride: int, pad_id: int,
                 max_tokens: int | None = None):
        self.tokens, self.eos_id = tokens, eos_id
        self.block_size, self.stride, self.pad_id = block_size, stride, pad_id
        self.scored = min(len(tokens), max_tokens) if max_tokens else len(tokens)

    def __len__(self) -> int:
        return self.scored + 1

    def __getitem__(self, key: slice) -> np.ndarray:
        start, stop, _ = key.indices(len(self))
        body = np.asarray(self.tokens[max(0, start - 1):max(0, stop - 1)], dtype=np.int64)
        return np.concatenate([np.asarray([self.eos_id], dtype=np.int64), body]) if start == 0 < stop else body


class TonsaiTrainer(Trainer):
    def __init__(self, *args, langs: list[str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.langs = list(langs or [])
        self._lang_tokens: torch.Tensor | None = None  # since this process started, on the device
        self._lang_base: list[int] | None = None  # totals at the checkpoint this process resumed from

    def _run_epoch(self, *args, **kwargs):
        """Train one epoch, unless the run resumed from the checkpoint of its last step: the Trainer
        would then take one more optimizer step before it checks max_steps (step 13 of a 12-step run),
        so a run killed between its last checkpoint and final/ would not end as the uninterrupted one.
        """
        if self.state.global_step >= self.state.max_steps:
            self.control.should_training_stop = True
            return None
        return super()._run_epoch(*args, **kwargs)

    def _save_checkpoint(self, model, trial) -> None:
        """Save as the Trainer does, then write checksums.json, then rotate.

        The Trainer's own _save_checkpoint ends by deleting checkpoints beyond --save-total-limit,
        before any on_save callback runs. Were the checksum written in a callback, a kill between that
        rotation and the checksum would leave no checkpoint that verifies (with --save-total-limit 1:
        the old one deleted, the new one without checksums.json). So rotation is held back (the
        limit is cleared for the call) and done here, after the new checkpoint verifies: at every moment
        the folder holds at least one verifiable checkpoint once the first one is written. The barrier
        makes rank 0 wait for every process's DeepSpeed shards and RNG state before it checksums them.
        """
        if self.args.should_save:  # marks the folder as being written until checksums.json exists
            folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / WRITING).touch()
        limit = self.args.save_total_limit
        self.args.save_total_limit = None
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
        if self.args.should_save:
            run_dir = self._get_output_dir(trial=trial)
            write_checksums(f"{run_dir}/checkpoint-{self.state.global_step}")
            rotate_checkpoints(output_dir=run_dir, save_total_limit=limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)

    def _keys(self) -> list[str]:
        return ["tokens_seen"] + [f"tokens_seen_{lang}" for lang in self.langs]

    def compute_loss(self, model, inputs, *args, **kwargs):
        counts = inputs.pop("lang_tokens", None)
        if model.training:
            ids = inputs["input_ids"]
            step = torch.zeros(1 + len(self.langs), dtype=torch.long, device=ids.device)
            step[0] = ids.numel()
            if counts is not None:
                step[1:] = counts.sum(0)
            self._lang_tokens = step if self._lang_tokens is None else self._lang_tokens + step
        return super().compute_loss(model, inputs, *args, **kwargs)

    def _resumed_totals(self) -> list[int]:
        keys = self._keys()
        for entry in reversed(self.state.log_history):
            if all(k in entry for k in keys) and entry.get("step", 0) <= self.state.global_step:
                return [int(entry[k]) for k in keys]
        return [0] * len(keys)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            if self._lang_base is None:
                self._lang_base = self._resumed_totals()
            counts = self._lang_tokens
            if counts is None:
                counts = torch.zeros(1 + len(self.langs), dtype=torch.long, device=self.args.device)
            counts = counts.detach().clone()
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.all_reduce(counts)
            for key, base, n in zip(self._keys(), self._lang_base, counts.tolist()):
                logs[key] = base + int(n)
        super().log(logs, start_time)

    def final_validation(self, eval_ds: dict) -> dict[str, float]:
        """``eval_<lang>_loss`` of each validation set at the last step: the logged one when validation ran
        at that step, else a fresh evaluation (a run resumed from its last checkpoint may not have run it)."""
        out = {}
        for lang, ds in eval_ds.items():
            last = [e for e in self.state.log_history if f"eval_{lang}_loss" in e]
            if last and last[-1].get("step") == self.state.global_step:
                out[f"eval_{lang}_loss"] = last[-1][f"eval_{lang}_loss"]
            else:
                out[f"eval_{lang}_loss"] = self.evaluate(ds, metric_key_prefix=f"eval_{lang}")[f"eval_{lang}_loss"]
        return out

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        ds = self.eval_dataset if eval_dataset is None else eval_dataset
        if isinstance(ds, str):  # the Trainer passes each name of a dict of eval sets back to evaluate()
            ds = self.eval_dataset[ds]
        if not isinstance(ds, ValidationStream):
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        start = time.time()
        dist = torch.distributed.is_available() and torch.distributed.is_initialized()
        part = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if dist else (0, 1)
        with self.accelerator.autocast():
            nll, n = score_tokens(self.model, ds, ds.block_size, ds.stride, self.args.per_device_eval_batch_size,
                                  self.args.device, ds.pad_id, part=part)
        total = torch.tensor([nll, float(n)], dtype=torch.float64, device=self.args.device)
        if dist:
            torch.distributed.all_reduce(total)
        nll, n = float(total[0]), int(total[1])
        if n != len(ds) - 1:
            raise RuntimeError(f"validation scored {n} of {len(ds) - 1} tokens across processes: a bug in the "
                               f"window split")
        metrics = {f"{metric_key_prefix}_loss": nll / n, f"{metric_key_prefix}_tokens": n,
                   f"{metric_key_prefix}_runtime": round(time.time() - start, 4)}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics
