"""Golden losses: the tiny GPT-2 preset trained 20 steps from seed 0 on the sample corpus must log the
losses recorded in golden_losses.json, step by step. An upstream change (torch, transformers, the
tokenizer library) or a change of ours that moves the numbers fails here, and a person decides whether
the new numbers are right before recording them again.

Tolerance: 2e-3 absolute per step. Repeated runs on one machine agree at all 6 recorded decimals; the margin is for
other CPUs, whose float32 kernels (AVX2 against AVX-512) sum in other orders. The values are recorded
per torch version: a torch without a record fails with the command that records it.

  TONSAI_RECORD_GOLDEN=1 uv run pytest tests/train/test_golden.py   # after checking the new numbers
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO
from tonsai.train.config import TrainConfig
from tonsai.train.run import run_train

GOLDEN = Path(__file__).with_name("golden_losses.json")
TOLERANCE = 2e-3


def test_tiny_preset_logs_the_recorded_losses(sample_pipeline, tmp_path):
    out = tmp_path / "golden"
    run_train(TrainConfig(
        dataset_dir=str(sample_pipeline / "data"), tokenizer_dir=str(sample_pipeline / "tok"),
        model_config=str(REPO / "configs/model/gpt2_tiny.json"), output_dir=str(out), block_size=64,
        micro_batch_size=4, max_steps=20, learning_rate=2e-3, warmup=0.1, eval_steps=20, save_steps=20,
        logging_steps=1, seed=0, device="cpu", dataloader_workers=0, report_to=["none"]))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = {str(r["step"]): round(r["loss"], 6) for r in rows if "loss" in r}
    assert sorted(map(int, losses)) == list(range(1, 21))
    key = torch.__version__.split("+")[0]
    recorded = json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}
    if os.environ.get("TONSAI_RECORD_GOLDEN") == "1":
        recorded[key] = losses
        GOLDEN.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
    if key not in recorded:
        pytest.fail(f"no golden losses for torch {key} in {GOLDEN.name} (recorded: {sorted(recorded)}); check this "
                    f"run's losses, then record them: TONSAI_RECORD_GOLDEN=1 uv run pytest {Path(__file__).name}")
    want = recorded[key]
    assert losses.keys() == want.keys()
    off = {step: (losses[step], want[step]) for step in want if abs(losses[step] - want[step]) > TOLERANCE}
    assert not off, f"losses moved (step: (now, recorded)): {off}"
