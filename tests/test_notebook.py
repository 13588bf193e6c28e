"""notebooks/colab_h100.ipynb executed headless on CPU with SIZE = "tiny", as CI runs it: once from
nothing, then again after a simulated Colab disconnect, which must reuse what Drive holds and continue
the training run from its last checkpoint instead of starting over."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import nbformat
import pytest
import yaml
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "colab_h100.ipynb"
RECIPE = REPO / "configs" / "train" / "gpt2_tiny_cpu.yaml"


def execute() -> tuple[str, set[str]]:
    """Run every cell in a fresh kernel (in the notebook's folder, inside this checkout); return the
    text the cells printed and the MIME types they displayed."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # generous limits: on a loaded 2-core machine the kernel alone took over a minute to start
    NotebookClient(nb, timeout=1800, startup_timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    for i, c in enumerate(code):  # shown by pytest -s, or when the test fails
        t = c.metadata.get("execution", {})
        if "iopub.execute_input" in t and "shell.execute_reply" in t:
            took = datetime.fromisoformat(t["shell.execute_reply"]) - datetime.fromisoformat(t["iopub.execute_input"])
            print(f"code cell {i}: {took.total_seconds():.1f} s")
    outputs = [o for c in code for o in c.get("outputs", [])]
    return "".join(o.get("text", "") for o in outputs), {m for o in outputs for m in o.get("data", {})}


def train_steps(run: Path) -> list[int]:
    """Steps of the training-loss log lines in metrics.jsonl."""
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [r["step"] for r in map(json.loads, lines) if "loss" in r]


@pytest.mark.slow
def test_notebook_runs_and_a_rerun_after_a_disconnect_continues(tmp_path, monkeypatch):
    drive, local = tmp_path / "drive", tmp_path / "content"
    monkeypatch.setenv("TONSAI_NOTEBOOK_SIZE", "tiny")
    monkeypatch.setenv("TONSAI_NOTEBOOK_DRIVE", str(drive))
    monkeypatch.setenv("TONSAI_NOTEBOOK_LOCAL", str(local))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    recipe = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))
    planned, every = recipe["max_tokens"] // recipe["global_batch_tokens"], recipe["save_steps"]
    run, evaluation = drive / "gpt2-tiny", drive / "gpt2-tiny-eval"

    text, shown = execute()
    assert "not in Colab" in text and "torch build default" in text
    assert json.loads((run / "manifest.json").read_text())["global_step"] == planned
    assert train_steps(run)[-1] == planned
    assert sorted(int(p.name.split("-")[1]) for p in run.glob("checkpoint-*")) == [
        s for s in range(every, planned + 1, every)][-3:]
    assert (local / "tokens" / "manifest.json").is_file()  # token shards on local disk, not on Drive
    assert not (run / "tokens").exists()
    report = json.loads((evaluation / "report.json").read_text())
    assert set(report["languages"]) == {"km", "en"}
    assert {"text/markdown", "text/html"} <= shown  # the report displayed inline

    # A disconnect during the last stretch of training: /content is wiped (token shards), and the run
    # on Drive has neither its newest checkpoint nor final/ nor the evaluation yet.
    data_manifest = (drive / "data-tiny" / "manifest.json").read_bytes()
    tokenizer_manifest = (drive / "tokenizer-tiny" / "manifest.json").read_bytes()
    first_losses = dict(zip(train_steps(run), [r["loss"] for r in map(
        json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]))
    shutil.rmtree(local)
    shutil.rmtree(run / f"checkpoint-{planned}")
    shutil.rmtree(run / "final")
    shutil.rmtree(evaluation)

    text, shown = execute()
    assert "prepared data found" in text and "tokenizer found" in text
    assert (drive / "data-tiny" / "manifest.json").read_bytes() == data_manifest
    assert (drive / "tokenizer-tiny" / "manifest.json").read_bytes() == tokenizer_manifest
    assert f"from {run / f'checkpoint-{planned - every}'}" in text  # resumed, not restarted
    steps = train_steps(run)
    assert steps == sorted(set(steps)) and steps[-1] == planned  # each step logged once
    second = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    # exact resume: the steps trained again after the checkpoint give the same losses
    assert all(r["loss"] == pytest.approx(first_losses[r["step"]], rel=1e-5) for r in second)
    assert json.loads((run / "manifest.json").read_text())["global_step"] == planned
    assert (evaluation / "report.json").is_file() and {"text/markdown", "text/html"} <= shown
