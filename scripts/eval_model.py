#!/usr/bin/env python
r"""Evaluate a trained model: per language and per source loss, perplexity, bits per byte and bits per
character; bits per sentence on aligned Khmer-English text; prompt suites (QA, summarization,
translation, multiple choice); loss curves. Writes report.json, report.md and report.html.

Examples:
  uv run python scripts/eval_model.py --model-dir runs/gpt2-500m/final --dataset-dir runs/data \
      --output-dir runs/eval/gpt2-500m
  uv run python scripts/eval_model.py --model-dir runs/gpt2-500m/checkpoint-4000 \
      --text km=news_km.txt en=news_en.txt --parallel flores/khm_Khmr.txt flores/eng_Latn.txt \
      --suite eval_suites/khmer_core --output-dir runs/eval/gpt2-500m-4000 --compare runs/eval/baseline
"""

import sys

from tonsai.cli import parse_config, run_main
from tonsai.eval.run import EvalConfig, run_eval

if __name__ == "__main__":
    cfg = parse_config(EvalConfig, __doc__)
    sys.exit(run_main(lambda: run_eval(cfg)))
