#!/usr/bin/env python
"""Prepare a Khmer/English pretraining mixture: normalize, route, filter, deduplicate, split, mix.

Example:
  uv run python scripts/prepare_dataset.py --khmer data/km/*.txt --english data/en.txt \
      --khmer-weight 0.6 --english-weight 0.4 --output-dir runs/data
"""

import sys

from tonsai.cli import parse_config, run_main
from tonsai.data.prepare import PrepareConfig, run_prepare

if __name__ == "__main__":
    cfg = parse_config(PrepareConfig, __doc__)
    sys.exit(run_main(lambda: run_prepare(cfg)))
