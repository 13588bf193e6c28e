"""Saving a tokenizer folder that transformers 4.x and 5.x both load, ready for generation.

transformers 5 saves ``tokenizer_class: "TokenizersBackend"``, a class 4.x does not have
("Tokenizer class TokenizersBackend does not exist"); serving stacks still on 4.x need
``PreTrainedTokenizerFast``, which 5.x maps to the same backend. Both read ``tokenizer.json``
(model, normalizer, pre-tokenizer, special tokens) the same way, so the ids are equal.

``model_max_length`` is the model's context in a model folder (train_gpt2.py's ``final/``). A
tokenizer folder belongs to no model: it carries no ``model_max_length``, and transformers then
uses its "no limit" value (``int(1e30)``) in both versions; the model folder made from it states
the real one. Padding is on the left, as decoder-only generation needs: batched ``generate()`` then
continues every prompt from its last real token (and transformers warns about nothing). tonsai's own
training and evaluation build their batches themselves and do not depend on this setting. The
model's inputs are ``input_ids`` and ``attention_mask``: 4.x's ``PreTrainedTokenizerFast`` also
returns ``token_type_ids`` unless told, which ``generate()`` on a Llama model refuses ("model_kwargs
are not used by the model: ['token_type_ids']").

:func:`load_tokenizer` is how every stage that takes a model folder loads its tokenizer: transformers'
``AutoTokenizer``, checked against the folder's own ``tokenizer.json`` and against the tokenizer the
model was trained with.

Added special tokens (the chat markers of :mod:`tonsai.sft.template`) are saved by 5.x as an
``extra_special_tokens`` list, which 4.x reads as a dict of named tokens and fails on
("'list' object has no attribute 'keys'"); they are written as ``additional_special_tokens``, which
both read as that list. A chat template goes into tokenizer_config.json's ``chat_template`` (read
by 4.x since 4.34 and by 5.x) instead of 5.x's separate ``chat_template.jinja``.
"""

from __future__ import annotations

import json
from pathlib import Path

from tonsai.atomic import write_json
from tonsai.errors import StageError
from tonsai.manifest import MANIFEST_NAME, read_manifest, tokenizer_hash

TOKENIZER_CLASS = "PreTrainedTokenizerFast"
PADDING_SIDE = "left"
MODEL_INPUT_NAMES = ["input_ids", "attention_mask"]
# arguments of from_pretrained that transformers 5.x writes back as if they were settings
LOAD_ARGUMENTS = ("is_local", "local_files_only")
CHAT_TEMPLATE_FILE = "chat_template.jinja"


def save_tokenizer(tokenizer, folder: str | Path, model_max_length: int | None = None) -> None:
    """``tokenizer.save_pretrained(folder)`` with the settings above in tokenizer_config.json."""
    tokenizer.save_pretrained(str(folder))
    make_portable(folder, model_max_length)


def make_portable(folder: str | Path, model_max_length: int | None = None) -> bool:
    """Set the settings above in ``folder``'s tokenizer_config.json, also in folders saved before
    tonsai wrote them; True if the file changed. tokenizer.json (and so the tokenizer hash) is untouched."""
    path = Path(folder) / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    new = {k: v for k, v in config.items() if k not in LOAD_ARGUMENTS and k != "model_max_length"}
    new.update(tokenizer_class=TOKENIZER_CLASS, padding_side=PADDING_SIDE, model_input_names=MODEL_INPUT_NAMES)
    if model_max_length is not None:
        new["model_max_length"] = int(model_max_length)
    if isinstance(new.get("extra_special_tokens"), list):
        new["additional_special_tokens"] = new.pop("extra_special_tokens")
    template = Path(folder) / CHAT_TEMPLATE_FILE
    if template.is_file():
        new["chat_template"] = template.read_text(encoding="utf-8")
    if new == config:
        return False
    write_json(path, new)
    template.unlink(missing_ok=True)  # after the config holds it: a crash in between leaves both, equal
    return True


# Khmer (a COENG stack, a dependent vowel), English, digits: a tokenizer that loads as the wrong class
# encodes some of it differently (GPT-2's byte-level BPE built without its files: the Khmer to nothing)
PROBE = "ភាសាខ្មែរ ស្ត្រី Khmer and English text, 2026."


def load_tokenizer(folder: str | Path, model_dir: str | Path | None = None):
    """``AutoTokenizer.from_pretrained(folder)``, refused when it does not encode :data:`PROBE` as the
    folder's ``tokenizer.json`` does, or (``model_dir`` given, with a tonsai manifest) when the folder
    is not the tokenizer that model was trained with.

    Without tokenizer_config.json transformers picks a class from config.json's model type (for GPT-2
    a byte-level BPE built from files that are not there), which encodes Khmer text to no tokens at
    all: every loss and generation computed with it is meaningless, and nothing else fails."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    if model_dir is not None and Path(model_dir) != folder and (Path(model_dir) / MANIFEST_NAME).is_file():
        want = read_manifest(model_dir).get("tokenizer_sha256")
        if want and (folder / "tokenizer.json").is_file() and tokenizer_hash(folder) != want:
            raise StageError(f"{folder} is not the tokenizer {model_dir} was trained with (its manifest records "
                             f"tokenizer hash {want[:12]}…); pass that tokenizer or leave out --tokenizer-dir")
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    spec = folder / "tokenizer.json"
    if spec.is_file():
        from tokenizers import Tokenizer

        want_ids = Tokenizer.from_file(str(spec)).encode(PROBE, add_special_tokens=False).ids
        if tokenizer(PROBE, add_special_tokens=False)["input_ids"] != want_ids:
            hint = ("it has no tokenizer_config.json: copy that file from the tokenizer folder the model was "
                    "trained with" if not (folder / "tokenizer_config.json").is_file()
                    else "check its tokenizer_config.json (tokenizer_class) against the tokenizer folder")
            raise StageError(f"{folder}: transformers loads it as {type(tokenizer).__name__}, which does not "
                             f"encode text as its tokenizer.json does; {hint}")
    return tokenizer
