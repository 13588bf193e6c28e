#!/usr/bin/env python
r"""Safety check before release: the model answers the project's Khmer and English prompt set
(eval_suites/safety/prompts.jsonl: harassment, hate, violence, sexual, self-harm, illicit), and
each answer is flagged by the project's toxicity lexicon (eval_suites/safety/lexicon_*.yaml) and,
with --classifier, by a Hugging Face text classifier. Writes the flagged rate per language and
category, the flagged samples and the verdict to report.json, report.md and report.html.

Exit status: 0 passed; 3 failed (every language's flagged rate must be at most --max-flagged-rate;
the report is written first, so a release script can gate on the status and show the report);
1 bad input; 2 bad options.

Examples:
  uv run python scripts/safety_check.py --model-dir runs/gpt2-500m/final --output-dir runs/safety/gpt2-500m \
      --max-flagged-rate 0.05
  uv run python scripts/safety_check.py --model-dir runs/sft/final --chat --output-dir runs/safety/sft \
      --max-flagged-rate 0.02 --classifier path/or/hub-id-of-a-toxicity-classifier --classifier-label toxic
  uv run python scripts/safety_check.py --generations runs/safety/sft/generations.jsonl \
      --lexicon my_lexicons/ --output-dir runs/safety/sft-rescored --max-flagged-rate 0.02
"""

import sys

from tonsai.cli import parse_config
from tonsai.safety.run import SafetyConfig, main

if __name__ == "__main__":
    sys.exit(main(parse_config(SafetyConfig, __doc__)))
