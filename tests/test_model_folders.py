"""Every stage that takes a model folder (evaluation, SFT, the safety check) refuses one whose
tokenizer transformers would load wrongly, and a --tokenizer-dir the model was not trained with,
before any output exists: such a model gives meaningless scores with exit 0 otherwise."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO, SAMPLE


def _script(name: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / name), *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, timeout=600)


@pytest.fixture(scope="module")
def no_tokenizer_config(trained_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("model") / "final"
    shutil.copytree(trained_model, folder)
    (folder / "tokenizer_config.json").unlink()
    return folder


@pytest.mark.parametrize("script,args", [
    ("eval_model.py", ["--text", f"km={SAMPLE / 'km.txt'}"]),
    ("train_sft.py", ["--data", SAMPLE / "conversations.jsonl", "--max-steps", "1", "--device", "cpu"]),
    ("safety_check.py", ["--limit", "1", "--device", "cpu", "--max-flagged-rate", "0.5"]),
])
def test_a_model_folder_without_its_tokenizer_config_is_refused(no_tokenizer_config, tmp_path, script, args):
    r = _script(script, "--model-dir", no_tokenizer_config, "--output-dir", tmp_path / "out", *args)
    assert r.returncode == 1, r.stderr[-2000:]
    assert "no tokenizer_config.json: copy that file" in r.stderr and str(no_tokenizer_config) in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_sft_refuses_a_tokenizer_the_model_was_not_trained_with(trained_model, tmp_path):
    from tonsai.tokenizer.bpe import TokenizerConfig, run_train_tokenizer

    other = tmp_path / "other_tok"
    run_train_tokenizer(TokenizerConfig(output_dir=str(other), dataset_dir=str(trained_model.parents[1] / "data"),
                                        vocab_size=300))
    r = _script("train_sft.py", "--model-dir", trained_model, "--tokenizer-dir", other, "--data",
                SAMPLE / "conversations.jsonl", "--output-dir", tmp_path / "out", "--max-steps", "1", "--device", "cpu")
    assert r.returncode == 1 and f"{other} is not the tokenizer {trained_model} was trained with" in r.stderr, \
        r.stderr[-2000:]
    assert not (tmp_path / "out").exists()


def _damaged(trained_model, folder, how: str):
    shutil.copytree(trained_model, folder)
    if how == "no weights":
        (folder / "model.safetensors").unlink()
    elif how == "cut weights":
        with open(folder / "model.safetensors", "r+b") as f:
            f.truncate(f.seek(0, 2) // 2)
    elif how == "no tokenizer":
        (folder / "tokenizer.json").unlink()
    return folder


@pytest.mark.parametrize("script,how,message", [
    ("eval_model.py", "no weights", "no model weights (model.safetensors)"),
    ("eval_model.py", "cut weights", "model.safetensors is not a complete safetensors file"),
    ("eval_model.py", "no tokenizer", "no tokenizer (tokenizer.json)"),
    ("train_sft.py", "cut weights", "model.safetensors is not a complete safetensors file"),
    ("safety_check.py", "no tokenizer", "no tokenizer (tokenizer.json)"),
])
def test_a_model_folder_copied_in_part_is_a_one_line_error(trained_model, tmp_path, script, how, message):
    model = _damaged(trained_model, tmp_path / "final", how)
    extra = {"eval_model.py": ["--text", f"km={SAMPLE / 'km.txt'}"],
             "train_sft.py": ["--data", SAMPLE / "conversations.jsonl", "--max-steps", "1"],
             "safety_check.py": ["--limit", "1", "--max-flagged-rate", "0.5"]}[script]
    r = _script(script, "--model-dir", model, "--output-dir", tmp_path / "out", "--device", "cpu", *extra)
    assert r.returncode == 1 and message in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_a_model_folder_without_a_tokenizer_is_evaluated_with_tokenizer_dir(trained_model, sample_pipeline, tmp_path):
    """docs/eval.md: a model folder from elsewhere (no tokenizer, no tonsai manifest) with
    --tokenizer-dir and the model's context as the window."""
    model = tmp_path / "hf"
    model.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(trained_model / name, model / name)
    r = _script("eval_model.py", "--model-dir", model, "--tokenizer-dir", trained_model, "--text",
                f"km={SAMPLE / 'km.txt'}", "--output-dir", tmp_path / "out", "--device", "cpu", "--max-tokens", "2000")
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "out" / "report.json").is_file()
