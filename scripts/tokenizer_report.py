#!/usr/bin/env python
r"""Fertility and Khmer/English parity of a trained tokenizer, beside reference tokenizers; writes
fertility.json and fertility.md (into the tokenizer folder unless --output-dir is given).

Example:
  uv run python scripts/tokenizer_report.py --tokenizer-dir runs/tokenizer \
      --parity-file ../shared/data/sib200_flores_khm_eng_dev/khm_Khmr.txt ../shared/data/sib200_flores_khm_eng_dev/eng_Latn.txt \
      --compare ../shared/data/tokenizers/gpt2/gpt2.tiktoken ../shared/data/tokenizers/gemma3/tokenizer.json.xz
"""

import sys

from tonsai.cli import parse_config, run_main
from tonsai.tokenizer.report import TokenizerReportConfig, run_tokenizer_report

if __name__ == "__main__":
    cfg = parse_config(TokenizerReportConfig, __doc__)
    sys.exit(run_main(lambda: run_tokenizer_report(cfg)))
