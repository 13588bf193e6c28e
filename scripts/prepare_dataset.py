#!/usr/bin/env python
r"""Prepare a Khmer/English pretraining mixture: normalize, route, filter, deduplicate, split, mix.

Examples:
  uv run python scripts/prepare_dataset.py --khmer data/km/*.txt --english data/en.jsonl.zst \
      --khmer-weight 0.6 --english-weight 0.4 --output-dir runs/data
  # sources with their own weights and max epochs, from a mix file (see configs/data/):
  uv run python scripts/prepare_dataset.py --mix configs/data/shared_km_en.yaml --output-dir runs/data
  # a Hugging Face dataset, streamed (hf:NAME[:CONFIG[:SPLIT]], --text-column for its text field):
  uv run python scripts/prepare_dataset.py --khmer hf:HuggingFaceFW/fineweb-2:khm_Khmr:train \
      --english corpus/en --output-dir runs/data
  # on a Slurm cluster (submits the document tasks and the merge, then returns; --executor ray likewise):
  uv run python scripts/prepare_dataset.py --mix configs/data/fineweb2_km_en_local.yaml --executor slurm \
      --slurm-partition cpu --num-shards 512 --workers 128 --output-dir /shared/runs/data
  # or by hand: one job per task (any order, any machines sharing --work-dir), then the merge:
  uv run python scripts/prepare_dataset.py --mix configs/data/shared_km_en.yaml --num-shards 64 \
      --shard-index $TASK --work-dir /shared/work --output-dir /shared/runs/data
  uv run python scripts/prepare_dataset.py --mix configs/data/shared_km_en.yaml --num-shards 64 \
      --merge-only --work-dir /shared/work --output-dir /shared/runs/data

Rerunning the same command skips finished tasks. The output folder appears only when complete.
"""

import os
import sys

# before pyarrow is imported (by the imports below): Arrow's system allocator gives freed memory back,
# which keeps the merge's resident set flat as the corpus grows (tonsai.data.ondisk)
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

from tonsai.cli import parse_config, run_main  # noqa: E402
from tonsai.data.prepare import PrepareConfig, run_prepare  # noqa: E402

if __name__ == "__main__":
    cfg = parse_config(PrepareConfig, __doc__)
    sys.exit(run_main(lambda: run_prepare(cfg)))
