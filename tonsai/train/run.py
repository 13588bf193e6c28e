"""The training stage: GPT-2 (or any HF causal LM) pretraining with the HF Trainer, optionally
under DeepSpeed ZeRO-2, with per-language validation during training.

Flow: check inputs (dataset and tokenizer manifests) -> tokenize-and-pack into
``<output_dir>/tokens`` (reused when the tokenizer hash matches) -> build or load the model ->
Trainer.train -> export ``<output_dir>/final`` (safetensors + tokenizer, loads without DeepSpeed).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from pathlib import Path

from tonsai.atomic import write_text
from tonsai.cli import StageError
from tonsai.folders import claim_in_place
from tonsai.manifest import ManifestError, read_manifest, write_manifest
from tonsai.publish.push import check_can_push, push_folder
from tonsai.tokenizer.export import save_tokenizer
from tonsai.tokenizer.pack import PackedBlocks, TokenFile, dataset_hash, pack_dataset, tokenizer_hash
from tonsai.train import launch
from tonsai.train.checkpoint import CHECKSUMS, check, newest_verified, set_aside, unsafe_pickles
from tonsai.train.config import TrainConfig
from tonsai.train.guards import DiskSpaceGuard, NonFiniteLossGuard, cuda_problem, nvidia_driver_version

log = logging.getLogger(__name__)
STAGE = "train"
MODEL_STAGE = "model"
SMALL_FILES_BYTES = 64 * 1024


def _token_folders(cfg: TrainConfig, tok_sha: str) -> dict[str, Path]:
    """Token folders for the train split and each validation language: --tokens-dir if given, else
    made (once, by rank 0; other ranks wait) in <output_dir>/tokens."""
    data_sha = dataset_hash(cfg.dataset_dir)
    if cfg.tokens_dir is not None:
        manifest = read_manifest(cfg.tokens_dir, "tokens")
        if manifest["tokenizer_sha256"] != tok_sha:
            raise StageError(f"--tokens-dir {cfg.tokens_dir} was made with another tokenizer than "
                             f"--tokenizer-dir {cfg.tokenizer_dir}; re-run tokenize_dataset.py")
        if "dataset_manifest_sha256" not in manifest:
            log.warning("--tokens-dir %s predates dataset tracking (and the literal <|endoftext|> fix): it cannot "
                        "be checked against --dataset-dir; re-run tokenize_dataset.py to be sure", cfg.tokens_dir)
        elif manifest["dataset_manifest_sha256"] != data_sha:
            raise StageError(f"--tokens-dir {cfg.tokens_dir} was made from another preparation than "
                             f"--dataset-dir {cfg.dataset_dir} (its manifest.json differs); "
                             f"re-run tokenize_dataset.py")
        return {name: Path(cfg.tokens_dir) / name for name in manifest["folders"]}
    tokens_dir = Path(cfg.output_dir) / "tokens"
    if launch.rank() == 0:
        return pack_dataset(cfg.dataset_dir, cfg.tokenizer_dir, tokens_dir, cfg.tokenize_workers, cfg)
    deadline = time.time() + 3600
    while True:  # rank 0 writes the manifest last
        try:
            manifest = read_manifest(tokens_dir, "tokens")
            if manifest["tokenizer_sha256"] == tok_sha and manifest.get("dataset_manifest_sha256") == data_sha:
                return {name: tokens_dir / name for name in manifest["folders"]}
        except ManifestError:
            pass
        if time.time() > deadline:
            raise StageError("timed out waiting for rank 0 to tokenize the dataset")
        time.sleep(1)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest ``checkpoint-N`` folder in ``output_dir`` that verifies (tonsai.train.checkpoint)."""
    return newest_verified(output_dir)[0]


def _looks_like_checkpoint(p: Path) -> bool:
    """A Trainer checkpoint folder, complete or not (a model folder has none of these)."""
    if not p.is_dir():
        return False
    return (re.fullmatch(r"checkpoint-\d+", p.name) is not None or (p / "trainer_state.json").exists()
            or (p / CHECKSUMS).exists() or (p / "optimizer.pt").exists() or any(p.glob("global_step*"))
            or any(p.glob("rng_state*")))


def _safe_to_load(ckpt: Path, how: str) -> None:
    problem = unsafe_pickles(ckpt)
    if problem:
        raise StageError(f"{how} {ckpt}: refused: {problem}. DeepSpeed unpickles its files without "
                         f"restriction, so tonsai loads none that needs more than tensors and numpy arrays. "
                         f"Resume from a checkpoint you trust, or start over")


def _resolve_auto(cfg: TrainConfig) -> tuple[str, str | None, list]:
    ckpt, skipped = newest_verified(cfg.output_dir)
    for p, verdict in skipped:
        log.warning("--resume-from auto: skipping %s: %s", p.name, verdict.reason)
    damaged = [f"{p.name} ({v.reason})" for p, v in skipped if v.status in ("corrupt", "unverified")]
    if ckpt is None and damaged and not cfg.overwrite:  # finished checkpoints, not a kill: a person decides
        raise StageError(f"--resume-from auto: no checkpoint in {cfg.output_dir} verifies: {'; '.join(damaged)}. "
                         f"Restore it from a copy, resume one by name (a checkpoint without checksums.json is "
                         f"accepted by name, with a warning), or pass --overwrite to start over (they are then "
                         f"kept as corrupt-/unverified-checkpoint-N)")
    if ckpt is None:
        log.info("--resume-from auto: no complete checkpoint in %s, starting from scratch", cfg.output_dir)
        return "scratch", None, skipped
    _safe_to_load(ckpt, "--resume-from auto:")
    log.info("--resume-from auto: %s verifies (checksums.json)", ckpt.name)
    return "checkpoint", str(ckpt), skipped


def _resolve_resume(cfg: TrainConfig) -> tuple[str, str | None, list]:
    """Return (kind, path, skipped): kind is 'scratch', 'checkpoint' or 'weights'; skipped lists the
    (checkpoint, Verdict) that --resume-from auto passed over, to be set aside once the folder is ours."""
    r = cfg.resume_from
    if r is None:
        return "scratch", None, []
    if r == "auto":
        return _resolve_auto(cfg)
    p = Path(r)
    if _looks_like_checkpoint(p):
        verdict = check(p)
        if verdict.status == "unverified":
            log.warning("--resume-from %s: %s; resuming it unverified, as asked by name", r, verdict.reason)
        elif not verdict.ok:
            raise StageError(f"--resume-from {r}: the checkpoint does not verify: {verdict.reason}. Resume from an "
                             f"earlier checkpoint, or pass --resume-from auto to pick the newest that verifies")
        _safe_to_load(p, "--resume-from")
        return "checkpoint", str(p), []
    if p.is_dir() and not (p / "config.json").is_file():
        raise StageError(f"--resume-from {r}: neither a training checkpoint (trainer_state.json) "
                         f"nor a model folder (config.json)")
    return "weights", r, []  # a model folder or a Hub id


def _prepare_output_dir(cfg: TrainConfig, kind: str, resume_path: str | None, step: int) -> None:
    """Refuse to mix a fresh run with an old one; on resume from the checkpoint of ``step``, drop
    metrics logged after it."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if launch.rank() != 0:
        return
    metrics = out / "metrics.jsonl"
    if kind == "checkpoint":
        if metrics.is_file():
            kept = []
            for line in metrics.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line).get("step", 0) <= step:
                        kept.append(line)
                except (json.JSONDecodeError, AttributeError):
                    pass  # blank, or cut short when the run was killed mid-write: dropped
            write_text(metrics, "".join(line + "\n" for line in kept))
        return
    old = sorted(out.glob("checkpoint-*")) + [p for p in (out / "final",) if p.exists()]
    if cfg.resume_from == "auto":  # none of its checkpoints verified: run_train sets them aside (set_aside)
        old = [p for p in old if not p.name.startswith("checkpoint-")]
    if old and cfg.overwrite and resume_path and any(Path(resume_path).resolve().is_relative_to(p.resolve())
                                                    for p in old):
        raise StageError(f"--resume-from {resume_path} is inside --output-dir {out}, which --overwrite would "
                         f"delete first: copy that model elsewhere, or choose another --output-dir")
    if old and not cfg.overwrite:
        raise StageError(
            f"{out} already holds {', '.join(p.name for p in old[:3])}{' ...' if len(old) > 3 else ''}: "
            f"pass --resume-from auto to continue that run, --overwrite to start over there, "
            f"or choose another --output-dir")
    for p in old:
        shutil.rmtree(p)
    metrics.unlink(missing_ok=True)


def _first_checkpoint_bytes(model, cfg: TrainConfig, bf16: bool) -> int:
    """The disk guard's estimate before the first checkpoint (tonsai.train.guards); every checkpoint also
    holds the tokenizer's files and a few small ones (trainer state, RNG, DeepSpeed's zero_to_fp32.py)."""
    from tonsai.train.guards import estimate_checkpoint_bytes

    tokenizer_files = sum(p.stat().st_size for p in Path(cfg.tokenizer_dir).iterdir()
                          if p.is_file() and p.name != "manifest.json")
    return estimate_checkpoint_bytes(model, bool(cfg.deepspeed), bf16, tokenizer_files + SMALL_FILES_BYTES)


def _match_vocabulary(model, base: str, tokenizer, cfg: TrainConfig) -> None:
    """Continual pretraining: the base model's tokenizer must be --tokenizer-dir's, or be transferred."""
    from transformers import AutoTokenizer

    from tonsai.model.build import padded_vocab_size
    from tonsai.model.vocab_transfer import transfer_vocabulary

    local = Path(base)
    has_files = not local.is_dir() or any((local / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json",
                                                                            "tokenizer.model", "vocab.json"))
    try:
        old = AutoTokenizer.from_pretrained(base) if has_files else None
    except (OSError, ValueError):
        old = None
    if old is not None and old.get_vocab() == tokenizer.get_vocab():
        if model.get_input_embeddings().num_embeddings < len(tokenizer):
            raise StageError(f"--resume-from {base}: fewer embedding rows than tokens in its own tokenizer")
        return
    what = "has no tokenizer to compare with" if old is None else (
        f"has a different tokenizer ({len(old):,} tokens, {len(set(old.get_vocab()) & set(tokenizer.get_vocab())):,} "
        f"shared with the {len(tokenizer):,} of --tokenizer-dir)")
    if not cfg.vocab_transfer or old is None:
        raise StageError(
            f"--resume-from {base} {what}. Its embeddings index another vocabulary, so training on "
            f"--tokenizer-dir {cfg.tokenizer_dir} would read the wrong rows. Pass --vocab-transfer to map them "
            f"(shared tokens keep their rows, new ones start from their old sub-tokens), or continue with the "
            f"model's own tokenizer as --tokenizer-dir.")
    rep = transfer_vocabulary(model, old, tokenizer, padded_vocab_size(len(tokenizer)))
    for name, value in (("bos_token_id", tokenizer.bos_token_id), ("eos_token_id", tokenizer.eos_token_id),
                        ("pad_token_id", tokenizer.pad_token_id)):
        setattr(model.config, name, value)
    log.info("vocabulary transfer: %d tokens copied, %d initialized from old sub-tokens, %d from the mean",
             rep.copied, rep.initialized_from_subtokens, rep.initialized_from_mean)


def _precision(cfg: TrainConfig, use_cpu: bool) -> bool:
    import torch

    if cfg.precision == "bf16":
        return True
    if cfg.precision == "fp32":
        return False
    return (not use_cpu) and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def check_liger(model_type: str, use_cpu: bool) -> str | None:
    """Why --liger-kernel cannot run here, or None."""
    if use_cpu:
        return "--liger-kernel needs a CUDA GPU (its kernels are Triton); leave it out on CPU"
    try:
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    except ImportError:
        return "--liger-kernel needs the liger-kernel package (installed by `uv sync` on Linux)"
    if model_type not in MODEL_TYPE_TO_APPLY_LIGER_FN:
        return (f"--liger-kernel: Liger has no kernels for {model_type!r} models; it supports e.g. llama "
                "(configs/model/llama_480m.json), mistral, qwen2, gemma. Leave the flag out for GPT-2.")
    return None


# what a run folder made before ownership marks held (tonsai.folders)
RUN_ENTRIES = ("checkpoint-*", "final", ".final-incomplete", "metrics.jsonl", "tokens", "tensorboard",
               "manifest.json")


def run_train(cfg: TrainConfig) -> dict:
    """Train into --output-dir. Rank 0 claims and locks the run folder for the whole run
    (tonsai.folders): a folder holding anything but this run's own files, or any input, is refused,
    and a second training into the same folder is refused while the first runs."""
    if "wandb" in cfg.report_to:  # before any work: tokenizing a large dataset takes a while
        import importlib.util

        if importlib.util.find_spec("wandb") is None:
            raise StageError("--report-to wandb needs the wandb package: `uv add wandb` (and `wandb login`)")
    if cfg.push_to_hub:
        check_can_push(cfg.push_to_hub)  # offline or no token: say so now, not after training
    if launch.rank() != 0:
        return _run_train(cfg)
    out = Path(cfg.output_dir).resolve()
    inputs = [p for p in (cfg.dataset_dir, cfg.tokenizer_dir, cfg.tokens_dir, cfg.resume_from, cfg.model_config,
                          cfg.deepspeed) if p and p != "auto" and not Path(p).resolve().is_relative_to(out)]
    with claim_in_place(cfg.output_dir, STAGE, inputs=inputs, legacy=RUN_ENTRIES):
        return _run_train(cfg)


def _run_train(cfg: TrainConfig) -> dict:
    if cfg.deepspeed:
        if not Path(cfg.deepspeed).is_file():
            raise StageError(f"--deepspeed {cfg.deepspeed}: no such file (see configs/deepspeed/)")
        try:
            stage = json.loads(Path(cfg.deepspeed).read_text()).get("zero_optimization", {}).get("stage", 0)
        except json.JSONDecodeError as e:
            raise StageError(f"--deepspeed {cfg.deepspeed}: not valid JSON ({e})") from e
        if stage == 3:
            raise StageError(f"--deepspeed {cfg.deepspeed} asks for ZeRO stage 3, which tonsai does not support "
                             f"(validation runs forward passes per process; a 0.5B model fits under ZeRO-2): "
                             f"use configs/deepspeed/zero2_h100.json")
        launch.ensure_single_process_env()
        launch.default_extensions_dir()
        launch.announce_cpu_op_build()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments, default_data_collator

    from tonsai.model.build import build_model, context_length, count_parameters, load_model_config
    from tonsai.model.cost import GPU_PEAK_BF16, ModelShape, gpu_key
    from tonsai.train import continual
    from tonsai.train.budget import resolve_budget
    from tonsai.train.callbacks import MetricsLogger
    from tonsai.train.trainer import TonsaiTrainer, ValidationStream

    read_manifest(cfg.dataset_dir, "prepare")
    kind, resume_path, skipped = _resolve_resume(cfg)
    if kind == "weights":
        cfg = continual.with_folder_defaults(cfg, resume_path)
    elif cfg.model_config is None or cfg.tokenizer_dir is None:
        base_folder = continual.recorded_base(cfg.output_dir) if kind == "checkpoint" else None
        if base_folder is None:
            raise StageError(f"--resume-from {cfg.resume_from}: {resume_path or 'no checkpoint'} does not continue a "
                             f"model folder: pass --model-config and --tokenizer-dir as when the run started")
        cfg = continual.with_folder_defaults(cfg, base_folder)
    tok_manifest = continual.tokenizer_manifest(cfg.tokenizer_dir)
    tok_sha = tokenizer_hash(cfg.tokenizer_dir)
    if tok_manifest.get("tokenizer_sha256") not in (None, tok_sha):
        raise StageError(f"{cfg.tokenizer_dir}/tokenizer.json changed after training (hash differs from its manifest)")
    tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer_dir)
    if kind == "weights":
        log.info("continual pretraining: loading weights from %s (fresh optimizer and LR schedule)", resume_path)
        overrides = {}
        if cfg.model_config is not None and Path(cfg.model_config).resolve() != (
                Path(resume_path) / "config.json").resolve():
            from transformers import AutoConfig

            overrides = continual.model_config_overrides(cfg.model_config, AutoConfig.from_pretrained(resume_path),
                                                         resume_path)
        model = AutoModelForCausalLM.from_pretrained(resume_path, attn_implementation="sdpa", dtype=torch.float32,
                                                     **overrides)
        _match_vocabulary(model, resume_path, tokenizer, cfg)
        config = model.config
    else:
        config = load_model_config(cfg.model_config, tokenizer)
        torch.manual_seed(cfg.seed)
        model = build_model(config)
        if kind == "checkpoint":
            log.info("resuming everything (weights, optimizer, schedule, data position) from %s", resume_path)
    n_params = count_parameters(model)
    ctx = context_length(config)
    block_size = cfg.block_size or ctx
    if block_size > ctx:
        raise StageError(f"--block-size {block_size} exceeds the model's context length {ctx}")
    eval_stride = cfg.eval_stride or max(1, block_size // 2)
    if eval_stride > block_size:
        raise StageError(f"--eval-stride {eval_stride} is larger than the block of {block_size} tokens")
    world = launch.world_size()
    budget = resolve_budget(micro_batch_size=cfg.micro_batch_size, block_size=block_size, world_size=world,
                            gradient_accumulation=cfg.gradient_accumulation,
                            global_batch_tokens=cfg.global_batch_tokens, max_steps=cfg.max_steps,
                            max_tokens=cfg.max_tokens)
    resumed_at = (json.loads((Path(resume_path) / "trainer_state.json").read_text())["global_step"]
                  if kind == "checkpoint" else 0)
    _prepare_output_dir(cfg, kind, resume_path, resumed_at)  # after every check that can refuse the run: it may delete
    base = continual.record_base(cfg.output_dir, kind, resume_path, main=launch.rank() == 0)
    if launch.rank() == 0:
        set_aside(skipped)  # once the folder is ours: never-finished checkpoints removed, damaged ones renamed
    log.info("model %s: %s parameters (%.3fB), context %d, vocabulary %d (tokenizer %d)",
             config.model_type, f"{n_params:,}", n_params / 1e9, ctx, config.vocab_size, len(tokenizer))

    dtype = tok_manifest.get("token_dtype")
    paths = _token_folders(cfg, tok_sha)
    train_tokens = TokenFile(paths["train"], tok_sha, dtype)
    train_ds = PackedBlocks(train_tokens.tokens, block_size, token_file=train_tokens)
    if len(train_ds) == 0:
        raise StageError(f"the training split has {len(train_tokens)} tokens: fewer than one block of "
                         f"{block_size}; lower --block-size or add data")
    eval_ds, tokens_per_byte = {}, {}
    for name, path in paths.items():
        if name.startswith("validation_"):
            lang = name.removeprefix("validation_")
            tf = TokenFile(path, tok_sha, dtype)
            eval_ds[lang] = ValidationStream(tf.tokens, tf.meta["eos_id"], block_size, eval_stride,
                                             tokenizer.pad_token_id, cfg.eval_max_tokens or None)
            if eval_ds[lang].scored < len(tf):
                log.info("validation %s: scoring the first %s of its %s tokens (--eval-max-tokens); "
                         "bits per byte assume the split's average bytes per token", lang,
                         f"{eval_ds[lang].scored:,}", f"{len(tf):,}")
            # the same denominator as eval_model.py: UTF-8 bytes plus one per end-of-text (tonsai.eval.perplexity)
            tokens_per_byte[lang] = tf.meta["tokens"] / max(1, tf.meta["bytes"] + tf.meta["documents"])

    if cfg.device != "cpu" and not torch.cuda.is_available():
        problem = cuda_problem(nvidia_driver_version(), torch.version.cuda)
        if problem:
            raise StageError(problem)
        if cfg.device == "cuda":
            raise StageError("--device cuda, but torch sees no GPU (no NVIDIA driver found); use --device cpu")
    use_cpu = cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available())
    bf16 = _precision(cfg, use_cpu)
    if cfg.liger_kernel:
        liger_problem = check_liger(config.model_type, use_cpu)
        if liger_problem:
            raise StageError(liger_problem)
    tokens_per_step = budget.tokens_per_step
    log.info("%d training blocks of %d tokens; %s; %s; %s", len(train_ds), block_size, budget.describe(),
             "bf16" if bf16 else "fp32", f"DeepSpeed {cfg.deepspeed}" if cfg.deepspeed else "no DeepSpeed")
    # TensorBoard gets an explicit folder through our own callback; the Trainer handles the rest
    report_to = [r for r in cfg.report_to if r not in ("none", "tensorboard")]
    extra_callbacks, writer = [], None
    if "tensorboard" in cfg.report_to:
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        writer = SummaryWriter(log_dir=str(Path(cfg.output_dir) / "tensorboard")) if launch.rank() == 0 else None
        extra_callbacks.append(TensorBoardCallback(tb_writer=writer))
    args = TrainingArguments(
        output_dir=cfg.output_dir,
        per_device_train_batch_size=cfg.micro_batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size,
        gradient_accumulation_steps=budget.gradient_accumulation,
        max_steps=budget.max_steps,
        learning_rate=cfg.learning_rate,
        warmup_steps=cfg.warmup,
        lr_scheduler_type=cfg.lr_schedule,
        weight_decay=cfg.weight_decay,
        adam_beta1=0.9,
        adam_beta2=0.95,
        max_grad_norm=cfg.max_grad_norm,
        bf16=bf16,
        use_cpu=use_cpu,
        eval_strategy="steps",
        eval_steps=cfg.eval_steps,
        eval_on_start=kind != "checkpoint",  # a resumed run already logged this evaluation
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
        torch_compile=cfg.torch_compile,
        use_liger_kernel=cfg.liger_kernel,
        remove_unused_columns=False,
        prediction_loss_only=True,
        logging_nan_inf_filter=False,  # NonFiniteLossGuard must see a non-finite loss, not an average that hides it
    )
    nan_guard = NonFiniteLossGuard()
    shape = ModelShape.from_config(config, block_size)
    peak = GPU_PEAK_BF16.get(gpu_key(torch.cuda.get_device_name()) or "") if not use_cpu else None
    log.info("%.3f GFLOP per token (tonsai.model.cost)%s", shape.flops_per_token() / 1e9,
             f"; MFU against {peak / 1e12:.0f} TFLOP/s" if peak else "; no MFU on this device")
    optimizer_cls_and_kwargs = None
    if cfg.optimizer == "muon":
        from tonsai.train.optim import MuonAdamW, tag_muon_parameters

        n_muon, n_adam = tag_muon_parameters(model)
        log.info("optimizer: Muon on %s matrix parameters, AdamW on %s others", f"{n_muon:,}", f"{n_adam:,}")
        optimizer_cls_and_kwargs = (MuonAdamW, {"lr": cfg.learning_rate, "weight_decay": cfg.weight_decay,
                                                "betas": (0.9, 0.95), "eps": 1e-8})
    trainer = TonsaiTrainer(
        langs=train_tokens.langs if train_tokens.lang_runs is not None else None,
        optimizer_cls_and_kwargs=optimizer_cls_and_kwargs,
        model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
        data_collator=default_data_collator, processing_class=tokenizer,
        callbacks=[MetricsLogger(Path(cfg.output_dir) / "metrics.jsonl", tokens_per_step, tokens_per_byte,
                                 shape.flops_per_token(), peak, world, base_steps=base["steps"],
                                 base_tokens=base["tokens"], tb_writer=writer),
                   nan_guard, DiskSpaceGuard(cfg.output_dir, _first_checkpoint_bytes(model, cfg, bf16),
                                             cfg.min_free_disk_gb), *extra_callbacks],
    )
    result = trainer.train(resume_from_checkpoint=resume_path if kind == "checkpoint" else None)
    # mean training loss of the steps this process trained; none when it resumed from the last step's checkpoint
    train_loss = result.training_loss if trainer.state.global_step > resumed_at else None
    if nan_guard.bad_step is not None:
        last = latest_checkpoint(cfg.output_dir)
        raise StageError(
            f"the training loss became {nan_guard.loss} at step {nan_guard.bad_step}; training stopped without "
            f"saving. The last complete checkpoint is {last or 'none'}: resume it with --resume-from auto and a "
            f"lower --learning-rate (or more --warmup), or inspect the data near that step.")
    final_metrics = {}
    for lang, ds in eval_ds.items():
        last = [e for e in trainer.state.log_history if f"eval_{lang}_loss" in e]
        if last and last[-1].get("step") == trainer.state.global_step:
            final_metrics[f"eval_{lang}_loss"] = last[-1][f"eval_{lang}_loss"]
        else:
            final_metrics.update(trainer.evaluate(ds, metric_key_prefix=f"eval_{lang}"))

    out = Path(cfg.output_dir)
    staging = out / ".final-incomplete"
    trainer.save_model(str(staging))
    if trainer.is_world_process_zero():
        save_tokenizer(tokenizer, staging, model_max_length=ctx)  # loads in transformers 4.x too
        trained = next((int(e["tokens_seen"]) for e in reversed(trainer.state.log_history)
                        if "tokens_seen" in e and e.get("step") == trainer.state.global_step),
                       trainer.state.global_step * tokens_per_step)
        common = dict(parameters=n_params, model_type=config.model_type, vocab_size=config.vocab_size,
                      block_size=block_size, tokenizer_sha256=tok_sha, tokenizer_dir=str(cfg.tokenizer_dir),
                      dataset_dir=str(cfg.dataset_dir), start=kind, resumed_from=resume_path,
                      model_config_used=config.to_diff_dict(), base_model=base,
                      step_total=base["steps"] + trainer.state.global_step, tokens_total=base["tokens"] + trained)
        write_manifest(staging, MODEL_STAGE, cfg, **common)
        final = out / "final"
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        history = [e for e in trainer.state.log_history if any(k.startswith("eval_") for k in e)]
        manifest = write_manifest(
            out, STAGE, cfg, **common, global_step=trainer.state.global_step,
            train_loss=train_loss, final_validation=final_metrics,
            tokens_per_step=tokens_per_step, world_size=world, precision="bf16" if bf16 else "fp32",
            budget=dict(tokens_requested=budget.tokens_requested, global_batch_tokens=cfg.global_batch_tokens,
                        gradient_accumulation=budget.gradient_accumulation, max_steps=budget.max_steps,
                        tokens_planned=budget.tokens_planned),
            tokens_trained=trained,
            validation_history=history)
        log.info("final model written to %s", final)
        if cfg.push_to_hub:
            push_folder(final, cfg.push_to_hub, private=cfg.hub_private)
        return manifest
    return {}
