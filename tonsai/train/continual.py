"""Continual pretraining from a model folder (``--resume-from MODEL_FOLDER``): what the folder
supplies, what may not disagree with it, and where its counts continue from.

* The folder's own config.json and tokenizer are the defaults for --model-config and
  --tokenizer-dir. A --model-config given anyway must describe the same architecture (a weight
  file cannot be loaded into another shape, and silently ignoring the file misleads the manifest);
  its other fields (dropout, initialization range) apply to the continued run.
* The base model's cumulative optimizer steps and training tokens are read from its manifest and
  written into ``<output-dir>/base_model.json``, so that a checkpoint resume of the continued run
  keeps them (and, without --model-config/--tokenizer-dir, takes them from that folder again).
  metrics.jsonl rows carry ``step_total`` and ``tokens_total`` (this run's counts plus the base's),
  so curves across a base run and its continuation line up instead of restarting at 0.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from tonsai.atomic import write_json
from tonsai.errors import StageError
from tonsai.manifest import MANIFEST_NAME, read_manifest
from tonsai.model.build import load_model_config

log = logging.getLogger(__name__)
BASE_FILE = "base_model.json"

# Config fields that decide the shapes of the weights or what the forward pass computes. Names
# are the transformers-wide ones; a config's attribute_map translates (GPT-2's n_embd is hidden_size).
ARCHITECTURE = (
    "model_type", "num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim",
    "intermediate_size", "n_inner", "max_position_embeddings", "activation_function", "hidden_act",
    "tie_word_embeddings", "layer_norm_epsilon", "layer_norm_eps", "rms_norm_eps", "rope_theta", "rope_scaling",
    "rope_parameters", "partial_rotary_factor", "attention_bias", "mlp_bias", "sliding_window",
    "scale_attn_weights", "scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn",
)
# Set from the tokenizer (or by vocabulary transfer), never from the config file.
FROM_TOKENIZER = ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id")


def with_folder_defaults(cfg, resume_path: str):
    """``cfg`` with --tokenizer-dir and --model-config defaulting to the model folder's own."""
    folder = Path(resume_path)
    if not folder.is_dir():
        if cfg.tokenizer_dir is None:
            raise StageError(f"--resume-from {resume_path} is not a local folder (a Hub id?): pass --tokenizer-dir, "
                             f"or download the model to a folder first")
        return cfg
    changes = {}
    if cfg.tokenizer_dir is None:
        if not (folder / "tokenizer.json").is_file():
            raise StageError(f"--resume-from {resume_path} has no tokenizer.json: pass --tokenizer-dir (the "
                             f"tokenizer the model was trained with, or a new one with --vocab-transfer)")
        changes["tokenizer_dir"] = str(folder)
    if cfg.model_config is None:
        changes["model_config"] = str(folder / "config.json")
    if changes:
        log.info("continual pretraining: %s from %s", " and ".join(
            f"--{k.replace('_', '-')}" for k in changes), resume_path)
    return dataclasses.replace(cfg, **changes)


def tokenizer_manifest(tokenizer_dir: str) -> dict:
    """The manifest of a tokenizer folder; a model folder (a run's final/) also holds a tokenizer,
    and has no tokenizer manifest to check it against: its tokenizer.json is taken as it is."""
    path = Path(tokenizer_dir)
    if (path / "config.json").is_file():
        try:
            manifest = json.loads((path / MANIFEST_NAME).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            manifest = {}
        if manifest.get("stage") in (None, "model"):
            return {}
    return read_manifest(tokenizer_dir, "tokenizer")


def model_config_overrides(model_config: str, folder_config, resume_path: str) -> dict:
    """Refuse a --model-config whose architecture differs from the model folder's; return the other
    fields it sets to a different value (applied to the continued run)."""
    given = load_model_config(model_config)
    json_name = {canonical: own for canonical, own in getattr(folder_config, "attribute_map", {}).items()}
    for name in ARCHITECTURE:
        mine, theirs = getattr(given, name, None), getattr(folder_config, name, None)
        if mine != theirs:
            raise StageError(
                f"--model-config {model_config}: {json_name.get(name, name)} is {mine!r}, but the model in "
                f"--resume-from {resume_path} has {theirs!r} (its config.json). Continual pretraining keeps the "
                f"model's architecture: leave out --model-config to use the folder's own, or train a new model "
                f"from scratch with this config.")
    architecture = set(ARCHITECTURE) | {json_name.get(n, n) for n in ARCHITECTURE} | set(FROM_TOKENIZER)
    written = json.loads(Path(model_config).read_text(encoding="utf-8"))
    overrides = {k: v for k, v in written.items() if k not in architecture and getattr(folder_config, k, v) != v}
    if overrides:
        log.info("continual pretraining: from --model-config %s: %s", model_config,
                 ", ".join(f"{k}={v!r}" for k, v in sorted(overrides.items())))
    return overrides


def base_counts(resume_path: str) -> dict:
    """The base model's cumulative optimizer steps and training tokens: from its manifest
    (``step_total``/``tokens_total``, written by tonsai into every final/), else, for a final/
    written before those fields existed, from its run's manifest beside it (steps x tokens per
    step), else zero (a model from elsewhere)."""
    folder = Path(resume_path)
    for manifest_path, kind in ((folder / MANIFEST_NAME, "model"), (folder.parent / MANIFEST_NAME, "run")):
        try:
            m = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if kind == "model" and m.get("stage") == "model" and "step_total" in m:
            return {"model": str(resume_path), "steps": int(m["step_total"]), "tokens": int(m["tokens_total"])}
        if kind == "run" and m.get("stage") == "train" and folder.name == "final" and "global_step" in m:
            return {"model": str(resume_path), "steps": int(m["global_step"]),
                    "tokens": int(m["global_step"]) * int(m.get("tokens_per_step", 0))}
    return {"model": str(resume_path), "steps": 0, "tokens": 0}


def recorded_base(output_dir: str) -> str | None:
    """The model folder a continual-pretraining run in ``output_dir`` started from, if it still
    exists: its config and tokenizer are the defaults when that run is resumed from a checkpoint."""
    path = Path(output_dir) / BASE_FILE
    try:
        folder = json.loads(path.read_text(encoding="utf-8"))["model"]
    except (OSError, json.JSONDecodeError, KeyError):
        return None
    return folder if folder and Path(folder).is_dir() else None


def record_base(output_dir: str, kind: str, resume_path: str | None, main: bool = True) -> dict:
    """The base counts this run continues from, kept in ``<output-dir>/base_model.json`` across
    checkpoint resumes (written by the main process only)."""
    path = Path(output_dir) / BASE_FILE
    if kind == "weights":
        base = base_counts(resume_path)
        if main:
            write_json(path, base)
        log.info("continual pretraining: steps and tokens continue from the base model's %s steps and %s tokens",
                 f"{base['steps']:,}", f"{base['tokens']:,}")
        return base
    if kind == "checkpoint" and path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    if main and kind == "scratch":
        path.unlink(missing_ok=True)
    return {"model": None, "steps": 0, "tokens": 0}
