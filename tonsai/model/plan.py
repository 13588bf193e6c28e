"""The run planner (scripts/plan_run.py): what a model costs on a GPU before anything runs."""

from __future__ import annotations

import dataclasses

from tonsai.model.cost import GPU_MEMORY_GB, GPU_PEAK_BF16, ModelShape, zero2_memory_gb


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


def plan(cfg: PlanConfig) -> dict:
    from tonsai.model.build import load_model_config, padded_vocab_size

    config = load_model_config(cfg.model_config)
    if cfg.vocab_size:
        config.vocab_size = padded_vocab_size(cfg.vocab_size)
    shape = ModelShape.from_config(config, cfg.seq_len)
    fpt = shape.flops_per_token()
    compute_fpt = fpt * (4 / 3 if cfg.activation_checkpointing else 1)  # one more forward pass
    peak = GPU_PEAK_BF16[cfg.gpu]
    tokens_per_step = cfg.micro_batch_size * cfg.gradient_accumulation * cfg.num_gpus * shape.seq_len
    tokens_per_s = cfg.mfu * peak * cfg.num_gpus / compute_fpt
    hours = cfg.tokens / tokens_per_s / 3600
    memory = zero2_memory_gb(shape, cfg.micro_batch_size, cfg.num_gpus, cfg.activation_checkpointing)
    return {
        "parameters": shape.parameters,
        "matmul_parameters": shape.matmul_parameters,
        "seq_len": shape.seq_len,
        "vocab_size": shape.vocab_size,
        "flops_per_token": fpt,
        "tokens_per_step": tokens_per_step,
        "optimizer_steps": cfg.tokens / tokens_per_step,
        "memory_gb_per_gpu": memory,
        "gpu_memory_gb": GPU_MEMORY_GB[cfg.gpu],
        "fits": memory["total"] < 0.9 * GPU_MEMORY_GB[cfg.gpu],
        "tokens_per_s": tokens_per_s,
        "hours": hours,
        "gpu_hours": hours * cfg.num_gpus,
        "cost_usd": hours * cfg.num_gpus * cfg.price_per_gpu_hour,
        "chinchilla_tokens": 20 * shape.parameters,
    }


def render(cfg: PlanConfig, p: dict) -> str:
    m = p["memory_gb_per_gpu"]
    return "\n".join([
        f"model            {cfg.model_config}: {p['parameters']:,} parameters ({p['parameters'] / 1e9:.3f}B), "
        f"context {p['seq_len']}, vocabulary {p['vocab_size']:,}",
        f"FLOPs per token  {p['flops_per_token'] / 1e9:.3f} GFLOP (6 x {p['matmul_parameters'] / 1e9:.3f}B matmul "
        f"parameters + attention), training, forward + backward",
        f"tokens per step  {p['tokens_per_step']:,} ({cfg.micro_batch_size} seq x {cfg.gradient_accumulation} accum x "
        f"{cfg.num_gpus} GPU x {p['seq_len']}); {p['optimizer_steps']:,.0f} steps for {cfg.tokens:.3g} tokens",
        f"memory / GPU     {m['total']:.1f} GB estimated under ZeRO-2 of {p['gpu_memory_gb']} GB "
        f"({'fits' if p['fits'] else 'does NOT fit: lower --micro-batch-size or use --activation-checkpointing'}): "
        f"weights {m['weights_bf16']:.1f}, grads {m['gradients_bf16']:.1f}, fp32 master {m['master_fp32']:.1f}, "
        f"Adam {m['adam_moments_fp32']:.1f}, activations {m['activations']:.1f}, logits {m['logits']:.1f}",
        f"throughput       {p['tokens_per_s']:,.0f} tokens/s at {cfg.mfu:.0%} MFU on {cfg.num_gpus} x {cfg.gpu} "
        f"({GPU_PEAK_BF16[cfg.gpu] / 1e12:.0f} TFLOP/s bf16 peak each)",
        f"time and cost    {p['hours']:.1f} h ({p['hours'] / 24:.2f} days), {p['gpu_hours']:.0f} GPU-hours, "
        f"${p['cost_usd']:,.0f} at ${cfg.price_per_gpu_hour:.2f}/GPU-hour",
        f"for scale        Chinchilla-optimal data for this size is about {p['chinchilla_tokens'] / 1e9:.1f}B tokens",
    ])


def run_plan(cfg: PlanConfig) -> dict:
    p = plan(cfg)
    print(render(cfg, p))
    return p
