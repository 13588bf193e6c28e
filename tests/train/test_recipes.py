"""The shipped run recipes (configs/train/*.yaml) and the command plan_run.py prints: a recipe is
what the planner plans, and the printed command trains exactly the planned steps and tokens."""

import shlex
from pathlib import Path

import pytest

from tonsai.cli import parse_config
from tonsai.model.build import context_length, load_model_config
from tonsai.model.plan import PlanConfig, run_plan
from tonsai.train.budget import resolve_budget
from tonsai.train.config import TrainConfig

from ..conftest import REPO

RECIPES = sorted((REPO / "configs/train").glob("*.yaml"))
FOLDERS = ["--dataset-dir", "runs/data", "--tokenizer-dir", "runs/tokenizer", "--output-dir", "runs/x"]


def budget_of(cfg: TrainConfig, world: int = 1):
    block = cfg.block_size or context_length(load_model_config(REPO / cfg.model_config))
    return resolve_budget(micro_batch_size=cfg.micro_batch_size, block_size=block, world_size=world,
                          gradient_accumulation=cfg.gradient_accumulation, global_batch_tokens=cfg.global_batch_tokens,
                          max_steps=cfg.max_steps, max_tokens=cfg.max_tokens)


def test_the_recipes_other_stages_name_are_shipped():
    assert {p.name for p in RECIPES} >= {"gpt2_500m_pilot_1b.yaml", "gpt2_500m_10b.yaml", "gpt2_tiny_cpu.yaml"}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_is_what_plan_run_plans_for_its_token_count(recipe, capsys):
    cfg = parse_config(TrainConfig, "", ["--config", str(recipe), *FOLDERS])
    assert cfg.max_tokens and cfg.global_batch_tokens  # sized in tokens, so it holds on any number of GPUs
    assert (REPO / cfg.model_config).is_file() and (cfg.deepspeed is None or (REPO / cfg.deepspeed).is_file())
    budget = budget_of(cfg)
    p = run_plan(PlanConfig(model_config=cfg.model_config, micro_batch_size=cfg.micro_batch_size,
                            gradient_accumulation=budget.gradient_accumulation, seq_len=budget.block_size,
                            tokens=cfg.max_tokens))
    assert (p["tokens_per_step"], p["optimizer_steps"], p["tokens_trained"]) == (
        budget.tokens_per_step, budget.max_steps, budget.tokens_planned)
    assert f"--config configs/train/{recipe.name}" in capsys.readouterr().out


def planned_command(argv, capsys):
    """plan_run.py's output for ``argv``, its plan, and the train_gpt2.py command it printed, parsed
    by train_gpt2.py's own parser."""
    p = run_plan(parse_config(PlanConfig, "", argv))
    out = capsys.readouterr().out
    text = out.split("command          ", 1)[1].replace("\\\n", " ")
    words = shlex.split(text)
    assert words[words.index("scripts/train_gpt2.py") - 1] in ("python", "2")  # uv run python | deepspeed --num_gpus 2
    return out, p, words, parse_config(TrainConfig, "", words[words.index("scripts/train_gpt2.py") + 1:])


@pytest.mark.parametrize("tokens, recipe, steps", [("1e9", "gpt2_500m_pilot_1b", 3815),
                                                   ("10e9", "gpt2_500m_10b", 38147)])
def test_plan_run_prints_the_recipe_that_trains_its_plan(tokens, recipe, steps, capsys):
    out, p, words, cfg = planned_command(["--model-config", "configs/model/gpt2_500m.json", "--tokens", tokens],
                                         capsys)
    assert words[:5] == ["uv", "run", "python", "scripts/train_gpt2.py", "--config"]
    assert Path(cfg.model_config) == Path("configs/model/gpt2_500m.json")
    assert words[5] == f"configs/train/{recipe}.yaml"
    assert f"262,144 (8 seq x 16 accum x 1 GPU x 2048); {steps:,} steps" in out
    budget = budget_of(cfg)
    assert (budget.max_steps, budget.gradient_accumulation, budget.tokens_per_step) == (steps, 16, 262_144)
    assert budget.tokens_planned == p["tokens_trained"] == steps * 262_144 >= float(tokens)


def test_plan_run_spells_out_the_flags_when_no_recipe_matches(capsys):
    out, p, words, cfg = planned_command(["--model-config", "configs/model/gpt2_500m.json", "--tokens", "2.5e9",
                                          "--num-gpus", "2", "--gradient-accumulation", "4"], capsys)
    assert words[:5] == ["uv", "run", "deepspeed", "--num_gpus", "2"] and "--config" not in words
    assert cfg.max_tokens == 2_500_000_000 and cfg.deepspeed == "configs/deepspeed/zero2_h100.json"
    budget = budget_of(cfg, world=2)
    assert budget.gradient_accumulation == 4 and budget.tokens_per_step == p["tokens_per_step"] == 131_072
    assert budget.max_steps == p["optimizer_steps"] == 19_074  # 2.5e9 / 131,072 = 19,073.5, rounded up
