"""Sizing a run in tokens (--max-tokens, --global-batch-tokens), continual pretraining from a model
folder, and the training stage's early refusals: real tiny runs on the sample corpus."""

import dataclasses
import importlib.util
import json
import math
import os
import shutil
import sys

import pytest

from tonsai.cli import parse_config
from tonsai.errors import StageError
from tonsai.train.budget import TokenCount, resolve_budget
from tonsai.train.config import TrainConfig
from tonsai.train.run import run_train

from ..conftest import REPO
from .test_train import config, losses

TINY_RECIPE = str(REPO / "configs/train/gpt2_tiny_cpu.yaml")


def rows(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_token_counts_read_like_numbers_people_write():
    assert [TokenCount(v) for v in ("1e9", "10e9", "2.5e9", "1_000_000", 1e9, 262144)] == [
        10**9, 10**10, 25 * 10**8, 10**6, 10**9, 262144]
    for bad in ("1.5", "ten", 0, -5, 2.5, True):
        with pytest.raises(ValueError):
            TokenCount(bad)


def test_budget_rounds_steps_up_and_refuses_an_indivisible_batch():
    b = resolve_budget(micro_batch_size=8, block_size=2048, world_size=2, global_batch_tokens=262144, max_tokens=10**9)
    assert (b.gradient_accumulation, b.tokens_per_step, b.max_steps) == (8, 262144, 3815)
    assert b.tokens_planned == 1_000_079_360 and "+79,360" in b.describe()
    with pytest.raises(StageError, match=r"nearest valid values are 245,760 \(accumulation 15\) and 262,144"):
        resolve_budget(micro_batch_size=8, block_size=2048, world_size=1, global_batch_tokens=250_000)
    assert resolve_budget(micro_batch_size=4, block_size=64, world_size=1).max_steps == 1000  # the old default


@pytest.mark.parametrize("argv, message", [
    (["--max-tokens", "1e6", "--max-steps", "10"], "give --max-tokens (1,000,000) or --max-steps (10), not both"),
    (["--global-batch-tokens", "1024", "--gradient-accumulation", "2"], "or --gradient-accumulation (2), not both"),
    (["--max-tokens", "1.5"], "argument --max-tokens: 1.5 is not a whole number of tokens"),
])
def test_conflicting_or_bad_budget_flags_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        parse_config(TrainConfig, "", ["--config", TINY_RECIPE, "--dataset-dir", "d", "--tokenizer-dir", "t",
                                       "--output-dir", "o", *argv])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_the_tiny_recipe_trains_its_token_budget(sample_pipeline, tmp_path):
    """The CPU recipe through train_gpt2.py's own parser, with a smaller budget and a global batch
    that needs accumulation 2: 5,000 tokens in steps of 8 x 128 x 2 = 2,048 is 3 steps (6,144 tokens)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tiny"
    cfg = parse_config(TrainConfig, "", [
        "--config", TINY_RECIPE, "--dataset-dir", str(sample_pipeline / "data"),
        "--tokenizer-dir", str(sample_pipeline / "tok"), "--output-dir", str(out), "--max-tokens", "5e3",
        "--global-batch-tokens", "2048", "--warmup", "0.5", "--logging-steps", "1", "--eval-steps", "3",
        "--save-steps", "3", "--device", "cpu", "--dataloader-workers", "0"])
    cfg.model_config = str(REPO / cfg.model_config)
    manifest = run_train(cfg)
    assert manifest["budget"] == {"tokens_requested": 5000, "global_batch_tokens": 2048, "gradient_accumulation": 2,
                                  "max_steps": 3, "tokens_planned": 6144}
    assert manifest["global_step"] == 3 and manifest["tokens_per_step"] == 2048 and manifest["tokens_trained"] == 6144
    train = [r for r in rows(out) if "loss" in r]
    assert [(r["step"], r["tokens_seen"]) for r in train] == [(1, 2048), (2, 4096), (3, 6144)]
    assert all(r["tokens_total"] == r["tokens_seen"] and r["step_total"] == r["step"] for r in rows(out))
    # --warmup 0.5 is half of the 3 steps the budget gave (2, rounded up), not of a default step count:
    # the rate step 3 trains with is the peak (the log at step N shows the rate step N used)
    lr = dict(losses(out, "learning_rate"))
    assert (lr[1], lr[2], lr[3]) == pytest.approx((0.0, 1e-3, 2e-3))
    # TensorBoard gets the figures metrics.jsonl derives: bits per byte per language, tokens/s
    events = EventAccumulator(str(out / "tensorboard")).Reload()
    for tag, key in (("eval/km_bpb", "eval_km_bpb"), ("eval/en_bpb", "eval_en_bpb"),
                     ("train/tokens_per_s", "tokens_per_s")):
        logged = {e.step: e.value for e in events.Scalars(tag)}
        assert logged == pytest.approx(dict(losses(out, key)), rel=1e-6), tag


def test_an_indivisible_global_batch_is_refused_before_tokenizing(sample_pipeline, tmp_path):
    out = tmp_path / "indivisible"
    with pytest.raises(StageError, match=r"4 x --block-size 64 x 1 process\(es\) = 256 tokens; the nearest valid "
                                         r"values are 768 \(accumulation 3\) and 1,024 \(accumulation 4\)"):
        run_train(config(sample_pipeline, out, steps=None, global_batch_tokens=1000))
    assert not (out / "tokens").exists()


def test_report_to_wandb_without_wandb_is_refused_before_tokenizing(sample_pipeline, tmp_path):
    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    out = tmp_path / "wb"
    with pytest.raises(StageError, match="uv add wandb"):
        run_train(config(sample_pipeline, out, steps=2, report_to=["wandb"]))
    assert not (out / "tokens").exists()


def test_continual_pretraining_reads_config_and_tokenizer_from_the_model_folder(trained_model, sample_pipeline,
                                                                                tmp_path):
    """No --model-config, no --tokenizer-dir: both come from the model folder, the manifest records
    them, and steps and tokens continue the base run's (60 steps of 8 x 128 tokens)."""
    base = json.loads((trained_model / "manifest.json").read_text())
    assert (base["step_total"], base["tokens_total"]) == (60, 60 * 8 * 128)
    out = tmp_path / "cpt"
    cfg = TrainConfig(dataset_dir=str(sample_pipeline / "data"), output_dir=str(out), resume_from=str(trained_model),
                      block_size=128, micro_batch_size=8, max_tokens=4096, logging_steps=1, eval_steps=2, save_steps=2,
                      warmup=0.5, learning_rate=1e-3, device="cpu", dataloader_workers=0, report_to=["none"])
    manifest = run_train(cfg)
    assert manifest["start"] == "weights" and manifest["global_step"] == 4
    assert manifest["config"]["model_config"] == str(trained_model / "config.json")
    assert manifest["config"]["tokenizer_dir"] == manifest["tokenizer_dir"] == str(trained_model)
    used = manifest["model_config_used"]
    assert (used["n_layer"], used["n_embd"], used["n_positions"]) == (2, 128, 256)
    assert manifest["base_model"] == {"model": str(trained_model), "steps": 60, "tokens": 61440}
    assert (manifest["step_total"], manifest["tokens_total"]) == (64, 61440 + 4096)
    for r in rows(out):
        assert r["step_total"] == r["step"] + 60 and r["tokens_total"] == r["tokens_seen"] + 61440
    # the continued model's own manifest carries the totals on, for the next continuation
    final = json.loads((out / "final" / "manifest.json").read_text())
    assert (final["step_total"], final["tokens_total"]) == (64, 65536)
    # the first loss is the trained model's (its tokenizer was used as is), far below a fresh model's 7
    assert losses(out)[0][1] < math.log(1024) - 1

    # a disconnect after checkpoint-2: the same command with --resume-from auto resumes it, with the base
    # folder's config and tokenizer again and the base's counts still added
    shutil.rmtree(out / "final")
    shutil.rmtree(out / "checkpoint-4")
    resumed = run_train(dataclasses.replace(cfg, resume_from="auto"))
    assert resumed["start"] == "checkpoint" and resumed["resumed_from"].endswith("checkpoint-2")
    assert resumed["config"]["tokenizer_dir"] == str(trained_model)
    assert resumed["base_model"] == manifest["base_model"]
    assert (resumed["step_total"], resumed["tokens_total"]) == (64, 65536)
    assert [r["step_total"] for r in rows(out) if "loss" in r] == [61, 62, 63, 64]


def test_a_model_config_that_disagrees_with_the_model_folder_is_refused(trained_model, sample_pipeline, tmp_path):
    out = tmp_path / "bad"
    with pytest.raises(StageError, match=r"gpt2_500m.json: n_layer is 24, but the model in --resume-from .* has 2"):
        run_train(TrainConfig(dataset_dir=str(sample_pipeline / "data"), output_dir=str(out),
                              resume_from=str(trained_model), model_config=str(REPO / "configs/model/gpt2_500m.json"),
                              device="cpu", max_steps=1))
    assert not (out / "tokens").exists()


def test_a_model_config_with_the_same_architecture_sets_the_other_fields(trained_model, tmp_path):
    from transformers import AutoConfig

    from tonsai.train.continual import model_config_overrides

    tiny = json.loads((REPO / "configs/model/gpt2_tiny.json").read_text())
    path = tmp_path / "no_dropout.json"
    path.write_text(json.dumps({**tiny, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "vocab_size": 99}))
    folder = AutoConfig.from_pretrained(trained_model)
    assert model_config_overrides(str(path), folder, str(trained_model)) == {"resid_pdrop": 0.0, "embd_pdrop": 0.0}
    path.write_text(json.dumps({**tiny, "n_embd": 256}))
    with pytest.raises(StageError, match="n_embd is 256, but .* has 128"):
        model_config_overrides(str(path), folder, str(trained_model))


def test_deepspeed_ops_are_cached_per_virtual_environment(monkeypatch, tmp_path, caplog):
    import torch

    from tonsai.train import launch

    if torch.cuda.is_available():
        pytest.skip("DeepSpeed builds its CPU communication op only without a GPU")
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    assert sys.prefix != sys.base_prefix  # the tests run in the project's .venv
    assert launch.default_extensions_dir() == os.path.join(sys.prefix, "torch_extensions")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))  # a user's choice is kept
    assert launch.default_extensions_dir() == str(tmp_path)
    with caplog.at_level("INFO", logger="tonsai.train.launch"):
        assert launch.announce_cpu_op_build()
    assert "takes a few minutes, once" in caplog.text and str(tmp_path) in caplog.text
