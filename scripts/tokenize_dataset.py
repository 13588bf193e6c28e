#!/usr/bin/env python
r"""Tokenize a prepared dataset into token shards for training (datatrove tasks, streaming), with
validation kept apart per language. train_gpt2.py does this itself unless given --tokens-dir.
A rerun after a crash skips the tasks that finished; any number of tasks gives the same tokens.

Examples:
  uv run python scripts/tokenize_dataset.py --dataset-dir runs/data --tokenizer-dir runs/tokenizer \
      --output-dir runs/tokens --workers 16
  uv run python scripts/tokenize_dataset.py --dataset-dir runs/data --tokenizer-dir runs/tokenizer \
      --output-dir runs/tokens --executor slurm --slurm-partition cpu --tasks 64 --workers 32
"""

import sys

from tonsai.cli import parse_config, run_main
from tonsai.tokenizer.pack import TokenizeConfig, run_tokenize

if __name__ == "__main__":
    cfg = parse_config(TokenizeConfig, __doc__)
    sys.exit(run_main(lambda: run_tokenize(cfg)))
