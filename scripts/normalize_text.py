#!/usr/bin/env python
"""Normalize text with tonsai's canonical Khmer/Unicode normalization, streaming.

Examples:
  uv run python scripts/normalize_text.py raw.txt --output clean.txt
  cat raw.txt | uv run python scripts/normalize_text.py > clean.txt
  uv run python scripts/normalize_text.py corpus/ --output corpus_clean/
"""

import sys

from tonsai.cli import parse_config, run_main
from tonsai.text.stream import NormalizeTextConfig, run_normalize_text

if __name__ == "__main__":
    argv = sys.argv[1:]
    # positional inputs before the first flag, for convenience
    pos = []
    while argv and not argv[0].startswith("--"):
        pos.append(argv.pop(0))
    if pos:
        argv = ["--inputs", *pos, *argv]
    cfg = parse_config(NormalizeTextConfig, __doc__, argv)
    sys.exit(run_main(lambda: run_normalize_text(cfg)))
