"""The instruction-tuning stage: a base model (a tonsai run's final/ or any HF causal-LM folder)
fine-tuned on conversations, in full or with LoRA adapters (peft), with the training stage's
Trainer, DeepSpeed ZeRO-2 option, checkpoints that verify, exact resume, metrics.jsonl and
per-language validation loss on held-out conversations.

Flow: claim --output-dir -> read, normalize, filter, deduplicate and split the conversations
(:mod:`tonsai.sft.data`) -> install the chat template and role markers in the tokenizer
(:mod:`tonsai.sft.template`), grow the embeddings for them -> tokenize with the template, mask
every token but the assistant's, pack several conversations per sequence without one seeing
another (:mod:`tonsai.sft.pack`) -> Trainer.train -> ``final/`` (a plain model folder with the
chat-template tokenizer: LoRA merged) and, with LoRA, ``adapter/`` (the peft adapter alone).
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import json
import logging
import math
import shutil
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, default_data_collator

from tonsai.atomic import replace_dir, write_json
from tonsai.errors import StageError
from tonsai.eval.run import sft_eval_window  # the base's evaluation window, for eval_model.py
from tonsai.folders import claim_in_place
from tonsai.manifest import accounting_line, file_sha256, tokenizer_hash, write_manifest
from tonsai.model.build import context_length, name_causal_lm_loss
from tonsai.model.folder import check_model_folder
from tonsai.sft.config import FINGERPRINT, SftConfig
from tonsai.sft.data import SftSource, load_sft_data
from tonsai.sft.pack import PackedConversations, PackStats, encode_all, pack, prepare_model_for_packing
from tonsai.sft.template import install_chat_template, resize_for_new_tokens, stop_token_ids
from tonsai.tokenizer.export import load_tokenizer, save_tokenizer
from tonsai.train import launch
from tonsai.train.arguments import check_deepspeed, check_reporting, report_callbacks, resolve_device, training_arguments
from tonsai.train.callbacks import MetricsLogger
from tonsai.train.checkpoint import set_aside
from tonsai.train.guards import DiskSpaceGuard, NonFiniteLossGuard
from tonsai.train.resume import (RUN_ENTRIES, first_checkpoint_bytes, latest_checkpoint, prepare_output_dir,
                                 resolve_resume)

# tonsai.train.trainer is imported inside _run_sft only: its transformers.Trainer adds 0.27 s (on a
# 2-core machine) to the torch and transformers this module already loads, and train_sft.py --help does
# not need it.

log = logging.getLogger(__name__)
STAGE = "sft"
MODEL_STAGE = "model"
OUTPUTS = ("final", "adapter")  # what a finished run leaves besides its checkpoints (--overwrite replaces them)


def parse_sources(specs: list[str]):
    """``PATH`` or ``PATH=WEIGHT`` items of --data as :class:`tonsai.sft.data.SftSource`; the text after
    the last ``=`` is a weight only when it is a number (``data/lang=km/x.parquet`` is a path)."""
    sources = []
    for spec in specs:
        path, sep, weight = spec.rpartition("=")
        try:
            w = float(weight) if sep else None
        except ValueError:
            w = None
        if w is None:
            sources.append(SftSource(spec))
            continue
        if not (w > 0 and math.isfinite(w)):
            raise StageError(f"--data {spec}: the weight after '=' must be a positive number, e.g. {path}=2")
        sources.append(SftSource(path, weight=w))
    for s in sources:
        if not s.path.startswith("hf:") and not glob.has_magic(s.path) and not Path(s.path).exists():
            raise StageError(f"--data {s.path}: no such file or folder (or give hf:OWNER/NAME for a Hub dataset)")
    return sources


def run_sft(cfg: SftConfig) -> dict:
    """Tune into --output-dir, which rank 0 claims and locks for the whole run (tonsai.folders). Every
    check that needs no model runs before the folder is claimed."""
    check_reporting(cfg)
    sources = parse_sources(cfg.data)
    check_model_folder(cfg.model_dir, cfg.tokenizer_dir)
    if launch.rank() != 0:
        return _run_sft(cfg, sources)
    out = Path(cfg.output_dir).resolve()
    local = [s.path for s in sources if not s.path.startswith("hf:") and not glob.has_magic(s.path)]
    inputs = [p for p in (cfg.model_dir, cfg.tokenizer_dir, cfg.deepspeed, *local)
              if p and not Path(p).resolve().is_relative_to(out)]
    with claim_in_place(cfg.output_dir, STAGE, inputs=inputs, legacy=RUN_ENTRIES + OUTPUTS):
        return _run_sft(cfg, sources)


def _datasets(cfg: SftConfig, sources, tokenizer, block_size: int):
    """(train dataset, {lang: validation dataset}, data record for the manifest)."""
    data = load_sft_data(sources, validation_fraction=cfg.validation_fraction, seed=cfg.seed,
                         khmer_share=cfg.khmer_share)
    if not data.train:
        raise StageError(f"no training conversations left from --data {' '.join(cfg.data)}: "
                         f"see the counts above for why each was dropped")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise StageError(f"the tokenizer of {cfg.tokenizer_dir or cfg.model_dir} has neither a pad nor an end-of-text "
                         f"token to pad blocks with; add one (tokenizer.add_special_tokens) and save it, or pass "
                         f"--tokenizer-dir")

    def packed(convs):
        stats = PackStats()
        encoded = encode_all(tokenizer, convs)
        blocks = pack(encoded, block_size, pad, stats, langs=[c.lang for c in convs])
        return PackedConversations(blocks), stats, [len(ids) > block_size for ids, _ in encoded]

    train, train_stats, too_long = packed(data.train)
    if len(train) == 0:
        raise StageError(f"every training conversation is longer than --block-size {block_size} tokens")
    trained = [c for c, long in zip(data.train, too_long) if not long]
    # per source, the rows that train (after weights and --khmer-share) and those too long to
    # (kept by the data step, then left out by packing)
    fits = collections.Counter(c.source for c in trained)
    long_rows = collections.Counter(c.source for c, long in zip(data.train, too_long) if long)
    for source, counts in data.counts.items():
        counts["train"] = fits[source]
        if long_rows[source]:
            counts["train_too_long"] = long_rows[source]
    if train_stats.too_long:
        log.warning("%d of %d training conversations are longer than the block of %d tokens and were left out "
                    "(counted per source as train_too_long in the manifest)", train_stats.too_long,
                    len(data.train), block_size)
    for source, counts in data.counts.items():
        log.info("%s", accounting_line(source, counts) + (
            f"; {counts['train_too_long']:,} too long to train" if counts.get("train_too_long") else ""))
    shares = {lang: sum(c.lang == lang for c in trained) / len(trained) for lang in sorted({c.lang for c in trained})}
    log.info("training conversations: %d (%s)", len(trained), ", ".join(f"{lang} {v:.1%}" for lang, v in shares.items()))
    validation, record = {}, {"counts": data.counts, "train_conversations": len(trained), "shares": shares,
                              "train_packing": _jsonable(train_stats), "validation": {}}
    for lang, convs in sorted(data.validation.items()):
        ds, stats, _ = packed(convs)
        if len(ds):
            validation[lang] = ds
        record["validation"][lang] = {"conversations": len(convs), "packing": _jsonable(stats)}
    return train, validation, record


def _jsonable(stats) -> dict:
    return {**dataclasses.asdict(stats), "fill": round(stats.fill, 4)}


def _with_lora(model, cfg: SftConfig, tokenizer, added: list[str]):
    """The model wrapped in peft LoRA adapters; the role markers' embedding rows train too (only those
    rows: peft's trainable_token_indices), so the adapter learns what its new tokens mean."""
    targets = "all-linear" if cfg.lora_targets == ["all-linear"] else cfg.lora_targets
    trainable_tokens = None
    if added:
        names = {id(m): n for n, m in model.named_modules()}
        emb = names[id(model.get_input_embeddings())]
        trainable_tokens = {emb: tokenizer.convert_tokens_to_ids(added)}
    lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM", trainable_token_indices=trainable_tokens)
    model = get_peft_model(model, lora)
    trainable, total = model.get_nb_trainable_parameters()
    log.info("LoRA r=%d alpha=%g on %s: %s of %s parameters train (%.2f%%)", cfg.lora_rank, cfg.lora_alpha,
             targets, f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    return model


def _load_model(cfg: SftConfig, tokenizer, added: list[str]):
    torch.manual_seed(cfg.seed)  # LoRA's initial A matrices, dropout
    model = AutoModelForCausalLM.from_pretrained(cfg.model_dir, attn_implementation="sdpa", dtype=torch.float32)
    name_causal_lm_loss(model)
    resize_for_new_tokens(model, tokenizer, added)
    prepare_model_for_packing(model)  # no key/value cache: packed conversations must not see each other
    if cfg.method == "lora":
        model = _with_lora(model, cfg, tokenizer, added)
    return model


def _steps(cfg: SftConfig, n_blocks: int) -> int:
    per_step = cfg.micro_batch_size * cfg.gradient_accumulation * launch.world_size()
    return cfg.max_steps or max(1, math.ceil(cfg.epochs * n_blocks / per_step))


def _run_sft(cfg: SftConfig, sources) -> dict:
    from tonsai.train.trainer import TonsaiTrainer

    check_deepspeed(cfg.deepspeed)
    kind, resume_path, skipped = resolve_resume(cfg)
    if kind == "weights":
        raise StageError(f"--resume-from {cfg.resume_from}: not a checkpoint of an SFT run. To tune another model, "
                         f"give it as --model-dir; --resume-from takes 'auto' or a checkpoint-N folder")
    tokenizer = load_tokenizer(cfg.tokenizer_dir or cfg.model_dir, cfg.model_dir)
    added = install_chat_template(tokenizer)
    model = _load_model(cfg, tokenizer, added)
    ctx = context_length(model.config)
    block_size = min(cfg.block_size, ctx)
    if block_size < cfg.block_size:
        log.info("--block-size %d is longer than the model's context: blocks of %d tokens", cfg.block_size, ctx)
    train_ds, eval_ds, data_record = _datasets(cfg, sources, tokenizer, block_size)
    max_steps = _steps(cfg, len(train_ds))
    fingerprint = dict(
        model_config_sha256=file_sha256(Path(cfg.model_dir) / "config.json"), method=cfg.method,
        lora=[cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets] if cfg.method == "lora" else None,
        data=list(cfg.data), khmer_share=cfg.khmer_share, validation_fraction=cfg.validation_fraction,
        seed=cfg.seed, block_size=block_size, train_blocks=len(train_ds))
    _check_fingerprint(cfg, kind, resume_path, fingerprint)
    eval_window = sft_eval_window(cfg.model_dir)  # the base's: recorded at the start and in the manifests
    resumed_at = (json.loads((Path(resume_path) / "trainer_state.json").read_text())["global_step"]
                  if kind == "checkpoint" else 0)
    prepare_output_dir(cfg, kind, resume_path, resumed_at, OUTPUTS)  # after every check that can refuse the run
    if launch.rank() == 0:
        set_aside(skipped)
        if kind != "checkpoint" or not (Path(cfg.output_dir) / FINGERPRINT).is_file():  # or resumed from elsewhere
            write_json(Path(cfg.output_dir) / FINGERPRINT, {**fingerprint, "eval_window": eval_window})
    log.info("%s tuning of %s: %d packed blocks of %d tokens, %d steps; validation in %s",
             cfg.method, cfg.model_dir, len(train_ds), block_size, max_steps, ", ".join(eval_ds) or "no language")
    use_cpu, bf16 = resolve_device(cfg)
    report_to, extra_callbacks, writer = report_callbacks(cfg)
    args = training_arguments(cfg, max_steps=max_steps, gradient_accumulation=cfg.gradient_accumulation,
                              learning_rate=cfg.peak_learning_rate, use_cpu=use_cpu, bf16=bf16,
                              eval_on_start=kind != "checkpoint" and bool(eval_ds), report_to=report_to,
                              eval_strategy="steps" if eval_ds else "no")
    tokens_per_step = cfg.micro_batch_size * cfg.gradient_accumulation * launch.world_size() * block_size
    nan_guard = NonFiniteLossGuard()
    disk = DiskSpaceGuard(cfg.output_dir, first_checkpoint_bytes(model, cfg.tokenizer_dir or cfg.model_dir,
                                                                 bool(cfg.deepspeed), bf16), cfg.min_free_disk_gb)
    trainer = TonsaiTrainer(
        model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds or None,
        data_collator=default_data_collator, processing_class=tokenizer,
        callbacks=[MetricsLogger(Path(cfg.output_dir) / "metrics.jsonl", tokens_per_step, {}, tb_writer=writer),
                   nan_guard, disk, *extra_callbacks],
    )
    trainer.train(resume_from_checkpoint=resume_path if kind == "checkpoint" else None)
    if nan_guard.bad_step is not None:
        raise StageError(f"the training loss became {nan_guard.loss} at step {nan_guard.bad_step}; training stopped "
                         f"without saving. The last complete checkpoint is {latest_checkpoint(cfg.output_dir) or 'none'}"
                         f": resume it with --resume-from auto and a lower --learning-rate")
    final_validation = trainer.final_validation(eval_ds)
    if not trainer.is_world_process_zero():
        return {}
    return _export(cfg, trainer, tokenizer, added, ctx, dict(
        method=cfg.method, base_model=str(cfg.model_dir), added_tokens=added, block_size=block_size,
        eval_window=eval_window,
        global_step=trainer.state.global_step, start=kind, resumed_from=resume_path,
        final_validation=final_validation, data=data_record))


def _check_fingerprint(cfg: SftConfig, kind: str, resume_path: str | None, fingerprint: dict) -> None:
    """A checkpoint resumes only the run it was saved by: the same base model, method, data, seed and
    blocks (else the Trainer would skip the first N batches of another data order, or put an adapter on
    another base, and call it a resume). Rank 0 records the fingerprint when a run starts afresh."""
    if kind != "checkpoint":
        return
    path = Path(resume_path).parent / FINGERPRINT  # the run that saved the checkpoint, wherever it is
    if not path.is_file():
        raise StageError(f"--resume-from {resume_path}: not a checkpoint of a tonsai SFT run (no {FINGERPRINT} beside "
                         f"it). To tune a model, give it as --model-dir; --resume-from takes 'auto' or a "
                         f"checkpoint-N folder of an SFT run")
    before = json.loads(path.read_text(encoding="utf-8"))
    changed = [k for k in fingerprint if before.get(k) != fingerprint[k]]
    if changed:
        raise StageError(f"--resume-from {resume_path}: this run was started with other settings ("
                         + "; ".join(f"{k}: then {before.get(k)!r}, now {fingerprint[k]!r}" for k in changed)
                         + "). Resume with the settings it started with, or start over with --overwrite or "
                           "another --output-dir")


def _export(cfg: SftConfig, trainer, tokenizer, added: list[str], ctx: int | None, record: dict) -> dict:
    """final/ (a plain model folder: LoRA merged into the weights) and, with LoRA, adapter/; each is
    written under a temporary name and renamed, then the run's manifest."""
    out = Path(cfg.output_dir)
    model = trainer.model
    if cfg.method == "lora":
        staging = out / ".adapter-incomplete"
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(str(staging))
        save_tokenizer(tokenizer, staging, model_max_length=ctx)
        replace_dir(staging, out / "adapter")
        model = model.merge_and_unload()
    model.config.use_cache = True  # off for packed training only; generation wants it
    model.generation_config.eos_token_id = stop_token_ids(tokenizer)  # a reply ends at <|end|>
    staging = out / ".final-incomplete"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(str(staging))
    save_tokenizer(tokenizer, staging, model_max_length=ctx)
    # the chat tokenizer it was tuned with: eval and SFT refuse another --tokenizer-dir for it
    record = {**record, "tokenizer_sha256": tokenizer_hash(staging)}
    write_manifest(staging, MODEL_STAGE, cfg, **record)
    replace_dir(staging, out / "final")
    log.info("final model written to %s%s", out / "final", f" (adapter in {out / 'adapter'})" if cfg.method == "lora"
             else "")
    return write_manifest(out, STAGE, cfg, **record)
