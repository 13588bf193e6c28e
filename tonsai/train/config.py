"""The typed config of the training stage (scripts/train_gpt2.py)."""

from __future__ import annotations

import dataclasses
import math

from tonsai.train.budget import DEFAULT_MAX_STEPS, TokenCount


@dataclasses.dataclass(kw_only=True)
class TrainerOptions:
    """The Trainer options every training stage shares (train_gpt2.py, train_sft.py): batch, schedule,
    precision, validation and checkpoint cadence, logging, disk guard, publishing. A stage's config
    subclasses it and adds its own fields (listed first in its --help)."""

    deepspeed: str | None = dataclasses.field(default=None, metadata={
        "help": "DeepSpeed JSON, e.g. configs/deepspeed/zero2_h100.json (works without a launcher too)"})
    micro_batch_size: int = dataclasses.field(default=8, metadata={"help": "sequences per device per step"})
    learning_rate: float = dataclasses.field(default=6e-4, metadata={"help": "peak learning rate"})
    warmup: float = dataclasses.field(default=0.05, metadata={
        "help": "warmup: a fraction of --max-steps if < 1, else a number of steps"})
    lr_schedule: str = dataclasses.field(default="cosine", metadata={
        "help": "learning-rate decay after warmup", "choices": ["cosine", "linear", "constant_with_warmup"]})
    weight_decay: float = dataclasses.field(default=0.1, metadata={"help": "AdamW weight decay"})
    max_grad_norm: float = dataclasses.field(default=1.0, metadata={"help": "gradient clipping norm (0: no clipping)"})
    precision: str = dataclasses.field(default="auto", metadata={
        "help": "bf16 on a GPU that supports it, fp32 on CPU, or force one", "choices": ["auto", "bf16", "fp32"]})
    device: str = dataclasses.field(default="auto", metadata={
        "help": "cuda when available, else cpu", "choices": ["auto", "cuda", "cpu"]})
    eval_steps: int = dataclasses.field(default=100, metadata={
        "help": "run per-language validation every this many steps"})
    eval_batch_size: int = dataclasses.field(default=8, metadata={"help": "windows per validation batch"})
    save_steps: int = dataclasses.field(default=500, metadata={"help": "write a checkpoint every this many steps"})
    save_total_limit: int = dataclasses.field(default=3, metadata={"help": "keep this many latest checkpoints"})
    logging_steps: int = dataclasses.field(default=10, metadata={"help": "log train metrics every this many steps"})
    seed: int = dataclasses.field(default=0, metadata={"help": "seed for initialization and data order"})
    gradient_checkpointing: bool = dataclasses.field(default=False, metadata={
        "help": "recompute activations in the backward pass to save memory"})
    report_to: list[str] = dataclasses.field(default_factory=lambda: ["tensorboard"], metadata={
        "help": "where to send training metrics besides metrics.jsonl: tensorboard (offline, in "
                "<output-dir>/tensorboard), wandb (install it with `uv add wandb`), or none"})
    overwrite: bool = dataclasses.field(default=False, metadata={
        "help": "start from scratch in an --output-dir that already holds checkpoints or a final model, "
                "deleting them (without it, such a folder is refused)"})
    local_rank: int = dataclasses.field(default=-1, metadata={
        "help": "set by the deepspeed launcher (--local_rank=N); the LOCAL_RANK environment variable is what is used",
        "aliases": ["--local_rank"]})
    min_free_disk_gb: float = dataclasses.field(default=1.0, metadata={
        "help": "free disk to keep beyond a checkpoint's size; below it the run stops before saving"})
    dataloader_workers: int = dataclasses.field(default=2, metadata={"help": "data loading worker processes"})
    push_to_hub: str | None = dataclasses.field(default=None, metadata={
        "help": "at the end, push final/ with a generated model card to this Hub repository (OWNER/NAME); "
                "needs HF_TOKEN or `hf auth login`, checked before training (scripts/push_to_hub.py does it later)"})
    hub_private: bool = dataclasses.field(default=False, metadata={
        "help": "with --push-to-hub: create the repository private"})



@dataclasses.dataclass
class TrainConfig(TrainerOptions):
    """Options of scripts/train_gpt2.py."""

    dataset_dir: str = dataclasses.field(metadata={"help": "folder written by prepare_dataset.py"})
    output_dir: str = dataclasses.field(metadata={
        "help": "run folder: token files, checkpoints, metrics.jsonl, final/ model, manifest.json"})
    tokenizer_dir: str | None = dataclasses.field(default=None, metadata={
        "help": "folder written by train_tokenizer.py (with --resume-from MODEL_FOLDER: default that folder's "
                "own tokenizer)"})
    model_config: str | None = dataclasses.field(default=None, metadata={
        "help": "Hugging Face causal-LM config JSON, e.g. configs/model/gpt2_500m.json (with --resume-from "
                "MODEL_FOLDER: default that folder's config.json; a config whose architecture differs is refused)"})
    resume_from: str | None = dataclasses.field(default=None, metadata={
        "help": "'auto' (latest checkpoint in --output-dir), a checkpoint folder (restores everything), "
                "or a Hugging Face model folder (weights only, fresh optimizer)"})
    tokens_dir: str | None = dataclasses.field(default=None, metadata={
        "help": "token folders written by tokenize_dataset.py (default: tokenize into <output-dir>/tokens)"})
    tokenize_workers: int = dataclasses.field(default=1, metadata={
        "help": "processes that tokenize the train split when tonsai tokenizes it itself"})
    vocab_transfer: bool = dataclasses.field(default=False, metadata={
        "help": "with --resume-from MODEL_FOLDER whose tokenizer differs from --tokenizer-dir: keep the "
                "embeddings of shared tokens and start new ones from the mean of their old sub-tokens"})
    block_size: int | None = dataclasses.field(default=None, metadata={
        "help": "tokens per training sequence (default: the model's context length)"})
    gradient_accumulation: int | None = dataclasses.field(default=None, metadata={
        "help": "micro-batches per optimizer step (default 1, or what --global-batch-tokens needs)"})
    global_batch_tokens: TokenCount | None = dataclasses.field(default=None, metadata={
        "help": "tokens per optimizer step over all processes, e.g. 262144: the gradient accumulation follows "
                "from micro batch x block x processes (must divide it exactly)"})
    max_steps: int | None = dataclasses.field(default=None, metadata={
        "help": f"optimizer steps to train for (default {DEFAULT_MAX_STEPS} unless --max-tokens is given)"})
    max_tokens: TokenCount | None = dataclasses.field(default=None, metadata={
        "help": "training tokens, e.g. 1e9 or 10e9: the steps follow from tokens per step (rounded up); "
                "instead of --max-steps"})
    optimizer: str = dataclasses.field(default="adamw", metadata={
        "help": "adamw (fused on GPU), or muon: torch.optim.Muon on the 2-D matrices inside the blocks, AdamW on "
                "embeddings, head, biases and norms, one learning rate for both (tonsai/train/optim.py); "
                "muon runs without --deepspeed and wants a higher --learning-rate than adamw (2-16x on the tiny "
                "presets: docs/train.md)", "choices": ["adamw", "muon"]})
    eval_max_tokens: int = dataclasses.field(default=1_000_000, metadata={
        "help": "validate on at most this many tokens of each language (the start of its validation "
                "split, which prepare shuffled); 0 for all. eval_model.py scores the whole split"})
    eval_stride: int | None = dataclasses.field(default=None, metadata={
        "help": "validation windows of --block-size tokens advance by this many (default: half the block, as "
                "eval_model.py's --stride), so each token is scored with at least block - stride of context"})
    torch_compile: bool = dataclasses.field(default=False, metadata={"help": "compile the model with torch.compile"})
    liger_kernel: bool = dataclasses.field(default=False, metadata={
        "help": "Liger Triton kernels (RMSNorm, RoPE, SwiGLU, fused linear cross-entropy) on a CUDA GPU, for "
                "architectures Liger supports, e.g. configs/model/llama_480m.json; GPT-2 has none"})

    def __post_init__(self) -> None:
        for name in ("max_tokens", "global_batch_tokens"):  # YAML gives 1e9 as a string
            value = getattr(self, name)
            if value is not None:
                try:
                    setattr(self, name, int(TokenCount(value)))
                except ValueError as e:
                    raise ValueError(f"--{name.replace('_', '-')}: {e}") from None
        if self.max_tokens is not None and self.max_steps is not None:
            raise ValueError(f"give --max-tokens ({self.max_tokens:,}) or --max-steps ({self.max_steps}), not both: "
                             f"the steps follow from the tokens")
        if self.global_batch_tokens is not None and self.gradient_accumulation is not None:
            raise ValueError(f"give --global-batch-tokens ({self.global_batch_tokens:,}) or --gradient-accumulation "
                             f"({self.gradient_accumulation}), not both: the accumulation follows from the tokens")
        for name, what in (("model_config", "config.json"), ("tokenizer_dir", "tokenizer")):
            if getattr(self, name) is None and self.resume_from is None:
                raise ValueError(f"--{name.replace('_', '-')} is required (it may be left out only with "
                                 f"--resume-from MODEL_FOLDER, whose own {what} is then used)")
        check_trainer_options(self, positive=("gradient_accumulation", "max_steps"))
        if self.eval_max_tokens < 0:
            raise ValueError("--eval-max-tokens must be >= 0 (0: the whole validation split)")
        if self.eval_stride is not None and self.eval_stride < 1:
            raise ValueError("--eval-stride must be at least 1")
        if self.eval_stride is not None and self.block_size is not None and self.eval_stride > self.block_size:
            raise ValueError(f"--eval-stride {self.eval_stride} is larger than --block-size {self.block_size}")
        if self.block_size is not None and self.block_size < 2:
            raise ValueError("--block-size must be at least 2")
        if self.optimizer == "muon" and self.deepspeed:
            raise ValueError("--optimizer muon needs whole weight matrices, and DeepSpeed ZeRO-2 hands the optimizer "
                             "flattened partitions: leave out --deepspeed (one GPU, or torchrun for several)")
        if self.tokenize_workers < 1:
            raise ValueError("--tokenize-workers must be at least 1")


def check_trainer_options(cfg: TrainerOptions, positive: tuple[str, ...] = ()) -> None:
    """The checks every training stage makes of its :class:`TrainerOptions` (and of the stage's own
    counts named in ``positive``, which must be at least 1 when given)."""
    for name in ("micro_batch_size", "eval_steps", "save_steps", "logging_steps", "eval_batch_size",
                 "save_total_limit", *positive):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")
    if cfg.save_steps % cfg.logging_steps:
        raise ValueError(f"--save-steps ({cfg.save_steps}) must be a multiple of --logging-steps "
                         f"({cfg.logging_steps}): the loss is checked for NaN/inf at every log, before a save")
    for name, low in (("learning_rate", None), ("warmup", 0.0), ("max_grad_norm", 0.0), ("weight_decay", 0.0),
                      ("min_free_disk_gb", 0.0)):
        value = getattr(cfg, name)
        flag = "--" + name.replace("_", "-")
        if value is None and low is None:
            continue  # a stage that picks its own default learning rate later
        if not math.isfinite(value):
            raise ValueError(f"{flag} must be a finite number, got {value}")
        if low is None and value <= 0:
            raise ValueError(f"{flag} must be positive, got {value}")
        if low is not None and value < low:
            raise ValueError(f"{flag} must be >= {low:g}, got {value}")
    unknown = set(cfg.report_to) - {"tensorboard", "wandb", "none"}
    if unknown:
        raise ValueError(f"--report-to: unknown {sorted(unknown)}; use tensorboard, wandb or none")
    if cfg.dataloader_workers < 0:
        raise ValueError("--dataloader-workers must be >= 0")
