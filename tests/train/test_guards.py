"""Checks that stop a run early and clearly (tonsai.train.guards): a non-finite loss stops training
without saving, too little disk stops it before a checkpoint, and the CUDA driver message."""

import json
import shutil

import pytest

from tests.train.runs import config
from tonsai.errors import StageError
from tonsai.train.run import run_train


def test_non_finite_loss_stops_without_saving(plain_run, sample_pipeline, tmp_path):
    """Weights that go bad after checkpoint-6: the loss is NaN at the next log (step 8), which is also a
    save step. Training stops there without writing checkpoint-8 or a final model, and says to resume
    checkpoint-6. (tonsai stops rather than skipping the step: see tonsai.train.guards.)"""
    import torch
    from safetensors.torch import load_file, save_file

    from tonsai.train.checkpoint import write_checksums

    out = tmp_path / "nan"
    shutil.copytree(plain_run[0], out)
    shutil.rmtree(out / "checkpoint-12")
    shutil.rmtree(out / "final")
    weights = out / "checkpoint-6" / "model.safetensors"
    state = load_file(weights)
    good = {k: v.clone() for k, v in state.items()}
    state["transformer.ln_f.weight"][0] = float("nan")
    save_file(state, weights, metadata={"format": "pt"})
    write_checksums(out / "checkpoint-6")  # as if the weights had gone bad in training, before the save
    cfg = config(sample_pipeline, out, steps=12, save_steps=2, resume_from="auto")
    with pytest.raises(StageError, match="loss became nan at step 8") as e:
        run_train(cfg)
    assert "last complete checkpoint is " + str(out / "checkpoint-6") in str(e.value)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-6"]
    assert not (out / "final").exists()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r][-1] == 8 and not any(r["step"] > 8 for r in rows)
    # the last checkpoint itself is untouched by the failed run (only our injected NaN is in it)
    after = load_file(weights)
    assert all(torch.equal(after[k], good[k]) for k in good if k != "transformer.ln_f.weight")


def test_too_little_disk_stops_before_the_checkpoint(sample_pipeline, tmp_path):
    with pytest.raises(StageError, match=r"GB free .* a checkpoint needs 0\.0\d\d GB \(estimated from the model and "
                                         r"optimizer\) plus --min-free-disk-gb 1e\+09"):
        run_train(config(sample_pipeline, tmp_path / "disk", steps=6, min_free_disk_gb=1e9))
    assert not list((tmp_path / "disk").glob("checkpoint-*"))


def test_driver_message():
    from tonsai.train.guards import cuda_problem

    msg = cuda_problem("550.54.15", "13.0")
    assert "driver >= 580" in msg and "uv sync --extra cu128" in msg and "uv run --extra cu128" in msg
    old = cuda_problem("470.82", "12.8")
    assert "driver >= 525" in old and "cu128" not in old  # too old for either build: only the upgrade helps
    assert cuda_problem("580.65", "13.0") is None
    assert cuda_problem("535.1", "12.8") is None
    assert cuda_problem(None, "13.0") is None
