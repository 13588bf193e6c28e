"""DeepSpeed with or without a launcher (tonsai.train.launch), through scripts/train_gpt2.py as users
run it: ZeRO-2 in one process without a launcher (the plain run's losses, and exact resume), two
processes under torchrun and under the deepspeed launcher; and where DeepSpeed's CPU op is built."""

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.train.runs import ZERO2, common_args, losses, run_script


def torch_allclose(x, y):
    import torch

    return torch.allclose(x, y, rtol=1e-4, atol=1e-6)


def test_deepspeed_zero2_single_process_without_launcher_matches_plain_run(plain_run, sample_pipeline, tmp_path):
    out = tmp_path / "ds"
    proc = run_script(common_args(sample_pipeline, out) + ["--deepspeed", ZERO2])
    assert "no launcher detected" in proc.stderr
    assert "parameters" in proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["world_size"] == 1 and manifest["config"]["deepspeed"] == ZERO2
    ds_losses, plain_losses = losses(out), losses(plain_run[0])
    assert [s for s, _ in ds_losses] == [s for s, _ in plain_losses]
    for (_, a), (_, b) in zip(ds_losses, plain_losses):
        assert a == pytest.approx(b, rel=1e-4)

    # exact resume under DeepSpeed: a crash right after checkpoint-6 (its ZeRO optimizer shards included)
    assert list((out / "checkpoint-6").glob("global_step6/*optim_states.pt"))
    resumed = tmp_path / "ds_resumed"
    shutil.copytree(out, resumed)
    shutil.rmtree(resumed / "checkpoint-12")
    shutil.rmtree(resumed / "final")
    run_script(common_args(sample_pipeline, resumed) + ["--deepspeed", ZERO2, "--resume-from", "auto"])
    manifest = json.loads((resumed / "manifest.json").read_text())
    assert manifest["start"] == "checkpoint" and manifest["resumed_from"].endswith("checkpoint-6")
    assert dict(losses(resumed)).keys() == dict(ds_losses).keys()
    for step, loss in ds_losses:
        if step > 6:
            assert dict(losses(resumed))[step] == pytest.approx(loss, rel=1e-5), step
    from transformers import AutoModelForCausalLM

    a = AutoModelForCausalLM.from_pretrained(out / "final")
    b = AutoModelForCausalLM.from_pretrained(resumed / "final")
    for (name, x), (_, y) in zip(a.named_parameters(), b.named_parameters()):
        assert torch_allclose(x, y), name


def test_deepspeed_zero2_two_processes_under_torchrun(plain_run, sample_pipeline, tmp_path):
    out = tmp_path / "ddp"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533"]
    run_script(common_args(sample_pipeline, out, steps=6) + ["--deepspeed", ZERO2], launcher=torchrun)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["world_size"] == 2
    assert manifest["tokens_per_step"] == 2 * 4 * 64
    # per-language counts are summed over both processes
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    for r in (r for r in rows if "loss" in r):
        assert r["tokens_seen_km"] + r["tokens_seen_en"] == r["tokens_seen"] == r["step"] * 2 * 4 * 64
    assert (out / "final" / "model.safetensors").is_file()
    # checksums.json is written after both processes wrote their optimizer partition and RNG state
    from tonsai.train.checkpoint import CHECKSUMS, check

    listed = json.loads((out / "checkpoint-6" / CHECKSUMS).read_text())["files"]
    assert {"global_step6/zero_pp_rank_1_mp_rank_00_optim_states.pt", "rng_state_1.pth"} <= set(listed)
    assert check(out / "checkpoint-6").ok
    # validation windows are split between the two processes and summed: at step 0 (the same seeded
    # initial model) the figures are the one-process run's
    for lang in ("km", "en"):
        assert losses(out, f"eval_{lang}_tokens")[0] == losses(plain_run[0], f"eval_{lang}_tokens")[0]
        assert losses(out, f"eval_{lang}_loss")[0][1] == pytest.approx(losses(plain_run[0], f"eval_{lang}_loss")[0][1],
                                                                       rel=1e-5)


def test_deepspeed_launcher_two_processes(sample_pipeline, tmp_path):
    out = tmp_path / "dslaunch"
    launcher = [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", "2", "--master_port", "29544"]
    run_script(common_args(sample_pipeline, out, steps=4) + ["--deepspeed", ZERO2], launcher=launcher)
    assert json.loads((out / "manifest.json").read_text())["world_size"] == 2


def test_deepspeed_ops_are_cached_per_virtual_environment(monkeypatch, tmp_path, caplog):
    import torch

    from tonsai.train import launch

    if torch.cuda.is_available():
        pytest.skip("DeepSpeed builds its CPU communication op only without a GPU")
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    assert sys.prefix != sys.base_prefix  # the tests run in the project's .venv
    assert launch.default_extensions_dir() == os.path.join(sys.prefix, "torch_extensions")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))  # a user's choice is kept
    assert launch.default_extensions_dir() == str(tmp_path)
    with caplog.at_level("INFO", logger="tonsai.train.launch"):
        assert launch.announce_cpu_op_build()
    assert "takes a few minutes, once" in caplog.text and str(tmp_path) in caplog.text
