"""The run planner (scripts/plan_run.py): what a model costs on a GPU before anything runs, and
the train_gpt2.py command that trains exactly that plan.

The command names a shipped recipe (configs/train/*.yaml) when one trains the same model with the
same tokens per step and the same number of steps, else it spells out the flags. Steps are counted
by tonsai.train.budget, the code training sizes itself with, so the two cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import logging
import shlex
from pathlib import Path

import yaml

from tonsai.errors import StageError
from tonsai.model.build import context_length, load_model_config, padded_vocab_size
from tonsai.model.cost import GPU_MEMORY_GB, GPU_PEAK_BF16, ModelShape, zero2_memory_gb
from tonsai.train.budget import resolve_budget, steps_for_tokens
from tonsai.train.config import TrainConfig

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "configs" / "train"
ZERO2 = "configs/deepspeed/zero2_h100.json"


@dataclasses.dataclass
class PlanConfig:
    """Options of scripts/plan_run.py."""

    model_config: str = dataclasses.field(metadata={"help": "model config JSON, e.g. configs/model/gpt2_500m.json"})
    gpu: str = dataclasses.field(default="h100", metadata={"help": "GPU type", "choices": sorted(GPU_PEAK_BF16)})
    num_gpus: int = dataclasses.field(default=1, metadata={"help": "data-parallel GPUs"})
    micro_batch_size: int = dataclasses.field(default=8, metadata={"help": "sequences per GPU per micro-step"})
    gradient_accumulation: int = dataclasses.field(default=16, metadata={"help": "micro-steps per optimizer step"})
    seq_len: int | None = dataclasses.field(default=None, metadata={"help": "tokens per sequence (default: context)"})
    vocab_size: int | None = dataclasses.field(default=None, metadata={
        "help": "vocabulary of the tokenizer you will use (default: the config's), rounded up to 64"})
    tokens: float = dataclasses.field(default=10e9, metadata={"help": "training token budget"})
    mfu: float = dataclasses.field(default=0.45, metadata={"help": "model FLOPs utilization to assume"})
    price_per_gpu_hour: float = dataclasses.field(default=2.50, metadata={
        "help": "assumed USD per GPU-hour (cloud prices vary; set yours)"})
    activation_checkpointing: bool = dataclasses.field(default=False, metadata={
        "help": "plan with activation checkpointing (less memory, about 1/3 more compute)"})

    def __post_init__(self) -> None:
        for name in ("num_gpus", "micro_batch_size", "gradient_accumulation"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
        if not 0 < self.mfu <= 1:
            raise ValueError("--mfu must be in (0, 1]")
        if self.tokens <= 0:
            raise ValueError("--tokens must be positive")


def _small(x: float) -> str:
    """One decimal, as the figures of a real run read; two significant digits where that would print
    0.0 (the tiny presets: 0.0071 GB, not 0.0)."""
    return f"{x:.1f}" if x >= 0.05 or x == 0 else f"{x:.2g}"


def _duration(hours: float) -> str:
    return f"{hours:.1f} h" if hours >= 0.05 else f"{hours * 3600:.2g} s"


def plan(cfg: PlanConfig) -> dict:
    config = load_model_config(cfg.model_config)
    if cfg.vocab_size:
        config.vocab_size = padded_vocab_size(cfg.vocab_size)
    if cfg.seq_len is not None and not 0 < cfg.seq_len <= context_length(config):
        # the command printed below passes it as --block-size, which train_gpt2.py refuses past the context
        raise StageError(f"--seq-len {cfg.seq_len} must be between 1 and the model's context length "
                         f"{context_length(config)} ({cfg.model_config}); a longer context needs a model config "
                         f"with larger n_positions / max_position_embeddings")
    shape = ModelShape.from_config(config, cfg.seq_len)
    fpt = shape.flops_per_token()
    compute_fpt = fpt * (4 / 3 if cfg.activation_checkpointing else 1)  # one more forward pass
    peak = GPU_PEAK_BF16[cfg.gpu]
    tokens_per_step = cfg.micro_batch_size * cfg.gradient_accumulation * cfg.num_gpus * shape.seq_len
    tokens_per_s = cfg.mfu * peak * cfg.num_gpus / compute_fpt
    hours = cfg.tokens / tokens_per_s / 3600
    memory = zero2_memory_gb(shape, cfg.micro_batch_size, cfg.num_gpus, cfg.activation_checkpointing)
    p = {
        "parameters": shape.parameters,
        "matmul_parameters": shape.matmul_parameters,
        "seq_len": shape.seq_len,
        "vocab_size": shape.vocab_size,
        "flops_per_token": fpt,
        "tokens_per_step": tokens_per_step,
        "optimizer_steps": steps_for_tokens(cfg.tokens, tokens_per_step),
        "tokens_trained": steps_for_tokens(cfg.tokens, tokens_per_step) * tokens_per_step,
        "memory_gb_per_gpu": memory,
        "gpu_memory_gb": GPU_MEMORY_GB[cfg.gpu],
        "fits": memory["total"] < 0.9 * GPU_MEMORY_GB[cfg.gpu],
        "tokens_per_s": tokens_per_s,
        "hours": hours,
        "gpu_hours": hours * cfg.num_gpus,
        "cost_usd": hours * cfg.num_gpus * cfg.price_per_gpu_hour,
        "chinchilla_tokens": 20 * shape.parameters,
    }
    p["command"] = command(cfg, p)
    return p


def render(cfg: PlanConfig, p: dict) -> str:
    m = p["memory_gb_per_gpu"]
    return "\n".join([
        f"model            {cfg.model_config}: {p['parameters']:,} parameters ({p['parameters'] / 1e9:.3f}B), "
        f"context {p['seq_len']}, vocabulary {p['vocab_size']:,}",
        f"FLOPs per token  {p['flops_per_token'] / 1e9:.3f} GFLOP (6 x {p['matmul_parameters'] / 1e9:.3f}B matmul "
        f"parameters + attention), training, forward + backward",
        f"tokens per step  {p['tokens_per_step']:,} ({cfg.micro_batch_size} seq x {cfg.gradient_accumulation} accum x "
        f"{cfg.num_gpus} GPU x {p['seq_len']}); {p['optimizer_steps']:,} steps for {cfg.tokens:.3g} tokens "
        f"(trains {p['tokens_trained']:,}: steps are rounded up)",
        f"memory / GPU     {_small(m['total'])} GB estimated under ZeRO-2 of {p['gpu_memory_gb']} GB "
        f"({'fits' if p['fits'] else 'does NOT fit: lower --micro-batch-size or use --activation-checkpointing'}): "
        f"weights {_small(m['weights_bf16'])}, grads {_small(m['gradients_bf16'])}, "
        f"fp32 master {_small(m['master_fp32'])}, Adam {_small(m['adam_moments_fp32'])}, "
        f"activations {_small(m['activations'])}, logits {_small(m['logits'])}",
        f"throughput       {p['tokens_per_s']:,.0f} tokens/s at {cfg.mfu:.0%} MFU on {cfg.num_gpus} x {cfg.gpu} "
        f"({GPU_PEAK_BF16[cfg.gpu] / 1e12:.0f} TFLOP/s bf16 peak each)",
        f"time and cost    {_duration(p['hours'])} ({p['hours'] / 24:.2f} days), {p['gpu_hours']:.0f} GPU-hours, "
        f"${p['cost_usd']:,.0f} at ${cfg.price_per_gpu_hour:.2f}/GPU-hour",
        f"for scale        Chinchilla-optimal data for this size is about "
        f"{_small(p['chinchilla_tokens'] / 1e9)}B tokens",
        "command          " + p["command"].replace("\n", "\n                 "),
    ])


def _tokens_text(tokens: float) -> str:
    """1e9 -> '1e9', 10e9 -> '10e9', 2.5e9 -> '2500e6', 256000 -> '256000' (what --max-tokens reads)."""
    for exp in (12, 9, 6):
        if tokens >= 10 ** exp and tokens % 10 ** exp == 0:
            return f"{int(tokens // 10 ** exp)}e{exp}"
    return str(int(tokens))


def _recipe(path: Path, cfg: "PlanConfig", p: dict) -> bool:
    """Whether the recipe at ``path`` trains the plan: same model config, block, micro batch and
    activation checkpointing, and, on the plan's number of GPUs, the same tokens per step and steps."""
    try:
        values = {k.replace("-", "_"): v for k, v in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).items()}
        model_config = REPO / values["model_config"]
        if model_config.resolve() != Path(cfg.model_config).resolve():
            return False
        block = values.get("block_size") or context_length(load_model_config(model_config))
        if block != p["seq_len"] or values.get("micro_batch_size", 8) != cfg.micro_batch_size:
            return False
        if bool(values.get("gradient_checkpointing", False)) != cfg.activation_checkpointing:
            return False
        train = TrainConfig(**{**values, "dataset_dir": "-", "tokenizer_dir": "-", "output_dir": "-"})
        budget = resolve_budget(micro_batch_size=train.micro_batch_size, block_size=block, world_size=cfg.num_gpus,
                                gradient_accumulation=train.gradient_accumulation,
                                global_batch_tokens=train.global_batch_tokens, max_steps=train.max_steps,
                                max_tokens=train.max_tokens)
    except Exception as e:  # a recipe that does not parse or does not fit this plan (e.g. indivisible batch)
        log.debug("recipe %s does not match: %s", path, e)
        return False
    return budget.tokens_per_step == p["tokens_per_step"] and budget.max_steps == p["optimizer_steps"]


def matching_recipe(cfg: "PlanConfig", p: dict) -> Path | None:
    """The first shipped recipe (configs/train/*.yaml, by name) that trains exactly this plan."""
    return next((r for r in sorted(RECIPES.glob("*.yaml")) if _recipe(r, cfg, p)), None)


def command(cfg: "PlanConfig", p: dict) -> str:
    """The train_gpt2.py command that realizes the plan; lines joined by ``\\`` continuations."""
    launcher = ["uv", "run", "python"] if cfg.num_gpus == 1 else ["uv", "run", "deepspeed", "--num_gpus",
                                                                    str(cfg.num_gpus)]
    recipe = matching_recipe(cfg, p)
    if recipe is not None:
        shape = ["--config", str(recipe.relative_to(REPO))]
        run = f"runs/{recipe.stem}"
    else:
        shape = ["--model-config", cfg.model_config, "--deepspeed", ZERO2, "--block-size", str(p["seq_len"]),
                 "--micro-batch-size", str(cfg.micro_batch_size), "--global-batch-tokens", str(p["tokens_per_step"]),
                 "--max-tokens", _tokens_text(cfg.tokens)]
        if cfg.activation_checkpointing:
            shape.append("--gradient-checkpointing")
        run = f"runs/{Path(cfg.model_config).stem}"
    lines = [launcher + ["scripts/train_gpt2.py"] + shape[:4], shape[4:],
             ["--dataset-dir", "runs/data", "--tokenizer-dir", "runs/tokenizer", "--output-dir", run]]
    return " \\\n    ".join(shlex.join(line) for line in lines if line)


def run_plan(cfg: PlanConfig) -> dict:
    p = plan(cfg)
    print(render(cfg, p))
    return p
