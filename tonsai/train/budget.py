"""Sizing a run in tokens: from a token budget and a global batch in tokens to the optimizer steps
and gradient accumulation the Trainer runs.

A run is planned in tokens (scripts/plan_run.py, the recipes in configs/train/), but the Trainer
counts optimizer steps of ``micro batch x accumulation x processes x block`` tokens. This module
turns one into the other, the same way for the planner and for training, so that a recipe trains
exactly the steps the plan printed. Accumulation must divide the global batch exactly (a rounded
batch would silently change the learning-rate-to-batch ratio); the step count is rounded up, so a
run never trains less than its budget, and the realized count is reported.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re

from tonsai.errors import StageError

DEFAULT_MAX_STEPS = 1000


class TokenCountError(ValueError, argparse.ArgumentTypeError):
    """A ValueError for the config's own checks, an ArgumentTypeError so argparse prints it as is."""


class TokenCount(int):
    """A whole number of tokens written as ``1000000000``, ``1e9``, ``10e9``, ``2.5e9`` or ``1_000_000``.

    A class (not a function) so that it can be the type of a config field: argparse calls it on the
    flag's text, and :class:`~tonsai.train.config.TrainConfig` on a YAML value (YAML reads ``1e9`` as a
    string, ``1.0e9`` as a float)."""

    def __new__(cls, value) -> "TokenCount":
        if isinstance(value, bool):
            raise TokenCountError(f"expected a number of tokens, got {value!r}")
        if isinstance(value, str):
            text = value.strip().replace("_", "")
            if not re.fullmatch(r"[0-9]+(\.[0-9]*)?([eE][+]?[0-9]+)?", text):
                raise TokenCountError(f"{value!r} is not a number of tokens (write e.g. 1000000, 1e9 or 2.5e9)")
            value = int(text) if text.isdigit() else float(text)
        if isinstance(value, float):
            if not math.isfinite(value) or value != int(value):
                raise TokenCountError(f"{value!r} is not a whole number of tokens")
            value = int(value)
        if not isinstance(value, int) or value < 1:
            raise TokenCountError(f"expected a positive whole number of tokens, got {value!r}")
        return super().__new__(cls, value)


@dataclasses.dataclass(frozen=True)
class Budget:
    """What a run trains: ``max_steps`` optimizer steps of ``tokens_per_step`` tokens each."""

    micro_batch_size: int
    block_size: int
    world_size: int
    gradient_accumulation: int
    max_steps: int
    tokens_requested: int | None  # --max-tokens, when the run was sized in tokens

    @property
    def tokens_per_step(self) -> int:
        return self.micro_batch_size * self.gradient_accumulation * self.world_size * self.block_size

    @property
    def tokens_planned(self) -> int:
        return self.max_steps * self.tokens_per_step

    def describe(self) -> str:
        text = (f"{self.max_steps:,} optimizer steps of {self.tokens_per_step:,} tokens ({self.micro_batch_size} "
                f"seq x {self.gradient_accumulation} accum x {self.world_size} process(es) x {self.block_size}) "
                f"= {self.tokens_planned:,} tokens")
        if self.tokens_requested is not None:
            text += (f" for --max-tokens {self.tokens_requested:,} "
                     f"({self.tokens_planned - self.tokens_requested:+,}: steps are rounded up)")
        return text


def steps_for_tokens(tokens: float, tokens_per_step: int) -> int:
    """Optimizer steps that train at least ``tokens`` tokens."""
    return max(1, math.ceil(tokens / tokens_per_step))


def accumulation_for(global_batch_tokens: int, micro_batch_size: int, block_size: int, world_size: int) -> int:
    """Micro-batches per optimizer step that make exactly ``global_batch_tokens`` tokens a step."""
    unit = micro_batch_size * block_size * world_size
    if global_batch_tokens % unit == 0:
        return global_batch_tokens // unit
    low = global_batch_tokens // unit
    options = [f"{n * unit:,} (accumulation {n})" for n in (low, low + 1) if n >= 1]
    raise StageError(
        f"--global-batch-tokens {global_batch_tokens:,} is not a multiple of --micro-batch-size "
        f"{micro_batch_size} x --block-size {block_size} x {world_size} process(es) = {unit:,} tokens; "
        f"the nearest valid values are {' and '.join(options)}")


def resolve_budget(*, micro_batch_size: int, block_size: int, world_size: int,
                   gradient_accumulation: int | None = None, global_batch_tokens: int | None = None,
                   max_steps: int | None = None, max_tokens: int | None = None) -> Budget:
    """The steps and accumulation of a run from whichever of the two ways each was given
    (TrainConfig has already refused giving both ways for either)."""
    if global_batch_tokens is not None:
        accum = accumulation_for(global_batch_tokens, micro_batch_size, block_size, world_size)
    else:
        accum = gradient_accumulation or 1
    tokens_per_step = micro_batch_size * accum * world_size * block_size
    if max_tokens is not None:
        steps = steps_for_tokens(max_tokens, tokens_per_step)
    else:
        steps = max_steps or DEFAULT_MAX_STEPS
    return Budget(micro_batch_size, block_size, world_size, accum, steps,
                  int(max_tokens) if max_tokens is not None else None)
