"""What every training stage (train_gpt2.py, train_sft.py) hands the Hugging Face Trainer: the device
and precision, the TrainingArguments built from :class:`tonsai.train.config.TrainerOptions`, and the
TensorBoard callback writing to ``<output-dir>/tensorboard``."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch
from transformers import TrainingArguments
from transformers.integrations import TensorBoardCallback

from tonsai.errors import StageError
from tonsai.publish.push import check_can_push
from tonsai.train import launch
from tonsai.train.guards import cuda_problem, nvidia_driver_version

# torch.utils.tensorboard is imported inside report_callbacks, when a run logs to TensorBoard: it loads
# tensorboard and protobuf, 0.04 s (on a 2-core machine) on top of the torch and transformers that
# train_gpt2.py and train_sft.py load at start, and their --help does not need it.

ADAM_BETAS = (0.9, 0.95)  # AdamW's (and Muon's AdamW half's) betas: the GPT-2/3 pretraining values


def check_reporting(cfg) -> None:
    """Before any work (tokenizing a large dataset takes a while): wandb installed, Hub push possible."""
    if "wandb" in cfg.report_to:
        if importlib.util.find_spec("wandb") is None:
            raise StageError("--report-to wandb needs the wandb package: `uv add wandb` (and `wandb login`)")
    if cfg.push_to_hub:
        check_can_push(cfg.push_to_hub)  # offline or no token: say so now, not after training


def check_deepspeed(path: str | None) -> None:
    """Refuse a missing, malformed or ZeRO-3 DeepSpeed config; set up a launcher-less single process."""
    if not path:
        return
    if not Path(path).is_file():
        raise StageError(f"--deepspeed {path}: no such file (see configs/deepspeed/)")
    try:
        stage = json.loads(Path(path).read_text()).get("zero_optimization", {}).get("stage", 0)
    except json.JSONDecodeError as e:
        raise StageError(f"--deepspeed {path}: not valid JSON ({e})") from e
    if stage == 3:
        raise StageError(f"--deepspeed {path} asks for ZeRO stage 3, which tonsai does not support "
                         f"(validation runs forward passes per process; a 0.5B model fits under ZeRO-2): "
                         f"use configs/deepspeed/zero2_h100.json")
    launch.ensure_single_process_env()
    launch.default_extensions_dir()
    launch.announce_cpu_op_build()


def resolve_device(cfg) -> tuple[bool, bool]:
    """(use_cpu, bf16) for ``cfg.device`` and ``cfg.precision``; a GPU asked for but unusable is an error."""
    if cfg.device != "cpu" and not torch.cuda.is_available():
        problem = cuda_problem(nvidia_driver_version(), torch.version.cuda)
        if problem:
            raise StageError(problem)
        if cfg.device == "cuda":
            raise StageError("--device cuda, but torch sees no GPU (no NVIDIA driver found); use --device cpu")
    use_cpu = cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available())
    if cfg.precision in ("bf16", "fp32"):
        return use_cpu, cfg.precision == "bf16"
    return use_cpu, (not use_cpu) and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def report_callbacks(cfg) -> tuple[list[str], list, object | None]:
    """(report_to for the Trainer, extra callbacks, TensorBoard writer or None): TensorBoard gets an
    explicit folder through its callback with our own writer; the Trainer handles the rest."""
    report_to = [r for r in cfg.report_to if r not in ("none", "tensorboard")]
    callbacks, writer = [], None
    if "tensorboard" in cfg.report_to:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(Path(cfg.output_dir) / "tensorboard")) if launch.rank() == 0 else None
        callbacks.append(TensorBoardCallback(tb_writer=writer))
    return report_to, callbacks, writer


def training_arguments(cfg, *, max_steps: int, gradient_accumulation: int, learning_rate: float, use_cpu: bool,
                       bf16: bool, eval_on_start: bool, report_to: list[str], **extra):
    """TrainingArguments from the shared options; ``extra`` adds or overrides stage-specific ones."""
    args = dict(
        output_dir=cfg.output_dir,
        per_device_train_batch_size=cfg.micro_batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size,
        gradient_accumulation_steps=gradient_accumulation,
        max_steps=max_steps,
        learning_rate=learning_rate,
        warmup_steps=cfg.warmup,
        lr_scheduler_type=cfg.lr_schedule,
        weight_decay=cfg.weight_decay,
        adam_beta1=ADAM_BETAS[0],
        adam_beta2=ADAM_BETAS[1],
        max_grad_norm=cfg.max_grad_norm,
        bf16=bf16,
        use_cpu=use_cpu,
        eval_strategy="steps",
        eval_steps=cfg.eval_steps,
        eval_on_start=eval_on_start,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        seed=cfg.seed,
        data_seed=cfg.seed,
        deepspeed=cfg.deepspeed,
        report_to=report_to or "none",
        dataloader_num_workers=cfg.dataloader_workers,
        activation_checkpointing=cfg.gradient_checkpointing,
        remove_unused_columns=False,
        prediction_loss_only=True,
        logging_nan_inf_filter=False,  # NonFiniteLossGuard must see a non-finite loss, not an average that hides it
    )
    args.update(extra)
    return TrainingArguments(**args)
