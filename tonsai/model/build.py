"""Building a causal LM from a config JSON and a tokenizer, and counting what it costs.

The config file is any Hugging Face causal-LM config (``model_type`` plus that model's fields;
unknown keys and impossible values are refused before any work).
The vocabulary size always comes from the tokenizer, rounded up to a multiple of 64 (matrix
shapes that are multiples of 64 run faster on tensor cores; the extra rows are never produced by
the tokenizer). bos, eos and pad ids come from the tokenizer too.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from tonsai.configfile import did_you_mean, unknown_keys_message
from tonsai.errors import StageError

# transformers (and huggingface_hub's error class) are imported inside load_model_config, impossible_values
# and build_model: CONFIG_MAPPING takes 1.7 s to import on a 2-core machine, ACT2FN 1.3 s more (torch).
# plan_run.py, eval_model.py and safety_check.py import this module at start (context_length,
# padded_vocab_size, VOCAB_MULTIPLE), and their --help must not pay that.

VOCAB_MULTIPLE = 64


def padded_vocab_size(n_tokens: int, multiple: int = VOCAB_MULTIPLE) -> int:
    return int(math.ceil(n_tokens / multiple) * multiple)


# Keys that transformers writes into a saved config.json or still converts from older names,
# accepted besides the config class's fields and aliases so that a model's config.json can serve
# as a preset. rope_theta / rope_scaling only for models with rotary embeddings (rope_parameters).
SAVED_KEYS = frozenset({"_name_or_path", "output_attentions", "torch_dtype"})
ROPE_LEGACY_KEYS = frozenset({"rope_theta", "rope_scaling"})
# sizes that must be positive integers wherever a model type has them (GPT-2 names, then Llama's)
POSITIVE_SIZES = ("n_layer", "n_head", "n_embd", "n_positions", "n_inner", "vocab_size", "num_hidden_layers",
                  "num_attention_heads", "num_key_value_heads", "hidden_size", "intermediate_size",
                  "max_position_embeddings", "head_dim")
WIDTH_PER_HEAD = (("n_embd", "n_head"), ("hidden_size", "num_attention_heads"))
POSITIVE_REALS = ("layer_norm_epsilon", "layer_norm_eps", "rms_norm_eps", "initializer_range", "rope_theta")


def load_model_config(path: str | Path, tokenizer=None):
    """Read a config JSON into a transformers config, sized for ``tokenizer`` when given.

    Strict: a key that is not a field of the model type's config class (or one of its aliases) is
    an error naming the closest field, and impossible values (:func:`impossible_values`) are
    errors, so a typo never trains the default model and nonsense never reaches a traceback."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    path = Path(path)
    if not path.is_file():
        raise StageError(f"--model-config {path}: no such file (see configs/model/ for presets)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise StageError(f"--model-config {path}: invalid JSON at line {e.lineno}: {e.msg}") from e
    if not isinstance(data, dict):
        raise StageError(f"--model-config {path}: expected a JSON object of config fields")
    model_type = data.pop("model_type", None)
    if not model_type:
        raise StageError(f"--model-config {path}: missing field 'model_type' (for example \"gpt2\")")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        raise StageError(f"--model-config {path}: unknown model_type {model_type!r}"
                         f"{did_you_mean(str(model_type), CONFIG_MAPPING.keys())}")
    cls = CONFIG_MAPPING[model_type]
    data = _canonical_keys(path, cls, data)
    defaults = _defaults(cls)
    problems = impossible_values({**defaults, **data})
    if problems:
        raise StageError(f"--model-config {path}: " + "; ".join(problems))
    if tokenizer is not None:
        data.update(vocab_size=padded_vocab_size(len(tokenizer)), bos_token_id=tokenizer.bos_token_id,
                    eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    else:  # the tokenizer sets them when the model is built; a class default past the vocabulary (GPT-2's
        # 50256 in a 1,024-token preset) would only make transformers warn that it is out of range
        vocab = data.get("vocab_size", defaults.get("vocab_size"))
        for key in ("bos_token_id", "eos_token_id"):
            default = defaults.get(key)
            if key not in data and isinstance(default, int) and isinstance(vocab, int) and default >= vocab:
                data[key] = None
    from huggingface_hub.errors import StrictDataclassError

    try:  # transformers checks the types of the fields (an int field refuses "2" and 2.0)
        return cls(**data)
    except (StrictDataclassError, ValueError, KeyError, TypeError) as e:
        raise StageError(f"--model-config {path}: {' '.join(str(e).split())}") from e


def _fields(cls) -> dict:
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def _canonical_keys(path: Path, cls, data: dict) -> dict:
    """``data`` with aliases (GPT-2's hidden_size for n_embd, ...) under their field's name; an
    unknown key is an error naming the closest field or alias."""
    fields, aliases = _fields(cls), dict(getattr(cls, "attribute_map", {}) or {})
    valid = set(fields) | set(aliases) | SAVED_KEYS | (ROPE_LEGACY_KEYS if "rope_parameters" in fields else set())
    unknown = unknown_keys_message(data, valid)
    if unknown:
        raise StageError(f"--model-config {path}: {unknown}; a {cls.model_type} config takes the fields of "
                         f"transformers' {cls.__name__}")
    out: dict = {}
    for key, value in data.items():
        name = aliases.get(key, key)
        if name in out and out[name] != value:
            raise StageError(f"--model-config {path}: {name} is given twice ({key} is another name for it) "
                             f"with different values")
        out[name] = value
    return out


def _defaults(cls) -> dict:
    out = {}
    for name, f in _fields(cls).items():
        if f.default is not dataclasses.MISSING:
            out[name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[name] = f.default_factory()
    return out


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def impossible_values(values: dict) -> list[str]:
    """What no model can be built or trained with, one line each: sizes that are not positive, a
    width the heads do not divide, query heads that key/value heads do not divide, an odd rotary
    head size, dropouts outside [0, 1), non-positive or non-finite epsilons, an unknown activation.
    ``values`` are a config's fields by name (defaults filled in); values of the wrong type are left
    to the config class, which reports them."""
    from transformers.activations import ACT2FN

    out = [f"{n} is {values[n]}; it must be a positive integer"
           for n in POSITIVE_SIZES if _number(values.get(n)) and not values[n] > 0]
    rope = values.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" not in values:
        values = {**values, "rope_theta": rope.get("rope_theta")}
    out += [f"{n} is {values[n]}; it must be a positive, finite number"
            for n in POSITIVE_REALS if _number(values.get(n)) and not (math.isfinite(values[n]) and values[n] > 0)]
    out += [f"{n} is {v}; a dropout probability must be at least 0 and below 1" for n, v in values.items()
            if ("dropout" in n or n.endswith("pdrop")) and _number(v) and not 0 <= v < 1]  # nan fails too
    sizes = {n: v for n, v in values.items() if isinstance(v, int) and not isinstance(v, bool) and v > 0}
    for width, heads in WIDTH_PER_HEAD:
        w, h = sizes.get(width), sizes.get(heads)
        if w and h and w % h:
            lo = w - w % h
            out.append(f"{width} {w} is not divisible by {heads} {h} (each head gets {width} / {heads} "
                       f"channels); use e.g. {width} {lo or h} or {lo + h}")
    q, kv = sizes.get("num_attention_heads"), sizes.get("num_key_value_heads")
    if q and kv and q % kv:
        out.append(f"num_attention_heads {q} is not a multiple of num_key_value_heads {kv} (each key/value "
                   f"head serves the same number of query heads)")
    if "rope_parameters" in values and sizes.get("hidden_size") and q and not sizes["hidden_size"] % q:
        head_dim = sizes.get("head_dim") or sizes["hidden_size"] // q
        if head_dim % 2:
            out.append(f"the head size is {head_dim} (hidden_size / num_attention_heads, or head_dim); rotary "
                       f"position embeddings need an even head size")
    for n in ("activation_function", "hidden_act"):
        if isinstance(values.get(n), str) and values[n] not in ACT2FN:
            out.append(f"{n} {values[n]!r} is not an activation transformers knows"
                       f"{did_you_mean(values[n], ACT2FN.keys())}")
    return out


def context_length(config) -> int:
    for name in ("n_positions", "max_position_embeddings"):
        if getattr(config, name, None):
            return int(getattr(config, name))
    raise StageError(f"cannot tell the context length of a {config.model_type} config")


def build_model(config):
    """A freshly initialized causal LM with SDPA attention."""
    from transformers import AutoModelForCausalLM

    return name_causal_lm_loss(AutoModelForCausalLM.from_config(config, attn_implementation="sdpa"))


def name_causal_lm_loss(model):
    """Give the model the loss it would fall back to anyway, ``ForCausalLM`` (next-token cross
    entropy), where transformers finds none: it picks the loss from the class name, and GPT-2's
    (``GPT2LMHeadModel``) names none, so every run warned that ``loss_type=None`` is unrecognized.
    Returns the model."""
    if getattr(model, "loss_type", "ForCausalLM") is None:
        model.loss_type = "ForCausalLM"
    return model


def count_parameters(model) -> int:
    """Parameters counted once each (tied input and output embeddings count once)."""
    seen = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
    return total
