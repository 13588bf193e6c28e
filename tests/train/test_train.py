"""Training-stage tests. The DeepSpeed ones run the real script in a subprocess, the way users do."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tonsai.errors import StageError
from tonsai.train.config import TrainConfig
from tonsai.train.run import run_train

from ..conftest import REPO

LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
TINY = str(REPO / "configs/model/gpt2_tiny.json")
ZERO2 = str(REPO / "configs/deepspeed/zero2_h100.json")


def common_args(pipe, out, steps=12):
    return ["--dataset-dir", str(pipe / "data"), "--tokenizer-dir", str(pipe / "tok"), "--model-config", TINY,
            "--output-dir", str(out), "--block-size", "64", "--micro-batch-size", "4", "--max-steps", str(steps),
            "--eval-steps", "6", "--save-steps", "6", "--logging-steps", "2", "--dataloader-workers", "0",
            "--device", "cpu"]


def run_script(args, launcher=None, timeout=900):
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    cmd = (launcher or [sys.executable]) + [str(REPO / "scripts/train_gpt2.py"), *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def torch_allclose(x, y):
    import torch

    return torch.allclose(x, y, rtol=1e-4, atol=1e-6)


def losses(run_dir, key="loss"):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r[key]) for r in rows if key in r]


def config(pipe, out, steps=12, **kw):
    args = dict(dataset_dir=str(pipe / "data"), tokenizer_dir=str(pipe / "tok"), model_config=TINY,
                output_dir=str(out), block_size=64, micro_batch_size=4, max_steps=steps, eval_steps=6,
                save_steps=6, logging_steps=2, dataloader_workers=0, device="cpu")
    return TrainConfig(**{**args, **kw})


@pytest.fixture(scope="module")
def plain_run(sample_pipeline, tmp_path_factory):
    out = tmp_path_factory.mktemp("plain")
    manifest = run_train(config(sample_pipeline, out))
    return out, manifest


def test_plain_run_writes_model_metrics_and_manifest(plain_run):
    from transformers import AutoModelForCausalLM

    out, manifest = plain_run
    assert manifest["stage"] == "train" and manifest["global_step"] == 12
    assert manifest["parameters"] > 0
    model = AutoModelForCausalLM.from_pretrained(out / "final")
    assert model.config.vocab_size % 64 == 0
    assert (out / "final" / "model.safetensors").is_file()
    assert json.loads((out / "final" / "manifest.json").read_text())["stage"] == "model"
    for lang in ("km", "en"):
        curve = losses(out, f"eval_{lang}_loss")
        assert curve[0][0] == 0 and curve[-1][0] == 12
        assert curve[-1][1] < curve[0][1]
        assert losses(out, f"eval_{lang}_bpb")
    assert all(r[1] > 0 for r in losses(out, "tokens_per_s"))
    # tokens seen per language (by the language of each token's document) add up to all tokens seen
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    for r in train_rows:
        assert r["tokens_seen_km"] + r["tokens_seen_en"] == r["tokens_seen"] == r["step"] * 4 * 64
    assert 0 < train_rows[-1]["tokens_seen_km"] < train_rows[-1]["tokens_seen"]
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))  # TensorBoard by default, offline


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


def test_resume_auto_continues_from_the_latest_checkpoint(plain_run, sample_pipeline, tmp_path):
    # a crash right after checkpoint-6 was written: later checkpoints and the final model never happened
    out = tmp_path / "resumed"
    shutil.copytree(plain_run[0], out)
    shutil.rmtree(out / "checkpoint-12")
    shutil.rmtree(out / "final")
    manifest = run_train(config(sample_pipeline, out, steps=12, resume_from="auto"))
    assert manifest["start"] == "checkpoint" and manifest["resumed_from"].endswith("checkpoint-6")
    assert manifest["global_step"] == 12
    resumed = dict(losses(out))
    uninterrupted = dict(losses(plain_run[0]))
    assert set(resumed) == set(uninterrupted)  # metrics.jsonl has no duplicate steps after resume
    for step in (8, 10, 12):
        assert resumed[step] == pytest.approx(uninterrupted[step], rel=1e-5)


def test_fresh_run_into_used_folder_is_refused(plain_run, sample_pipeline):
    with pytest.raises(StageError, match="--resume-from auto"):
        run_train(config(sample_pipeline, plain_run[0]))


def test_continual_pretraining_from_a_model_folder(plain_run, sample_pipeline, tmp_path, caplog):
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path / "cpt"
    with caplog.at_level("INFO", logger="tonsai.train.run"):
        manifest = run_train(config(sample_pipeline, out, steps=4, warmup=4, learning_rate=1e-3, logging_steps=1,
                                    eval_steps=4, save_steps=4, resume_from=str(plain_run[0] / "final")))
    assert manifest["start"] == "weights" and manifest["global_step"] == 4
    assert "continual pretraining: loading weights from" in caplog.text
    # a fresh schedule: the learning rate warms up again from the start instead of continuing the decay
    lrs = [lr for _, lr in losses(out, "learning_rate")]
    assert lrs[0] < lrs[1] < lrs[2] < lrs[3] <= 1e-3
    # it starts from the trained weights: the first loss is the trained model's, far below a fresh model's
    first_loss = losses(out)[0][1]
    assert first_loss < losses(plain_run[0])[0][1] - 0.5
    start = AutoModelForCausalLM.from_pretrained(plain_run[0] / "final")
    end = AutoModelForCausalLM.from_pretrained(out / "final")
    assert not torch.equal(start.get_input_embeddings().weight, end.get_input_embeddings().weight)


@pytest.mark.parametrize("script", ["prepare_dataset", "train_tokenizer", "train_gpt2", "eval_model", "quickstart",
                                    "tokenize_dataset", "tokenizer_report", "plan_run",
                                    "normalize_text"])
def test_every_script_has_help(script):
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / f"{script}.py"), "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    assert "Example" in proc.stdout and "--config CONFIG" in proc.stdout and "(default:" in proc.stdout


def test_train_from_a_tokens_dir_and_refuse_another_tokenizer(sample_pipeline, tmp_path):
    from tonsai.tokenizer.bpe import TokenizerConfig, run_train_tokenizer
    from tonsai.tokenizer.pack import TokenizeConfig, run_tokenize

    run_tokenize(TokenizeConfig(str(sample_pipeline / "data"), str(sample_pipeline / "tok"), str(tmp_path / "tokens"), 2))
    manifest = run_train(config(sample_pipeline, tmp_path / "run", steps=2, tokens_dir=str(tmp_path / "tokens"),
                                eval_max_tokens=100))
    assert manifest["global_step"] == 2 and not (tmp_path / "run" / "tokens").exists()
    # --eval-max-tokens: validation scores the first 100 tokens of each language
    assert {n for _, n in losses(tmp_path / "run", "eval_km_tokens")} == {100}
    assert {n for _, n in losses(tmp_path / "run", "eval_en_tokens")} == {100}
    other = tmp_path / "other_tok"
    run_train_tokenizer(TokenizerConfig(output_dir=str(other), dataset_dir=str(sample_pipeline / "data"), vocab_size=300))
    bad = config(sample_pipeline, tmp_path / "run2", steps=2, tokens_dir=str(tmp_path / "tokens"))
    bad.tokenizer_dir = str(other)
    with pytest.raises(StageError, match="another tokenizer"):
        run_train(bad)


def test_llama_style_model_trains(sample_pipeline, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    from transformers import PreTrainedModel

    cfg = config(sample_pipeline, tmp_path / "llama", steps=4, save_steps=2, save_total_limit=1)
    cfg.model_config = str(REPO / "configs/model/llama_tiny.json")
    manifest = run_train(cfg)
    assert manifest["model_type"] == "llama" and manifest["global_step"] == 4
    # --save-total-limit 1: checkpoint-2 was written and then removed for checkpoint-4
    assert sorted(p.name for p in (tmp_path / "llama").glob("checkpoint-*")) == ["checkpoint-4"]

    # --gradient-checkpointing: really switched on, and the same losses (it recomputes, it does not change math)
    enabled = []
    original = PreTrainedModel.activation_checkpointing_enable

    def spy(self, *a, **kw):
        enabled.append(type(self).__name__)
        return original(self, *a, **kw)

    monkeypatch.setattr(PreTrainedModel, "activation_checkpointing_enable", spy)
    gc = config(sample_pipeline, tmp_path / "llama_gc", steps=4, save_steps=2, gradient_checkpointing=True)
    gc.model_config = cfg.model_config
    run_train(gc)
    assert enabled == ["LlamaForCausalLM"]
    for (s1, a), (s2, b) in zip(losses(tmp_path / "llama"), losses(tmp_path / "llama_gc")):
        assert s1 == s2 and a == pytest.approx(b, rel=1e-5)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "llama" / "final")
    assert model.config.num_key_value_heads == 2 and model.config.vocab_size % 64 == 0
    rows = [json.loads(x) for x in (tmp_path / "llama" / "metrics.jsonl").read_text().splitlines()]
    assert any("tokens_per_s" in r for r in rows) and not any("mfu" in r for r in rows)  # no MFU on a CPU


def _wait_and_kill(proc, condition, timeout=600):
    import signal
    import time

    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, "training ended before the kill point"
        assert time.time() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_kill_9_then_resume_auto_gives_the_uninterrupted_losses(plain_run, sample_pipeline, tmp_path):
    out = tmp_path / "killed"
    args = common_args(sample_pipeline, out)
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    cmd = [sys.executable, str(REPO / "scripts/train_gpt2.py"), *args]

    def logged_step(n):
        def ok():
            path = out / "metrics.jsonl"
            return path.is_file() and any(json.loads(x).get("step", 0) >= n for x in path.read_text().splitlines()
                                          if x.strip())
        return ok

    # kill 1: after checkpoint-6 is complete and step 8 is logged (mid-way to the next checkpoint)
    _wait_and_kill(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
                   lambda: (out / "checkpoint-6" / "trainer_state.json").is_file() and logged_step(8)())
    assert not (out / "final").exists()
    # kill 2: the resumed run, once it has logged step 10 again
    resumed = subprocess.Popen(cmd + ["--resume-from", "auto"], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_and_kill(resumed, logged_step(10))
    proc = run_script(args + ["--resume-from", "auto"])
    assert "checkpoint-6" in proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["global_step"] == 12 and manifest["start"] == "checkpoint"
    # same data order, same losses as the run that was never interrupted (CPU, fp32: exactly)
    assert losses(out) == losses(plain_run[0])
    assert losses(out, "eval_km_loss") == losses(plain_run[0], "eval_km_loss")
    assert losses(out, "tokens_seen_km") == losses(plain_run[0], "tokens_seen_km")  # counts resume exactly


def test_incomplete_checkpoints_are_never_resumed_from(tmp_path):
    from tonsai.train.checkpoint import write_checksums
    from tonsai.train.resume import latest_checkpoint

    for step, state in ((6, '{"global_step": 6}'), (9, '{"global_step": 9, "log_hi'), (12, None), (15, "{}")):
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"x")
        if state is not None:
            (d / "trainer_state.json").write_text(state)
        if step == 6:
            write_checksums(d)
    # 9 and 12 were killed before their checksums.json, 15 has a complete Trainer state but no checksums
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-6"


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_an_incomplete_checkpoint_named_explicitly_is_refused(plain_run, sample_pipeline, tmp_path, damage):
    out = tmp_path / "partial"
    shutil.copytree(plain_run[0], out)
    state = out / "checkpoint-12" / "trainer_state.json"
    if damage == "truncated":
        state.write_text(state.read_text()[:40])  # killed while the Trainer was writing it
    else:
        state.unlink()  # killed before the Trainer wrote it (it writes it last): weights and config are there
    with pytest.raises(StageError, match="checkpoint does not verify: trainer_state.json"):
        run_train(config(sample_pipeline, out, resume_from=str(out / "checkpoint-12")))
    # --overwrite must not delete the folder it would load from
    with pytest.raises(StageError, match="which --overwrite would delete"):
        run_train(config(sample_pipeline, out, resume_from=str(out / "final"), overwrite=True))
    assert (out / "final" / "model.safetensors").is_file()


def test_zero3_is_refused_with_the_reason(sample_pipeline, tmp_path):
    z3 = tmp_path / "zero3.json"
    z3.write_text(json.dumps({"zero_optimization": {"stage": 3}, "train_batch_size": "auto"}))
    with pytest.raises(StageError, match="ZeRO stage 3"):
        run_train(config(sample_pipeline, tmp_path / "z3", steps=2, deepspeed=str(z3)))


def test_validation_stream_reads_windows_lazily_and_caps_tokens():
    import numpy as np

    from tonsai.train.trainer import ValidationStream

    tokens = np.arange(10, 30, dtype=np.uint16)
    vs = ValidationStream(tokens, eos_id=0, block_size=8, stride=4, pad_id=1)
    whole = np.concatenate([[0], tokens]).astype(np.int64)
    assert len(vs) == 21
    for b, e in ((0, 8), (0, 1), (4, 12), (13, 21), (3, 3)):
        assert vs[b:e].tolist() == whole[b:e].tolist()
    capped = ValidationStream(tokens, eos_id=0, block_size=8, stride=4, pad_id=1, max_tokens=5)
    assert len(capped) == 6 and capped[0:50].tolist() == [0, 10, 11, 12, 13, 14]


def test_resume_tolerates_a_metrics_line_cut_short_by_a_kill(plain_run, sample_pipeline, tmp_path):
    out = tmp_path / "cut"
    shutil.copytree(plain_run[0], out)
    shutil.rmtree(out / "checkpoint-12")
    shutil.rmtree(out / "final")
    metrics = out / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"step": 13, "lo\n\n', encoding="utf-8")
    run_train(config(sample_pipeline, out, steps=12, resume_from="auto"))
    assert dict(losses(out)) == pytest.approx(dict(losses(plain_run[0])), rel=1e-5)


def test_training_validation_is_eval_model_on_the_same_split(plain_run, sample_pipeline, tmp_path):
    """Training validates with eval_model.py's own scoring (tonsai.eval.perplexity.score_tokens) and
    byte count: for the same model, split, window and stride, the loss and bits per byte a run logs
    at its last step are the figures eval_model.py reports."""
    from tonsai.eval.run import EvalConfig, run_eval

    report = run_eval(EvalConfig(model_dir=str(plain_run[0] / "final"), output_dir=str(tmp_path / "eval"),
                                 dataset_dir=str(sample_pipeline / "data"), device="cpu"))  # the run's window
    for lang in ("km", "en"):
        mine = report["languages"][lang]
        for key, theirs in (("loss", mine["loss"]), ("bpb", mine["bits_per_byte"])):
            step, logged = losses(plain_run[0], f"eval_{lang}_{key}")[-1]
            assert step == 12
            assert logged == pytest.approx(theirs, rel=1e-5), (lang, key)
        assert losses(plain_run[0], f"eval_{lang}_tokens")[-1][1] == mine["tokens"]


def test_shipped_deepspeed_config_leaves_optimizer_and_sizes_to_the_trainer():
    cfg = json.loads(Path(ZERO2).read_text())
    assert cfg["zero_optimization"]["stage"] == 2
    # the Trainer builds AdamW and the LR schedule from tonsai's options; a block here would override them
    assert "optimizer" not in cfg and "scheduler" not in cfg
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                "gradient_clipping"):
        assert cfg[key] == "auto", key
    assert cfg["bf16"]["enabled"] == "auto"


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


def test_continual_pretraining_with_another_tokenizer_needs_vocab_transfer(plain_run, sample_pipeline, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tonsai.tokenizer.bpe import TokenizerConfig, run_train_tokenizer

    new_tok = tmp_path / "tok700"
    run_train_tokenizer(TokenizerConfig(output_dir=str(new_tok), dataset_dir=str(sample_pipeline / "data"),
                                        vocab_size=700))
    cfg = config(sample_pipeline, tmp_path / "cpt", steps=2, resume_from=str(plain_run[0] / "final"))
    cfg.tokenizer_dir = str(new_tok)
    with pytest.raises(StageError, match="--vocab-transfer"):
        run_train(cfg)
    bare = tmp_path / "bare"  # a model folder without tokenizer files cannot be checked: refused too
    AutoModelForCausalLM.from_pretrained(plain_run[0] / "final").save_pretrained(bare)
    with pytest.raises(StageError, match="has no tokenizer to compare with"):
        run_train(config(sample_pipeline, tmp_path / "cpt0", steps=2, resume_from=str(bare)))
    cfg.vocab_transfer = True
    cfg.max_steps = 1
    cfg.learning_rate = 1e-12  # keep the weights where the transfer put them
    run_train(cfg)
    old_model = AutoModelForCausalLM.from_pretrained(plain_run[0] / "final")
    new_model = AutoModelForCausalLM.from_pretrained(tmp_path / "cpt" / "final")
    old_tok, new = AutoTokenizer.from_pretrained(plain_run[0] / "final"), AutoTokenizer.from_pretrained(new_tok)
    assert new_model.config.vocab_size == 704 and new_model.get_input_embeddings().num_embeddings == 704
    old_e, new_e = old_model.get_input_embeddings().weight, new_model.get_input_embeddings().weight
    shared = [t for t in new.get_vocab() if t in old_tok.get_vocab()]
    assert len(shared) > 300
    for t in shared[:50]:
        assert torch.allclose(new_e[new.get_vocab()[t]], old_e[old_tok.get_vocab()[t]], atol=1e-6)
    fresh = [t for t in new.get_vocab() if t not in old_tok.get_vocab()]
    t = fresh[0]
    sub = old_tok(new.decode([new.get_vocab()[t]]), add_special_tokens=False)["input_ids"]
    assert torch.allclose(new_e[new.get_vocab()[t]], old_e[sub].mean(0), atol=1e-6)
