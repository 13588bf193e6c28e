"""Building a causal LM from a config JSON and a tokenizer, and counting what it costs.

The config file is any Hugging Face causal-LM config (``model_type`` plus that model's fields).
The vocabulary size always comes from the tokenizer, rounded up to a multiple of 64 (matrix
shapes that are multiples of 64 run faster on tensor cores; the extra rows are never produced by
the tokenizer). bos, eos and pad ids come from the tokenizer too.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from tonsai.cli import StageError

VOCAB_MULTIPLE = 64


def padded_vocab_size(n_tokens: int, multiple: int = VOCAB_MULTIPLE) -> int:
    return int(math.ceil(n_tokens / multiple) * multiple)


def load_model_config(path: str | Path, tokenizer=None):
    """Read a config JSON into a transformers config, sized for ``tokenizer`` when given."""
    from transformers import AutoConfig

    path = Path(path)
    if not path.is_file():
        raise StageError(f"--model-config {path}: no such file (see configs/model/ for presets)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise StageError(f"--model-config {path}: invalid JSON at line {e.lineno}: {e.msg}") from e
    model_type = data.pop("model_type", None)
    if not model_type:
        raise StageError(f"--model-config {path}: missing field 'model_type' (for example \"gpt2\")")
    if tokenizer is not None:
        data.update(vocab_size=padded_vocab_size(len(tokenizer)), bos_token_id=tokenizer.bos_token_id,
                    eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    try:
        return AutoConfig.for_model(model_type, **data)
    except (ValueError, KeyError, TypeError) as e:
        raise StageError(f"--model-config {path}: {e}") from e


def context_length(config) -> int:
    for name in ("n_positions", "max_position_embeddings"):
        if getattr(config, name, None):
            return int(getattr(config, name))
    raise StageError(f"cannot tell the context length of a {config.model_type} config")


def build_model(config):
    """A freshly initialized causal LM with SDPA attention."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")


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
