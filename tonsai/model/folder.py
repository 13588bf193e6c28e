"""What a model folder must hold before a stage loads or publishes it: config.json (a LoRA adapter's
folder is told apart: its run's final/ is the model), weights whose safetensors header describes
the whole file (every shard a sharded folder's index names), and a tokenizer, with config.json and
tokenizer.json readable as JSON. Checked before transformers runs, so that a folder copied in part
(a Colab upload cut short, a file left out) is a one-line error naming the file, not a transformers
traceback ("Error no file named model.safetensors", "Couldn't instantiate the backend tokenizer",
"SafetensorError: incomplete metadata", "not a valid JSON file"). Evaluation, SFT, the safety check
and push_to_hub.py all ask :func:`check_model_folder`."""

from __future__ import annotations

import json
from pathlib import Path

from tonsai.errors import StageError

WEIGHTS, WEIGHTS_INDEX = "model.safetensors", "model.safetensors.index.json"
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")  # transformers loads them weights-only
# a tokenizer transformers can build: tonsai's (tokenizer.json), SentencePiece's, or GPT-2's two files
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
REFETCH = "copy the whole folder again, or pass a tonsai run's final/ folder"


def check_model_folder(model_dir: str | Path, tokenizer_dir: str | Path | None = None,
                       flag: str = "--model-dir") -> None:
    """Raise StageError naming what ``model_dir`` (and ``tokenizer_dir``, default the model folder)
    lacks or holds damaged; return when transformers has what it needs."""
    model = Path(model_dir)
    if not (model / "config.json").is_file() and (model / "adapter_config.json").is_file():
        final = model.parent / "final"
        todo = (f"pass {final}" if (final / "config.json").is_file() else
                f"finish the run (train_sft.py with the same flags and --resume-from auto) to write {final}, "
                "then pass that")
        raise StageError(f"{flag} {model}: a LoRA adapter (adapter_config.json), not a whole model (a "
                         f"train_sft.py --method lora run saves only the adapter in its checkpoints and adapter/; its "
                         f"final/ is the base model with the adapter merged in): {todo}")
    if not (model / "config.json").is_file():
        raise StageError(f"{flag} {model}: no config.json there; pass a model folder such as a tonsai run's final/ "
                         "or a Hugging Face model folder")
    _check_json(model / "config.json")
    for name in _weight_files(model, flag):
        problem = safetensors_problem(model / name)
        if problem:
            raise StageError(f"{model / name} is not a complete safetensors file ({problem}); {REFETCH}")
    tok = Path(tokenizer_dir) if tokenizer_dir else model
    if not any((tok / f).is_file() for f in TOKENIZER_FILES):
        raise StageError(f"{tok}: no tokenizer ({TOKENIZER_FILES[0]}); pass --tokenizer-dir with the tokenizer the "
                         f"model was trained with, or {REFETCH}")
    if (tok / "tokenizer.json").is_file():
        _check_json(tok / "tokenizer.json")


def _weight_files(model: Path, flag: str) -> list[str]:
    """The safetensors files that hold the weights (none to check for pickled weights)."""
    if (model / WEIGHTS).is_file():
        return [WEIGHTS]
    if (model / WEIGHTS_INDEX).is_file():
        index = _check_json(model / WEIGHTS_INDEX)
        shards = sorted(set((index.get("weight_map") or {}).values())) if isinstance(index, dict) else []
        if not shards:
            raise StageError(f"{model / WEIGHTS_INDEX}: no weight_map; {REFETCH}")
        missing = [s for s in shards if not (model / s).is_file()]
        if missing:
            raise StageError(f"{flag} {model}: missing {', '.join(missing)}, which {WEIGHTS_INDEX} names; {REFETCH}")
        return shards
    if any((model / w).is_file() for w in PICKLED_WEIGHTS):
        return []
    raise StageError(f"{flag} {model}: no model weights ({WEIGHTS}); {REFETCH}")


def _check_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
        raise StageError(f"{path} is not readable JSON ({type(e).__name__}: {e}); {REFETCH}") from None


def safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete safetensors file (its header and size disagree), or None."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if size < 8 or n > size - 8:
                return f"{size} bytes, too short for its header"
            header = json.loads(f.read(n))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        return f"unreadable header ({type(e).__name__})"
    if 8 + n + end != size:
        return f"{size} bytes, its header describes {8 + n + end} (truncated or damaged)"
    return None
