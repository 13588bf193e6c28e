"""What a model folder must hold before a stage loads it: config.json (a LoRA adapter's folder is
told apart: its run's final/ is the model), weights whose header covers the file, and a tokenizer. Checked before transformers runs, so that a folder copied in part (a
Colab upload cut short, a file left out) is a one-line error naming the file, not a transformers
traceback ("Error no file named model.safetensors", "Couldn't instantiate the backend tokenizer",
"SafetensorError: incomplete metadata")."""

from __future__ import annotations

from pathlib import Path

from tonsai.errors import StageError

# what transformers loads weights from, in the order it looks (sharded folders have an index)
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
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
    weights = next((model / w for w in WEIGHTS if (model / w).is_file()), None)
    if weights is None:
        raise StageError(f"{flag} {model}: no model weights ({WEIGHTS[0]}); {REFETCH}")
    if weights.name == "model.safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(weights), "pt"):
                pass
        except (SafetensorError, OSError) as e:
            raise StageError(f"{weights} is damaged ({e}); {REFETCH}") from None
    tok = Path(tokenizer_dir) if tokenizer_dir else model
    if not any((tok / f).is_file() for f in TOKENIZER_FILES):
        raise StageError(f"{tok}: no tokenizer ({TOKENIZER_FILES[0]}); pass --tokenizer-dir with the tokenizer the "
                         f"model was trained with, or {REFETCH}")
