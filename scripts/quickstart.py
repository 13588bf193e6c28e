#!/usr/bin/env python
"""Run the whole tonsai pipeline (prepare -> tokenizer -> train -> evaluate -> instruction-tune ->
evaluate the tuned model) on the small Khmer + English sample corpus shipped in
tonsai/sample_corpus, on CPU, in a few minutes.

Example:
  uv run python scripts/quickstart.py                 # writes runs/quickstart/
  uv run python scripts/quickstart.py --deepspeed configs/deepspeed/zero2_h100.json
"""

import sys

from tonsai.cli import parse_config, run_main
from tonsai.quickstart import QuickstartConfig, run_quickstart

if __name__ == "__main__":
    cfg = parse_config(QuickstartConfig, __doc__)
    sys.exit(run_main(lambda: run_quickstart(cfg)))
