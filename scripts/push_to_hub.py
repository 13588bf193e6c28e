#!/usr/bin/env python
r"""Push a trained model (or a tokenizer) to the Hugging Face Hub with a generated model card.

The card (README.md, made for the upload: the folder is never changed) summarizes the training
data, the tokenizer's fertility, the training run and, with --eval-dir, an eval_model.py report. Needs a write token
(HF_TOKEN or `uv run hf auth login`) and the network (not HF_HUB_OFFLINE=1).

Examples:
  uv run python scripts/push_to_hub.py --model-dir runs/gpt2-500m/final --repo me/tonsai-km-en-500m \
      --eval-dir runs/eval/gpt2-500m --license apache-2.0 --private
  uv run python scripts/push_to_hub.py --tokenizer-dir runs/tokenizer --repo me/tonsai-km-en-tokenizer
  uv run python scripts/push_to_hub.py --model-dir runs/gpt2-500m/final --repo me/x --dry-run \
      --card-out /tmp/card.md   # list the files, write the card to read; no network
"""

import sys

from tonsai.cli import parse_config, run_main
from tonsai.publish.push import PushConfig, run_push

if __name__ == "__main__":
    cfg = parse_config(PushConfig, __doc__)
    sys.exit(run_main(lambda: run_push(cfg)))
