"""The Hugging Face Trainer with one addition: exact tokens seen, in all and per language.

Every training log gets ``tokens_seen``: the tokens of the batches really consumed (the last batch
of an epoch may be short, so steps x tokens per step would overcount). Training blocks carry ``lang_tokens`` (how many of their tokens come from documents of each
language; :class:`tonsai.tokenizer.pack.PackedBlocks`). The trainer takes that field out of the
batch before the forward pass, sums it on the device (no host sync per step), and adds the running
totals to every training log as ``tokens_seen_<lang>``, summed over all processes. On resume the
totals continue from the checkpoint's last log, which is always at the checkpoint's step
(``--save-steps`` is a multiple of ``--logging-steps``), so they stay exact.
"""

from __future__ import annotations

import torch
from transformers import Trainer


class TonsaiTrainer(Trainer):
    def __init__(self, *args, langs: list[str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.langs = list(langs or [])
        self._lang_tokens: torch.Tensor | None = None  # since this process started, on the device
        self._lang_base: list[int] | None = None  # totals at the checkpoint this process resumed from

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
