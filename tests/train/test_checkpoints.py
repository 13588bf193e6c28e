"""Fault injection on checkpoints: damaged, half-written, killed at random moments, crafted pickles.

Each test asserts the outcome (exit code or exception, message), and that no other checkpoint changed
(every file hashed before and after)."""

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.train.runs import LAUNCH_VARS, TINY, ZERO2, common_args, config, losses, run_script
from tonsai.errors import StageError
from tonsai.train.checkpoint import CHECKSUMS, check, listed_bytes, unsafe_pickles, write_checksums
from tonsai.train.run import run_train


def hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def interrupted_copy(run_dir: Path, dest: Path) -> Path:
    """The run as a crash right after checkpoint-12 was written leaves it (no final model)."""
    shutil.copytree(run_dir, dest)
    shutil.rmtree(dest / "final")
    (dest / "manifest.json").unlink()
    return dest


def popen(args, **kw):
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    return subprocess.Popen([sys.executable, str(REPO / "scripts/train_gpt2.py"), *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)


def test_every_checkpoint_lists_every_file_and_verifies(plain_run):
    for name in ("checkpoint-6", "checkpoint-12"):
        ckpt = plain_run[0] / name
        listing = json.loads((ckpt / CHECKSUMS).read_text())["files"]
        assert set(listing) == set(hashes(ckpt)) - {CHECKSUMS}
        expected = {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"}
        assert expected <= set(listing)
        assert check(ckpt).ok
        assert unsafe_pickles(ckpt) is None  # the Trainer's own pickles load under the allow-list


def test_rotation_happens_only_after_the_new_checkpoint_verifies(sample_pipeline, tmp_path, monkeypatch):
    """With --save-total-limit 1 the Trainer deletes the previous checkpoint while saving the next: a kill
    just after that must still leave one checkpoint that verifies. A spy on the rotation records the
    folder as rotation finds it (and then rotates for real)."""
    import tonsai.train.trainer as trainer_module

    seen = []
    real = trainer_module.rotate_checkpoints

    def spy(output_dir, **kw):
        seen.append({p.name: check(p).status for p in Path(output_dir).glob("checkpoint-*")})
        return real(output_dir, **kw)

    monkeypatch.setattr(trainer_module, "rotate_checkpoints", spy)
    out = tmp_path / "rot"
    run_train(config(sample_pipeline, out, steps=4, save_steps=2, eval_steps=4, save_total_limit=1))
    assert seen == [{"checkpoint-2": "ok"}, {"checkpoint-2": "ok", "checkpoint-4": "ok"}]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4"]


@pytest.mark.parametrize("damage", ["truncate model.safetensors", "delete optimizer.pt"])
def test_damaged_newest_checkpoint_is_skipped_and_kept(plain_run, sample_pipeline, tmp_path, caplog, damage):
    out = interrupted_copy(plain_run[0], tmp_path / "damaged")
    target = out / "checkpoint-12" / damage.split()[1]
    if damage.startswith("truncate"):
        target.write_bytes(target.read_bytes()[:1000])
    else:
        target.unlink()
    damaged, previous = hashes(out / "checkpoint-12"), hashes(out / "checkpoint-6")
    with caplog.at_level("INFO"):
        manifest = run_train(config(sample_pipeline, out, resume_from="auto"))
    reason = ("model.safetensors has 1,000 bytes" if damage.startswith("truncate")
              else "optimizer.pt is listed in checksums.json but missing")
    assert f"skipping checkpoint-12: {reason}" in caplog.text
    assert manifest["resumed_from"] == str(out / "checkpoint-6") and manifest["global_step"] == 12
    assert losses(out) == losses(plain_run[0])  # the uninterrupted run's, step for step
    # the damaged checkpoint is kept for inspection under a name the Trainer's rotation ignores, untouched;
    # the previous one is untouched; the new checkpoint-12 is clean
    assert hashes(out / "corrupt-checkpoint-12") == damaged
    assert hashes(out / "checkpoint-6") == previous
    assert check(out / "checkpoint-12").ok


def test_a_run_killed_after_its_last_checkpoint_ends_as_the_uninterrupted_one(plain_run, sample_pipeline, tmp_path):
    """Resumed from the checkpoint of its last step, the Trainer took one more step (13 of 12) before
    checking max_steps; now the run exports final/ from that checkpoint without training."""
    from safetensors.torch import load_file

    out = interrupted_copy(plain_run[0], tmp_path / "done")
    manifest = run_train(config(sample_pipeline, out, resume_from="auto"))
    assert manifest["global_step"] == 12 and manifest["resumed_from"] == str(out / "checkpoint-12")
    assert manifest["train_loss"] is None  # no step trained in this process
    assert max(json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()) == 12
    assert losses(out, "eval_km_loss") == losses(plain_run[0], "eval_km_loss")
    mine, theirs = load_file(out / "final" / "model.safetensors"), load_file(plain_run[0] / "final" / "model.safetensors")
    assert mine.keys() == theirs.keys() and all(bool((mine[k] == theirs[k]).all()) for k in mine)


def test_a_named_checkpoint_that_does_not_verify_is_refused(plain_run, sample_pipeline, tmp_path):
    out = interrupted_copy(plain_run[0], tmp_path / "named")
    (out / "checkpoint-12" / "optimizer.pt").unlink()
    before = hashes(out)
    with pytest.raises(StageError, match="does not verify: optimizer.pt is listed in checksums.json but missing"):
        run_train(config(sample_pipeline, out, resume_from=str(out / "checkpoint-12")))
    assert hashes(out) == before


def test_auto_refuses_when_the_only_checkpoints_are_corrupt(plain_run, sample_pipeline, tmp_path):
    """Damage after a checkpoint was completed is not a kill: auto does not silently start over."""
    out = interrupted_copy(plain_run[0], tmp_path / "allbad")
    for name in ("checkpoint-6", "checkpoint-12"):
        (out / name / "rng_state.pth").write_bytes(b"damaged")
    before = hashes(out)
    with pytest.raises(StageError, match="no checkpoint in .* verifies: checkpoint-12 .*rng_state.pth has 7 bytes"):
        run_train(config(sample_pipeline, out, resume_from="auto"))
    assert hashes(out) == before


def test_checkpoints_without_checksums_from_an_older_tonsai_are_not_silently_dropped(plain_run, sample_pipeline,
                                                                                    tmp_path, caplog):
    """Complete Trainer checkpoints without checksums.json (and without tonsai's writing marker): auto
    refuses instead of starting over; named, one is resumed with a warning (after the pickle check)."""
    from tonsai.train.resume import resolve_resume

    out = interrupted_copy(plain_run[0], tmp_path / "legacy")
    for name in ("checkpoint-6", "checkpoint-12"):
        (out / name / CHECKSUMS).unlink()
    before = hashes(out)
    with pytest.raises(StageError, match="no checkpoint in .* verifies: checkpoint-12 .*written by a tonsai without"):
        run_train(config(sample_pipeline, out, resume_from="auto"))
    assert hashes(out) == before
    with caplog.at_level("WARNING"):
        kind, path, _ = resolve_resume(config(sample_pipeline, out, resume_from=str(out / "checkpoint-12")))
    assert (kind, path) == ("checkpoint", str(out / "checkpoint-12")) and "resuming it unverified" in caplog.text


def _kill_when(proc, condition, timeout=600, poll=0.05, delay=0.0):
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, "training ended before the kill point"
        assert time.time() < deadline
        time.sleep(poll)
    time.sleep(delay)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_kill_9_during_the_first_checkpoint_then_auto_starts_from_scratch(plain_run, sample_pipeline, tmp_path):
    out = tmp_path / "first"
    args = common_args(sample_pipeline, out)
    _kill_when(popen(args), lambda: (out / "checkpoint-6").exists(), poll=0.002)
    assert not (out / "checkpoint-6" / CHECKSUMS).exists(), "killed too late: the checkpoint was already complete"
    proc = run_script(args + ["--resume-from", "auto"])  # asserts exit 0
    assert "removed " + str(out / "checkpoint-6") in proc.stderr and "starting from scratch" in proc.stderr
    assert losses(out) == losses(plain_run[0])
    assert check(out / "checkpoint-6").ok and check(out / "checkpoint-12").ok


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill_9_at_a_random_moment_then_auto_gives_the_uninterrupted_losses(plain_run, sample_pipeline, tmp_path,
                                                                           seed):
    """A random training step to wait for, then a random delay: the kill lands anywhere in a step,
    an evaluation or a checkpoint write (save_total_limit 1 makes rotation part of every save)."""
    rng = random.Random(seed)
    out = tmp_path / f"random{seed}"
    args = common_args(sample_pipeline, out) + ["--save-total-limit", "1"]
    step, delay = rng.randrange(0, 12), rng.uniform(0, 1.5)
    metrics = out / "metrics.jsonl"

    def reached():
        return metrics.is_file() and any(json.loads(x).get("step", -1) >= step for x in
                                         metrics.read_text().splitlines() if x.strip().endswith("}"))
    _kill_when(popen(args), reached, delay=delay)
    left = sorted(str(p.relative_to(out)) for p in out.glob("checkpoint-*/*"))
    proc = run_script(args + ["--resume-from", "auto"])  # asserts exit 0
    assert losses(out) == losses(plain_run[0]), (step, delay, left, proc.stderr[-3000:])
    assert losses(out, "eval_km_loss") == losses(plain_run[0], "eval_km_loss")
    assert [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-12"] and check(out / "checkpoint-12").ok


def test_real_plain_checkpoint_size_matches_the_estimate(plain_run, sample_pipeline):
    from transformers import AutoTokenizer

    from tonsai.model.build import build_model, load_model_config
    from tonsai.train.guards import DiskSpaceGuard
    from tonsai.train.resume import first_checkpoint_bytes

    model = build_model(load_model_config(TINY, AutoTokenizer.from_pretrained(sample_pipeline / "tok")))
    estimate = first_checkpoint_bytes(model, sample_pipeline / "tok", deepspeed=False, bf16=False)
    real = listed_bytes(plain_run[0] / "checkpoint-12")
    assert real == sum(p.stat().st_size for p in (plain_run[0] / "checkpoint-12").rglob("*") if p.is_file())
    assert abs(estimate - real) / real < 0.25, (estimate, real)
    assert DiskSpaceGuard(plain_run[0], estimate).checkpoint_bytes() == (real, "the size of checkpoint-12")


@pytest.fixture(scope="module")
def ds_run(sample_pipeline, tmp_path_factory):
    """A real single-process ZeRO-2 run on CPU, 6 steps, checkpoint-6."""
    out = tmp_path_factory.mktemp("ds") / "run"
    run_script(common_args(sample_pipeline, out, steps=6) + ["--deepspeed", ZERO2])
    return out


def test_deepspeed_checkpoint_verifies_loads_safely_and_matches_the_estimate(ds_run, sample_pipeline):
    from transformers import AutoTokenizer

    from tonsai.model.build import build_model, load_model_config
    from tonsai.train.resume import first_checkpoint_bytes

    ckpt = ds_run / "checkpoint-6"
    listing = json.loads((ckpt / CHECKSUMS).read_text())["files"]
    assert {"global_step6/mp_rank_00_model_states.pt", "global_step6/zero_pp_rank_0_mp_rank_00_optim_states.pt",
            "model.safetensors", "rng_state.pth"} <= set(listing)
    assert check(ckpt).ok
    assert unsafe_pickles(ckpt) is None  # every DeepSpeed pickle loads under the allow-list
    model = build_model(load_model_config(TINY, AutoTokenizer.from_pretrained(sample_pipeline / "tok")))
    estimate = first_checkpoint_bytes(model, sample_pipeline / "tok", deepspeed=True, bf16=False)
    real = listed_bytes(ckpt)
    assert abs(estimate - real) / real < 0.25, (estimate, real)


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")  # unpickling creates the marker file


def test_crafted_deepspeed_pickle_is_refused_before_it_runs(ds_run, sample_pipeline, tmp_path):
    import torch

    out = tmp_path / "evil"
    shutil.copytree(ds_run, out)
    shutil.rmtree(out / "final")
    (out / "manifest.json").unlink()
    marker = tmp_path / "code-ran"
    bad = out / "checkpoint-6" / "global_step6" / "mp_rank_00_model_states.pt"
    torch.save({"module": _Evil(marker)}, bad)
    write_checksums(out / "checkpoint-6")  # the checksum passes: only the content is hostile
    before = hashes(out)
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    proc = subprocess.run([sys.executable, str(REPO / "scripts/train_gpt2.py"),
                           *common_args(sample_pipeline, out, steps=6), "--deepspeed", ZERO2, "--resume-from", "auto"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode != 0
    assert "global_step6/mp_rank_00_model_states.pt cannot be loaded without running code" in proc.stderr
    assert "it needs io.open, which is not on the allow-list" in proc.stderr
    assert not marker.exists() and hashes(out) == before
    torch.load(bad, weights_only=False)  # what DeepSpeed would have done: the file really runs code
    assert marker.exists()
