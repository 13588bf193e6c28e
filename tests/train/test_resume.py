"""Where a run starts (tonsai.train.resume): --resume-from auto continues from the newest complete
checkpoint with the uninterrupted run's losses (also after kill -9, and past a metrics line cut short);
incomplete checkpoints are never resumed from; a fresh run into a used folder is refused. (Damaged and
crafted checkpoints: test_checkpoints.py.)"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.train.runs import LAUNCH_VARS, common_args, config, losses, run_script, wait_and_kill
from tonsai.errors import StageError
from tonsai.train.run import run_train


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
    # the manifest's mean training loss covers the whole run, the 6 steps before the resume too
    assert manifest["train_loss"] == pytest.approx(plain_run[1]["train_loss"], rel=1e-5)


def test_fresh_run_into_used_folder_is_refused(plain_run, sample_pipeline):
    with pytest.raises(StageError, match="--resume-from auto"):
        run_train(config(sample_pipeline, plain_run[0]))


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
    wait_and_kill(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
                  lambda: (out / "checkpoint-6" / "trainer_state.json").is_file() and logged_step(8)())
    assert not (out / "final").exists()
    # kill 2: the resumed run, once it has logged step 10 again
    resumed = subprocess.Popen(cmd + ["--resume-from", "auto"], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_and_kill(resumed, logged_step(10))
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


def test_resume_tolerates_a_metrics_line_cut_short_by_a_kill(plain_run, sample_pipeline, tmp_path):
    out = tmp_path / "cut"
    shutil.copytree(plain_run[0], out)
    shutil.rmtree(out / "checkpoint-12")
    shutil.rmtree(out / "final")
    metrics = out / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"step": 13, "lo\n\n', encoding="utf-8")
    run_train(config(sample_pipeline, out, steps=12, resume_from="auto"))
    assert dict(losses(out)) == pytest.approx(dict(losses(plain_run[0])), rel=1e-5)
