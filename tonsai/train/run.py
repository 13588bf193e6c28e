"""The training stage: GPT-2 (or any HF causal LM) pretraining with the HF Trainer, optionally
under DeepSpeed ZeRO-2, with per-language validation during training.

Flow: check inputs (dataset and tokenizer manifests) -> tokenize-and-pack into
``<output_dir>/tokens`` (reused when the tokenizer hash matches) -> build or load the model ->
Trainer.train -> export ``<output_dir>/final`` (safetensors + tokenizer, loads without DeepSpeed).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, default_data_collator

from tonsai.atomic import replace_dir
from tonsai.errors import StageError
from tonsai.folders import claim_in_place
from tonsai.manifest import ManifestError, dataset_hash, read_manifest, tokenizer_hash, write_manifest
from tonsai.model.build import (build_model, context_length, count_parameters, load_model_config, name_causal_lm_loss,
                                padded_vocab_size)
from tonsai.model.cost import GPU_PEAK_BF16, ModelShape, gpu_key
from tonsai.model.vocab_transfer import transfer_vocabulary
from tonsai.publish.push import push_folder
from tonsai.tokenizer.export import load_tokenizer, save_tokenizer
from tonsai.tokenizer.pack import PackedBlocks, TokenFile, pack_dataset
from tonsai.train import continual, launch
from tonsai.train.arguments import (ADAM_BETAS, check_deepspeed, check_reporting, report_callbacks, resolve_device,
                                    training_arguments)
from tonsai.train.budget import resolve_budget
from tonsai.train.callbacks import MetricsLogger
from tonsai.train.checkpoint import set_aside
from tonsai.train.config import TrainConfig
from tonsai.train.guards import DiskSpaceGuard, NonFiniteLossGuard
from tonsai.train.optim import MuonAdamW, tag_muon_parameters
from tonsai.train.resume import (RUN_ENTRIES, first_checkpoint_bytes, latest_checkpoint, prepare_output_dir,
                                 resolve_resume)

# Imported inside the functions that need them, with what each adds (on a 2-core machine) to the torch and
# transformers this module already loads: tonsai.train.trainer (transformers.Trainer, 0.27 s) in _datasets
# and _trainer, and liger_kernel (0.26 s; an optional package, only with --liger-kernel) in check_liger.
# train_gpt2.py --help needs neither.

log = logging.getLogger(__name__)
STAGE = "train"
MODEL_STAGE = "model"


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


def _match_vocabulary(model, base: str, tokenizer, cfg: TrainConfig) -> None:
    """Continual pretraining: the base model's tokenizer must be --tokenizer-dir's, or be transferred."""
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


def run_train(cfg: TrainConfig) -> dict:
    """Train into --output-dir. Rank 0 claims and locks the run folder for the whole run
    (tonsai.folders): a folder holding anything but this run's own files, or any input, is refused,
    and a second training into the same folder is refused while the first runs."""
    check_reporting(cfg)
    if launch.rank() != 0:
        return _run_train(cfg)
    out = Path(cfg.output_dir).resolve()
    inputs = [p for p in (cfg.dataset_dir, cfg.tokenizer_dir, cfg.tokens_dir, cfg.resume_from, cfg.model_config,
                          cfg.deepspeed) if p and p != "auto" and not Path(p).resolve().is_relative_to(out)]
    with claim_in_place(cfg.output_dir, STAGE, inputs=inputs, legacy=RUN_ENTRIES):
        return _run_train(cfg)


def _run_train(cfg: TrainConfig) -> dict:
    """setup (start, tokenizer, model, data) -> fit -> export: each step is a function below."""
    check_deepspeed(cfg.deepspeed)
    read_manifest(cfg.dataset_dir, "prepare")
    cfg, kind, resume_path, skipped = _resolve_start(cfg)
    tokenizer, tok_manifest, tok_sha = _tokenizer(cfg)
    model = _model(cfg, kind, resume_path, tokenizer)
    run = _Run(cfg, kind, resume_path, tokenizer, tok_sha, model)
    resumed_at = (json.loads((Path(resume_path) / "trainer_state.json").read_text())["global_step"]
                  if kind == "checkpoint" else 0)
    prepare_output_dir(cfg, kind, resume_path, resumed_at)  # after every check that can refuse the run: it may delete
    run.base = continual.record_base(cfg.output_dir, kind, resume_path, main=launch.rank() == 0)
    if launch.rank() == 0:
        set_aside(skipped)  # once the folder is ours: never-finished checkpoints removed, damaged ones renamed
    log.info("model %s: %s parameters (%.3fB), context %d, vocabulary %d (tokenizer %d)", model.config.model_type,
             f"{run.n_params:,}", run.n_params / 1e9, run.ctx, model.config.vocab_size, len(tokenizer))
    _datasets(run, tok_manifest.get("token_dtype"))
    trainer = _trainer(run)
    result = trainer.train(resume_from_checkpoint=resume_path if kind == "checkpoint" else None)
    train_loss = run_mean_loss(trainer.state.log_history, resumed_at, trainer.state.global_step, result.training_loss)
    if run.nan_guard.bad_step is not None:
        last = latest_checkpoint(cfg.output_dir)
        raise StageError(
            f"the training loss became {run.nan_guard.loss} at step {run.nan_guard.bad_step}; training stopped "
            f"without saving. The last complete checkpoint is {last or 'none'}: resume it with --resume-from auto "
            f"and a lower --learning-rate (or more --warmup), or inspect the data near that step.")
    return _export(run, trainer, train_loss, trainer.final_validation(run.eval_ds))


@dataclasses.dataclass
class _Run:
    """What the steps of one training run hand each other."""

    cfg: TrainConfig
    kind: str  # scratch, checkpoint or weights (tonsai.train.resume)
    resume_path: str | None
    tokenizer: object
    tok_sha: str
    model: object
    base: dict = dataclasses.field(default_factory=dict)  # the base model's steps and tokens (continual)
    train_tokens: object = None
    train_ds: object = None
    eval_ds: dict = dataclasses.field(default_factory=dict)
    tokens_per_byte: dict = dataclasses.field(default_factory=dict)
    nan_guard: NonFiniteLossGuard = dataclasses.field(default_factory=NonFiniteLossGuard)

    def __post_init__(self) -> None:
        cfg = self.cfg
        self.n_params = count_parameters(self.model)
        self.ctx = context_length(self.model.config)
        self.block_size = cfg.block_size or self.ctx
        if self.block_size > self.ctx:
            raise StageError(f"--block-size {self.block_size} exceeds the model's context length {self.ctx}")
        self.eval_stride = cfg.eval_stride or max(1, self.block_size // 2)
        if self.eval_stride > self.block_size:
            raise StageError(f"--eval-stride {self.eval_stride} is larger than the block of {self.block_size} tokens")
        self.world = launch.world_size()
        self.budget = resolve_budget(micro_batch_size=cfg.micro_batch_size, block_size=self.block_size,
                                     world_size=self.world, gradient_accumulation=cfg.gradient_accumulation,
                                     global_batch_tokens=cfg.global_batch_tokens, max_steps=cfg.max_steps,
                                     max_tokens=cfg.max_tokens)


def _resolve_start(cfg: TrainConfig) -> tuple[TrainConfig, str, str | None, list]:
    """(cfg with a model folder's defaults filled in, kind, resume path, checkpoints to set aside)."""
    kind, resume_path, skipped = resolve_resume(cfg)
    if kind == "weights":
        cfg = continual.with_folder_defaults(cfg, resume_path)
    elif cfg.model_config is None or cfg.tokenizer_dir is None:
        base_folder = continual.recorded_base(cfg.output_dir) if kind == "checkpoint" else None
        if base_folder is None:
            raise StageError(f"--resume-from {cfg.resume_from}: {resume_path or 'no checkpoint'} does not continue a "
                             f"model folder: pass --model-config and --tokenizer-dir as when the run started")
        cfg = continual.with_folder_defaults(cfg, base_folder)
    return cfg, kind, resume_path, skipped


def _tokenizer(cfg: TrainConfig):
    """(tokenizer, its folder's manifest, the SHA-256 of its tokenizer.json)."""
    tok_manifest = continual.tokenizer_manifest(cfg.tokenizer_dir)
    tok_sha = tokenizer_hash(cfg.tokenizer_dir)
    if tok_manifest.get("tokenizer_sha256") not in (None, tok_sha):
        raise StageError(f"{cfg.tokenizer_dir}/tokenizer.json changed after training (hash differs from its manifest)")
    return load_tokenizer(cfg.tokenizer_dir), tok_manifest, tok_sha


def _model(cfg: TrainConfig, kind: str, resume_path: str | None, tokenizer):
    """A model folder's weights (continual pretraining), or a fresh model from --model-config (a checkpoint's
    weights are loaded by the Trainer over it)."""
    if kind != "weights":
        torch.manual_seed(cfg.seed)
        model = build_model(load_model_config(cfg.model_config, tokenizer))
        if kind == "checkpoint":
            log.info("resuming everything (weights, optimizer, schedule, data position) from %s", resume_path)
        return model
    log.info("continual pretraining: loading weights from %s (fresh optimizer and LR schedule)", resume_path)
    overrides = {}
    if cfg.model_config is not None and Path(cfg.model_config).resolve() != (Path(resume_path) / "config.json").resolve():
        overrides = continual.model_config_overrides(cfg.model_config, AutoConfig.from_pretrained(resume_path),
                                                     resume_path)
    model = AutoModelForCausalLM.from_pretrained(resume_path, attn_implementation="sdpa", dtype=torch.float32,
                                                 **overrides)
    _match_vocabulary(model, resume_path, tokenizer, cfg)
    return name_causal_lm_loss(model)


def _datasets(run: _Run, dtype) -> None:
    """The packed training blocks and each language's validation stream, from the token folders."""
    from tonsai.train.trainer import ValidationStream

    paths = _token_folders(run.cfg, run.tok_sha)
    run.train_tokens = TokenFile(paths["train"], run.tok_sha, dtype)
    run.train_ds = PackedBlocks(run.train_tokens.tokens, run.block_size, token_file=run.train_tokens)
    if len(run.train_ds) == 0:
        raise StageError(f"the training split has {len(run.train_tokens)} tokens: fewer than one block of "
                         f"{run.block_size}; lower --block-size or add data")
    for name, path in paths.items():
        if not name.startswith("validation_"):
            continue
        lang = name.removeprefix("validation_")
        tf = TokenFile(path, run.tok_sha, dtype)
        ds = run.eval_ds[lang] = ValidationStream(tf.tokens, tf.meta["eos_id"], run.block_size, run.eval_stride,
                                                  run.tokenizer.pad_token_id, run.cfg.eval_max_tokens or None)
        if ds.scored < len(tf):
            log.info("validation %s: scoring the first %s of its %s tokens (--eval-max-tokens); "
                     "bits per byte assume the split's average bytes per token", lang, f"{ds.scored:,}", f"{len(tf):,}")
        # the same denominator as eval_model.py: UTF-8 bytes plus one per end-of-text (tonsai.eval.perplexity)
        run.tokens_per_byte[lang] = tf.meta["tokens"] / max(1, tf.meta["bytes"] + tf.meta["documents"])


def _optimizer(cfg: TrainConfig, model):
    """The Trainer's optimizer_cls_and_kwargs: None for its AdamW, or Muon on the block matrices."""
    if cfg.optimizer != "muon":
        return None
    n_muon, n_adam = tag_muon_parameters(model)
    log.info("optimizer: Muon on %s matrix parameters, AdamW on %s others", f"{n_muon:,}", f"{n_adam:,}")
    return MuonAdamW, {"lr": cfg.learning_rate, "weight_decay": cfg.weight_decay, "betas": ADAM_BETAS, "eps": 1e-8}


def _trainer(run: _Run):
    from tonsai.train.trainer import TonsaiTrainer

    cfg, budget = run.cfg, run.budget
    use_cpu, bf16 = resolve_device(cfg)
    run.bf16 = bf16
    if cfg.liger_kernel:
        liger_problem = check_liger(run.model.config.model_type, use_cpu)
        if liger_problem:
            raise StageError(liger_problem)
    log.info("%d training blocks of %d tokens; %s; %s; %s", len(run.train_ds), run.block_size, budget.describe(),
             "bf16" if bf16 else "fp32", f"DeepSpeed {cfg.deepspeed}" if cfg.deepspeed else "no DeepSpeed")
    passes = budget.tokens_planned / max(1, len(run.train_ds) * run.block_size)
    if passes > 1.05:
        log.warning("the budget trains %.1f passes over the %s training tokens (%d blocks): the data repeats; "
                    "that is fine for a few epochs, but past about 4 repeated text adds little (prepare more data, "
                    "or lower --max-tokens / --max-steps)", passes, f"{len(run.train_ds) * run.block_size:,}",
                    len(run.train_ds))
    report_to, extra_callbacks, writer = report_callbacks(cfg)
    args = training_arguments(cfg, max_steps=budget.max_steps, gradient_accumulation=budget.gradient_accumulation,
                              learning_rate=cfg.learning_rate, use_cpu=use_cpu, bf16=bf16,
                              eval_on_start=run.kind != "checkpoint",  # a resumed run already logged it
                              report_to=report_to, torch_compile=cfg.torch_compile,
                              use_liger_kernel=cfg.liger_kernel)
    shape = ModelShape.from_config(run.model.config, run.block_size)
    peak = GPU_PEAK_BF16.get(gpu_key(torch.cuda.get_device_name()) or "") if not use_cpu else None
    log.info("%.3f GFLOP per token (tonsai.model.cost)%s", shape.flops_per_token() / 1e9,
             f"; MFU against {peak / 1e12:.0f} TFLOP/s" if peak else "; no MFU on this device")
    metrics = MetricsLogger(Path(cfg.output_dir) / "metrics.jsonl", budget.tokens_per_step, run.tokens_per_byte,
                            shape.flops_per_token(), peak, run.world, base_steps=run.base["steps"],
                            base_tokens=run.base["tokens"], tb_writer=writer)
    disk = DiskSpaceGuard(cfg.output_dir, first_checkpoint_bytes(run.model, cfg.tokenizer_dir, bool(cfg.deepspeed),
                                                                 bf16), cfg.min_free_disk_gb)
    return TonsaiTrainer(
        langs=run.train_tokens.langs if run.train_tokens.lang_runs is not None else None,
        optimizer_cls_and_kwargs=_optimizer(cfg, run.model), model=run.model, args=args,
        train_dataset=run.train_ds, eval_dataset=run.eval_ds, data_collator=default_data_collator,
        processing_class=run.tokenizer, callbacks=[metrics, run.nan_guard, disk, *extra_callbacks])


def run_mean_loss(history: list[dict], resumed_at: int, step: int, session_loss: float) -> float | None:
    """The mean training loss of the whole run, steps before a resume included: the Trainer's
    ``training_loss`` covers only the steps this process trained (``resumed_at`` to ``step``), so the
    earlier steps' share comes from the logged losses up to ``resumed_at``, each logged value weighted by
    the steps since the previous log. None when nothing was trained here (resumed from the last step)."""
    if step <= resumed_at:
        return None
    if resumed_at == 0:
        return session_loss
    total, prev = 0.0, 0
    for entry in history:
        if "loss" in entry and prev < entry.get("step", 0) <= resumed_at:
            total += entry["loss"] * (entry["step"] - prev)
            prev = entry["step"]
    if prev != resumed_at:  # the steps before the resume are not all in the log: the session's mean only
        return session_loss
    return (total + session_loss * (step - resumed_at)) / step


def _export(run: _Run, trainer, train_loss: float | None, final_metrics: dict) -> dict:
    """final/ (model and tokenizer, under a temporary name until complete) and the run's manifest."""
    cfg, budget, config = run.cfg, run.budget, run.model.config
    out = Path(cfg.output_dir)
    staging = out / ".final-incomplete"
    trainer.save_model(str(staging))  # every process takes part under DeepSpeed
    if not trainer.is_world_process_zero():
        return {}
    save_tokenizer(run.tokenizer, staging, model_max_length=run.ctx)  # loads in transformers 4.x too
    step = trainer.state.global_step
    trained = next((int(e["tokens_seen"]) for e in reversed(trainer.state.log_history)
                    if "tokens_seen" in e and e.get("step") == step), step * budget.tokens_per_step)
    common = dict(parameters=run.n_params, model_type=config.model_type, vocab_size=config.vocab_size,
                  block_size=run.block_size, tokenizer_sha256=run.tok_sha, tokenizer_dir=str(cfg.tokenizer_dir),
                  dataset_dir=str(cfg.dataset_dir), start=run.kind, resumed_from=run.resume_path,
                  model_config_used=config.to_diff_dict(), base_model=run.base,
                  step_total=run.base["steps"] + step, tokens_total=run.base["tokens"] + trained)
    write_manifest(staging, MODEL_STAGE, cfg, **common)
    final = out / "final"
    replace_dir(staging, final)
    history = [e for e in trainer.state.log_history if any(k.startswith("eval_") for k in e)]
    manifest = write_manifest(
        out, STAGE, cfg, **common, global_step=step, train_loss=train_loss, final_validation=final_metrics,
        tokens_per_step=budget.tokens_per_step, world_size=run.world, precision="bf16" if run.bf16 else "fp32",
        budget=dict(tokens_requested=budget.tokens_requested, global_batch_tokens=cfg.global_batch_tokens,
                    gradient_accumulation=budget.gradient_accumulation, max_steps=budget.max_steps,
                    tokens_planned=budget.tokens_planned),
        tokens_trained=trained, validation_history=history)
    log.info("final model written to %s", final)
    if cfg.push_to_hub:
        push_folder(final, cfg.push_to_hub, private=cfg.hub_private)
    return manifest
