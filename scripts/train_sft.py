#!/usr/bin/env python
r"""Instruction-tune a model (full fine-tuning or LoRA) on Khmer and English conversations, with the
training stage's Trainer, optional DeepSpeed ZeRO-2, verified checkpoints and exact resume. Adds a
chat template to the tokenizer, so `tokenizer.apply_chat_template` works on the result.

Examples:
  uv run python scripts/train_sft.py --model-dir runs/gpt2-500m/final \
      --data tonsai/sample_corpus/conversations.jsonl --output-dir runs/gpt2-500m-sft
  uv run python scripts/train_sft.py --model-dir runs/gpt2-500m/final --method lora \
      --data my_chats.jsonl=2 hf:OWNER/khmer-instructions::train --output-dir runs/sft-lora
  uv run python scripts/train_sft.py ... --output-dir runs/sft-lora --resume-from auto
"""

import sys

from tonsai.cli import parse_config, run_main
from tonsai.sft.config import SftConfig
from tonsai.sft.run import run_sft

if __name__ == "__main__":
    cfg = parse_config(SftConfig, __doc__)
    sys.exit(run_main(lambda: run_sft(cfg)))
