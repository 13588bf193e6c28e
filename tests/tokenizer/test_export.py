"""The tokenizer folders tonsai writes load in transformers 4.x as well as 5.x, with the same ids.

transformers 4.x runs in its own virtual environment, made once with uv and cached under
~/.cache/tonsai-tf4 (no torch: loading a tokenizer does not need it); the test skips, saying why,
where uv or PyPI is not reachable.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from ..conftest import SAMPLE

TF4_SPEC = ("transformers>=4.57,<5", "tokenizers")
TF4_CACHE = Path(os.environ.get("TONSAI_TF4_CACHE", Path.home() / ".cache" / "tonsai-tf4"))
TEXTS = [
    "ព្រះរាជាណាចក្រកម្ពុជា ជាប្រទេសមួយនៅអាស៊ីអាគ្នេយ៍។",
    "The Mekong river flows through Phnom Penh in 2019, 1,000 km and 3.5 m deep.",
    "ខ្ញុំស្រឡាញ់ភាសាខ្មែរ and English alike: 12:55 ១២៣",
    "<|endoftext|> literal specials, emoji 🙂 and a rare ឝ letter",
]

# Run by transformers 4.x's Python: load each folder, report its class, settings and the ids of TEXTS.
TF4_PROBE = """
import json, sys, transformers
from transformers import AutoTokenizer
folders, texts = json.loads(sys.argv[1]), json.loads(sys.argv[2])
out = {"version": transformers.__version__}
for f in folders:
    tok = AutoTokenizer.from_pretrained(f)
    out[f] = {"class": type(tok).__name__, "model_max_length": tok.model_max_length,
              "padding_side": tok.padding_side, "pad_token": tok.pad_token, "eos_token": tok.eos_token,
              "ids": [tok(t)["input_ids"] for t in texts],
              "decoded": [tok.decode(tok(t)["input_ids"]) for t in texts],
              "batch": tok(texts[:2], padding=True)["input_ids"],
              "inputs": sorted(tok(texts[:2], padding=True))}
print(json.dumps(out))
"""


def _tf4_python() -> Path:
    """The Python of a cached virtual environment with transformers 4.x (built here on first use)."""
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH: cannot build the transformers 4.x environment")
    key = hashlib.sha256(f"{sys.version_info[:2]} {TF4_SPEC}".encode()).hexdigest()[:12]
    venv = TF4_CACHE / key
    python = venv / "bin" / "python"
    if python.is_file():
        return python
    TF4_CACHE.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=TF4_CACHE))
    try:
        for cmd in ([uv, "venv", "--quiet", "--python", sys.executable, str(tmp)],
                    [uv, "pip", "install", "--quiet", "--compile-bytecode", "--python", str(tmp / "bin" / "python"),
                     *TF4_SPEC]):
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            if proc.returncode:
                pytest.skip(f"cannot build the transformers 4.x environment ({' '.join(cmd[1:3])}): "
                            f"{proc.stderr.strip()[-500:]}")
        # bin/python finds its packages through ../pyvenv.cfg, so the folder may be renamed into place
        with contextlib.suppress(OSError):  # another process may have put one there first
            os.replace(tmp, venv)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return python


def _load_with_tf4(folders: list[Path]) -> dict:
    python = _tf4_python()
    proc = subprocess.run([str(python), "-c", TF4_PROBE, json.dumps([str(f) for f in folders]), json.dumps(TEXTS)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_tokenizer_and_model_folders_load_in_transformers_4_with_the_same_ids(sample_pipeline, trained_model):
    from transformers import AutoConfig, AutoTokenizer

    tok_dir, model_dir = sample_pipeline / "tok", trained_model
    got = _load_with_tf4([tok_dir, model_dir])
    assert got["version"].startswith("4.")
    context = AutoConfig.from_pretrained(model_dir).n_positions
    for folder, max_len in ((tok_dir, int(1e30)), (model_dir, context)):
        ours = AutoTokenizer.from_pretrained(folder)  # transformers 5.x, this environment
        tf4 = got[str(folder)]
        assert tf4["class"] == "PreTrainedTokenizerFast"
        assert tf4["ids"] == [ours(t)["input_ids"] for t in TEXTS]
        assert tf4["decoded"] == [ours.decode(ours(t)["input_ids"]) for t in TEXTS]
        assert tf4["model_max_length"] == ours.model_max_length == max_len
        assert tf4["padding_side"] == ours.padding_side == "left"
        assert (tf4["pad_token"], tf4["eos_token"]) == ("<|pad|>", "<|endoftext|>")
        short, long = tf4["batch"]
        pad = ours.pad_token_id
        assert len(short) == len(long) and short[0] == pad and short[-1] != pad  # padded on the left
        assert tf4["batch"] == ours(TEXTS[:2], padding=True)["input_ids"]
        # no token_type_ids, which 4.x's generate() on a Llama model refuses
        assert tf4["inputs"] == sorted(ours(TEXTS[:2], padding=True)) == ["attention_mask", "input_ids"]
    config = json.loads((model_dir / "tokenizer_config.json").read_text())
    assert not {"is_local", "local_files_only"} & set(config)  # load arguments are not settings


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_batched_generation_is_left_padded_and_matches_one_prompt_at_a_time(trained_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(trained_model)
    model = AutoModelForCausalLM.from_pretrained(trained_model).eval()
    prompts = [SAMPLE.joinpath("km.txt").read_text(encoding="utf-8").split("\n")[0][:60], "The river"]
    records = _Records()
    logging.getLogger("transformers").addHandler(records)
    try:
        with torch.no_grad():
            batch = tok(prompts, padding=True, return_tensors="pt")
            together = model.generate(**batch, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
            alone = [model.generate(**tok(p, return_tensors="pt"), max_new_tokens=8, do_sample=False,
                                    pad_token_id=tok.pad_token_id)[0] for p in prompts]
            assert not [m for m in records.messages if "right-padding" in m]
            tok.padding_side = "right"  # what the folders had before: transformers warns
            model.generate(**tok(prompts, padding=True, return_tensors="pt"), max_new_tokens=2, do_sample=False,
                           pad_token_id=tok.pad_token_id)
    finally:
        logging.getLogger("transformers").removeHandler(records)
    assert [m for m in records.messages if "right-padding" in m]
    width = batch["input_ids"].shape[1]
    for row, single, mask in zip(together, alone, batch["attention_mask"]):
        n_pad = int((mask == 0).sum())
        assert row[n_pad:width].tolist() == single[:width - n_pad].tolist()  # the prompt, unpadded
        ours, theirs = row[width:].tolist(), single[width - n_pad:].tolist()  # theirs may stop early at eos
        assert ours[:len(theirs)] == theirs and set(ours[len(theirs):]) <= {tok.pad_token_id}


def test_load_tokenizer_refuses_a_folder_that_loads_as_another_tokenizer(trained_model, tmp_path):
    """A model folder without tokenizer_config.json: transformers 5 goes by config.json's model type
    and builds GPT-2's byte-level BPE from nothing, which encodes Khmer to no tokens, so every score
    made with it would be meaningless."""
    from tonsai.errors import StageError
    from tonsai.tokenizer.export import PROBE, load_tokenizer

    tok = load_tokenizer(trained_model)
    assert len(tok(PROBE, add_special_tokens=False)["input_ids"]) > 10
    bare = tmp_path / "bare"
    shutil.copytree(trained_model, bare)
    (bare / "tokenizer_config.json").unlink()
    with pytest.raises(StageError, match="no tokenizer_config.json: copy that file"):
        load_tokenizer(bare)


def test_load_tokenizer_refuses_a_tokenizer_the_model_was_not_trained_with(trained_model, tmp_path):
    from tonsai.errors import StageError
    from tonsai.tokenizer.bpe import TokenizerConfig, run_train_tokenizer
    from tonsai.tokenizer.export import load_tokenizer

    assert load_tokenizer(trained_model, trained_model) is not None
    other = tmp_path / "other_tok"
    run_train_tokenizer(TokenizerConfig(output_dir=str(other), dataset_dir=str(trained_model.parents[1] / "data"),
                                        vocab_size=300))
    with pytest.raises(StageError, match="is not the tokenizer .* was trained with"):
        load_tokenizer(other, trained_model)
