#!/usr/bin/env python
"""Evaluate a trained model per language: loss, perplexity, bits per byte and bits per character on
a prepared dataset's validation split; writes report.json and report.md.

Example:
  uv run python scripts/eval_model.py --model-dir runs/gpt2-500m/final --dataset-dir runs/data \
      --output-dir runs/gpt2-500m/eval
"""

import sys

from tonsai.cli import parse_config, run_main
from tonsai.eval.run import EvalConfig, run_eval

if __name__ == "__main__":
    cfg = parse_config(EvalConfig, __doc__)
    sys.exit(run_main(lambda: run_eval(cfg)))
