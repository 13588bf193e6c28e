"""Sizing a run in tokens (tonsai.train.budget; --max-tokens, --global-batch-tokens): the token counts,
steps and accumulation, the flags' usage errors, and real tiny runs on the sample corpus that train
their budget or refuse an indivisible batch."""

import pytest

from tests.conftest import REPO
from tests.train.runs import config, losses, rows
from tonsai.cli import parse_config
from tonsai.errors import StageError
from tonsai.train.budget import TokenCount, resolve_budget
from tonsai.train.config import TrainConfig
from tonsai.train.run import run_train

TINY_RECIPE = str(REPO / "configs/train/gpt2_tiny_cpu.yaml")


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
