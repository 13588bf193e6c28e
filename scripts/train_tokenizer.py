#!/usr/bin/env python
r"""Train a shared Khmer-English BPE tokenizer (byte fallback by default) whose folder loads with AutoTokenizer.

Examples:
  uv run python scripts/train_tokenizer.py --dataset-dir runs/data --dataset-split train \
      --text-column text --vocab-size 32000 --output-dir runs/tokenizer
  uv run python scripts/train_tokenizer.py --input km.txt en.txt --vocab-size 8000 --output-dir runs/tok
"""

import sys

from tonsai.cli import parse_config, run_main
from tonsai.tokenizer.bpe import TokenizerConfig, run_train_tokenizer

if __name__ == "__main__":
    cfg = parse_config(TokenizerConfig, __doc__)
    sys.exit(run_main(lambda: run_train_tokenizer(cfg)))
