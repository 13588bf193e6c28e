#!/usr/bin/env python
r"""Pretrain (or continue pretraining) a GPT-2 style model with the HF Trainer, optionally under
DeepSpeed ZeRO-2. Runs as one process without a launcher, or under deepspeed/torchrun.

Examples:
  uv run python scripts/train_gpt2.py --config configs/train/gpt2_500m_10b.yaml \
      --dataset-dir runs/data --tokenizer-dir runs/tokenizer --output-dir runs/gpt2-500m   # 10B tokens
  uv run python scripts/train_gpt2.py --dataset-dir runs/data --tokenizer-dir runs/tokenizer \
      --model-config configs/model/gpt2_500m.json --deepspeed configs/deepspeed/zero2_h100.json \
      --max-tokens 1e9 --global-batch-tokens 262144 --output-dir runs/gpt2-500m    # 1B tokens, sized by hand
  uv run python scripts/train_gpt2.py ... --output-dir runs/gpt2-500m --resume-from auto
  uv run python scripts/train_gpt2.py --dataset-dir runs/data --output-dir runs/cpt \
      --resume-from runs/gpt2-500m/final      # continual pretraining: config and tokenizer from the model
  uv run deepspeed --num_gpus 8 scripts/train_gpt2.py ...        # several GPUs
"""

import sys

from tonsai.cli import parse_config, run_main
from tonsai.train.config import TrainConfig
from tonsai.train.run import run_train

if __name__ == "__main__":
    cfg = parse_config(TrainConfig, __doc__)
    sys.exit(run_main(lambda: run_train(cfg)))
