"""What the training stage hands the Hugging Face Trainer (tonsai.train.arguments): the DeepSpeed config
(ZeRO-3 refused with the reason; the shipped ZeRO-2 config leaves the optimizer and sizes to the Trainer)
and the --report-to check."""

import importlib.util
import json
from pathlib import Path

import pytest

from tests.train.runs import ZERO2, config
from tonsai.errors import StageError
from tonsai.train.run import run_train


def test_zero3_is_refused_with_the_reason(sample_pipeline, tmp_path):
    z3 = tmp_path / "zero3.json"
    z3.write_text(json.dumps({"zero_optimization": {"stage": 3}, "train_batch_size": "auto"}))
    with pytest.raises(StageError, match="ZeRO stage 3"):
        run_train(config(sample_pipeline, tmp_path / "z3", steps=2, deepspeed=str(z3)))


def test_shipped_deepspeed_config_leaves_optimizer_and_sizes_to_the_trainer():
    cfg = json.loads(Path(ZERO2).read_text())
    assert cfg["zero_optimization"]["stage"] == 2
    # the Trainer builds AdamW and the LR schedule from tonsai's options; a block here would override them
    assert "optimizer" not in cfg and "scheduler" not in cfg
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                "gradient_clipping"):
        assert cfg[key] == "auto", key
    assert cfg["bf16"]["enabled"] == "auto"


def test_report_to_wandb_without_wandb_is_refused_before_tokenizing(sample_pipeline, tmp_path):
    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    out = tmp_path / "wb"
    with pytest.raises(StageError, match="uv add wandb"):
        run_train(config(sample_pipeline, out, steps=2, report_to=["wandb"]))
    assert not (out / "tokens").exists()
