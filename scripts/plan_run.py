#!/usr/bin/env python
r"""Plan a training run before starting it: parameters, FLOPs per token, memory per GPU under
ZeRO-2, tokens per step, and time and cost for a token budget at a stated MFU; then the
train_gpt2.py command that trains exactly that plan (a configs/train/ recipe when one matches).

Example:
  uv run python scripts/plan_run.py --model-config configs/model/gpt2_500m.json --gpu h100 \
      --tokens 10e9 --mfu 0.45
"""

import sys

from tonsai.cli import parse_config, run_main
from tonsai.model.plan import PlanConfig, run_plan

if __name__ == "__main__":
    cfg = parse_config(PlanConfig, __doc__)
    sys.exit(run_main(lambda: run_plan(cfg)))
