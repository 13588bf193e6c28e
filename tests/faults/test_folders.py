"""Fault injection: output folders, locks, interrupted writes and file modes (tonsai.folders).

Each probe runs the real stage (the script in a subprocess where the exit code matters) and checks
the exit status, the message, and that no input or earlier output changed: every file is hashed
before and after.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tonsai.data.prepare import PrepareConfig, run_prepare
from tonsai.errors import StageError
from tonsai.folders import FolderLock

from ..conftest import REPO, SAMPLE
from . import script


def digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (hidden files included), by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def prepare_args(out: Path, *extra) -> list[str]:
    return ["--khmer", SAMPLE / "km.txt", "--english", SAMPLE / "en.txt", "--validation-fraction", "0.1",
            "--min-validation-docs", "3", "--output-dir", out, *extra]


def small_prepare(out: Path, **kw) -> dict:
    return run_prepare(PrepareConfig(output_dir=str(out), khmer=[str(SAMPLE / "km.txt")],
                                     english=[str(SAMPLE / "en.txt")], validation_fraction=0.1,
                                     min_validation_docs=3, **kw))


def test_eval_into_the_run_folder_it_evaluates_is_refused(trained_model, tmp_path):
    run = trained_model.parent
    text = tmp_path / "k.txt"
    text.write_text((SAMPLE / "km.txt").read_text(encoding="utf-8")[:2000], encoding="utf-8")
    before = digest(run)
    for out in (run, trained_model, run / "eval"):
        proc = script("eval_model.py", "--model-dir", trained_model, "--text", f"km={text}", "--output-dir", out,
                      "--overwrite", check_rc=1)
        assert "lies inside" in proc.stderr or "holds the input" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    assert digest(run) == before


def test_prepare_into_the_folder_holding_its_input_is_refused(tmp_path):
    d = tmp_path / "D"
    d.mkdir()
    shutil.copy(SAMPLE / "km.txt", d / "km.txt")
    before = digest(d)
    proc = script("prepare_dataset.py", "--khmer", d / "km.txt", "--output-dir", d, "--overwrite", check_rc=1)
    assert f"holds the input {d / 'km.txt'}" in proc.stderr
    proc = script("prepare_dataset.py", "--khmer", d, "--output-dir", d / "out", check_rc=1)
    assert "lies inside the input folder" in proc.stderr
    assert digest(d) == before and sorted(p.name for p in d.iterdir()) == ["km.txt"]


def test_tokenizer_into_its_dataset_is_refused(sample_pipeline):
    data = sample_pipeline / "data"
    before = digest(data)
    proc = script("train_tokenizer.py", "--dataset-dir", data, "--output-dir", data, "--vocab-size", "300",
                  "--overwrite", check_rc=1)
    assert "holds the input" in proc.stderr
    assert digest(data) == before


def test_a_folder_of_other_files_is_never_replaced_even_with_overwrite(tmp_path, sample_pipeline):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    before = digest(mine)
    proc = script("prepare_dataset.py", *prepare_args(mine, "--overwrite"), check_rc=1)
    assert "already holds thesis.tex (files tonsai did not make)" in proc.stderr
    with pytest.raises(StageError, match="output of tonsai's prepare stage"):
        from tonsai.tokenizer.bpe import TokenizerConfig, run_train_tokenizer

        run_train_tokenizer(TokenizerConfig(output_dir=str(sample_pipeline / "data"), input=[str(SAMPLE / "en.txt")],
                                            vocab_size=300, overwrite=True))
    assert digest(mine) == before


def test_a_complete_output_is_replaced_only_with_overwrite(tmp_path):
    out = tmp_path / "data"
    first = small_prepare(out)
    with pytest.raises(StageError, match="already holds a complete prepare output: pass --overwrite"):
        small_prepare(out)
    assert json.loads((out / "manifest.json").read_text())["created_utc"] == first["created_utc"]
    time.sleep(1.1)
    second = small_prepare(out, overwrite=True)
    assert second["created_utc"] != first["created_utc"]
    assert second["splits"] == first["splits"]
    assert not list(tmp_path.glob(".tmp-*")) and not list(tmp_path.glob(".*.lock"))


def test_a_second_writer_is_refused_while_the_first_runs(tmp_path):
    out = tmp_path / "data"
    # enough text that the first run still holds its lock when the second starts (the sample corpus
    # alone is prepared in about a second, less than a second interpreter takes to start)
    big = tmp_path / "km_big.txt"
    big.write_text((SAMPLE / "km.txt").read_text(encoding="utf-8") * 300, encoding="utf-8")
    args = ["--khmer", big, *prepare_args(out)[2:]]
    first = subprocess.Popen([sys.executable, str(REPO / "scripts/prepare_dataset.py"), *map(str, args)],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / ".data.lock"
    deadline = time.time() + 120
    while not lock.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert lock.exists(), "the first prepare never took its lock"
    second = script("prepare_dataset.py", *args, check_rc=1)
    assert "is being written by another run: prepare stage, pid" in second.stderr
    assert f"pid {first.pid} " in second.stderr
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-3000:]
    assert json.loads((out / "manifest.json").read_text())["stage"] == "prepare"
    assert not lock.exists()


def _hold_lock_then(folder: Path, action: str) -> subprocess.Popen:
    code = (f"import os, signal, sys, time; from tonsai.folders import FolderLock; "
            f"FolderLock({str(folder)!r}, 'train').acquire(); print('held', flush=True); "
            + ("os.kill(os.getpid(), signal.SIGKILL)" if action == "die" else "time.sleep(600)"))
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_training_into_a_locked_run_folder_is_refused(sample_pipeline, tmp_path):
    from tonsai.train.config import TrainConfig
    from tonsai.train.run import run_train

    run = tmp_path / "run"
    holder = _hold_lock_then(run, "sleep")
    try:
        with pytest.raises(StageError, match=f"being written by another run: train stage, pid {holder.pid}"):
            run_train(TrainConfig(dataset_dir=str(sample_pipeline / "data"), tokenizer_dir=str(sample_pipeline / "tok"),
                                  model_config=str(REPO / "configs/model/gpt2_tiny.json"), output_dir=str(run),
                                  max_steps=2, device="cpu"))
    finally:
        holder.kill()
        holder.wait()
    assert not run.exists()


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path, caplog):
    out = tmp_path / "data"
    holder = _hold_lock_then(out, "die")
    holder.wait()
    assert holder.returncode == -signal.SIGKILL
    lock = tmp_path / ".data.lock"
    assert json.loads(lock.read_text())["pid"] == holder.pid
    with caplog.at_level("WARNING", logger="tonsai.folders"):
        small_prepare(out)
    assert f'"pid": {holder.pid}' in caplog.text and "left by a process that is gone" in caplog.text
    assert not lock.exists()


def test_flock_is_exclusive_within_and_across_processes(tmp_path):
    with FolderLock(tmp_path / "x", "eval"):
        with pytest.raises(StageError, match=f"eval stage, pid {os.getpid()}"):
            FolderLock(tmp_path / "x", "eval").acquire()
    with FolderLock(tmp_path / "x", "eval"):  # released cleanly: taken again without a stale warning
        pass


KILL_AT = """
import os, signal, sys
import tonsai.data.prepare as p
real = p.write_splits
def die(*a, **k):
    real(*a, **k)
    os.kill(os.getpid(), signal.SIGKILL)  # killed inside the merge, after the splits are written
p.write_splits = die
from tonsai.data.prepare import PrepareConfig, run_prepare
run_prepare(PrepareConfig(output_dir=sys.argv[1], khmer=[sys.argv[2]], english=[sys.argv[3]],
                          validation_fraction=0.1, min_validation_docs=3, overwrite=True))
"""


def test_kill_9_during_the_merge_keeps_the_earlier_output_and_the_rerun_cleans_up(tmp_path):
    out = tmp_path / "data"
    small_prepare(out)
    before = digest(out)
    proc = subprocess.run([sys.executable, "-c", KILL_AT, str(out), str(SAMPLE / "km.txt"), str(SAMPLE / "en.txt")],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert digest(out) == before  # the complete earlier output is untouched
    assert list(tmp_path.glob(".tmp-data-*")) and (tmp_path / ".data.lock").exists()  # what the kill left
    small_prepare(out, overwrite=True)
    assert not list(tmp_path.glob(".tmp-data-*")) and not (tmp_path / ".data.lock").exists()
    assert not (tmp_path / "data.work").exists()


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_outputs_respect_the_umask(tmp_path, mask):
    code = (f"import os, sys; os.umask({mask}); from tonsai.data.prepare import PrepareConfig, run_prepare; "
            f"run_prepare(PrepareConfig(output_dir=sys.argv[1], khmer=[sys.argv[2]], english=[sys.argv[3]], "
            f"validation_fraction=0.1, min_validation_docs=3))")
    out = tmp_path / "data"
    proc = subprocess.run([sys.executable, "-c", code, str(out), str(SAMPLE / "km.txt"), str(SAMPLE / "en.txt")],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out.stat().st_mode & 0o777) == 0o777 & ~mask
    assert ((out / "manifest.json").stat().st_mode & 0o777) == 0o666 & ~mask


def test_normalize_text_never_replaces_an_input_or_a_foreign_file(tmp_path):
    src = tmp_path / "raw.txt"
    shutil.copy(SAMPLE / "km.txt", src)
    before = digest(tmp_path)
    proc = script("normalize_text.py", src, "--output", src, "--overwrite", check_rc=1)
    assert "holds the input" in proc.stderr
    other = tmp_path / "notes.txt"
    other.write_text("mine")
    proc = script("normalize_text.py", src, "--output", other, check_rc=1)
    assert "already exists: pass --overwrite" in proc.stderr
    assert digest(tmp_path) == {**before, "notes.txt": hashlib.sha256(b"mine").hexdigest()}
    folder = tmp_path / "corpus"
    folder.mkdir()
    shutil.copy(src, folder / "a.txt")
    script("normalize_text.py", folder, "--output", tmp_path / "clean", check_rc=0)
    assert json.loads((tmp_path / "clean" / "manifest.json").read_text())["stage"] == "normalize"
    proc = script("normalize_text.py", folder, "--output", folder, "--overwrite", check_rc=1)
    assert "holds the input" in proc.stderr


def test_a_task_marked_complete_without_its_documents_is_redone_not_trusted(tmp_path, caplog):
    """Two prepares racing on one work folder used to leave a completion mark without the task's
    documents, and every rerun then said "complete, skipping" and failed."""
    out = tmp_path / "data"
    small_prepare(out, keep_work_dir=True)
    docs = tmp_path / "data.work" / "docs" / "00000.parquet"
    assert (tmp_path / "data.work" / "logs" / "docs" / "completions" / "00000").is_file()
    docs.unlink()
    with caplog.at_level("INFO"):
        manifest = small_prepare(out, keep_work_dir=True, overwrite=True)
    assert "finished already" not in caplog.text
    assert docs.is_file() and manifest["splits"]["train"] > 0


def test_a_full_disk_while_writing_keeps_the_earlier_output(sample_pipeline, tmp_path, monkeypatch, capsys):
    """ENOSPC injected into the tokenizer stage's last write: the earlier tokenizer stays as it was and
    no staging folder or lock is left behind."""
    import errno

    import tonsai.tokenizer.bpe as bpe

    out = tmp_path / "tok"
    shutil.copytree(sample_pipeline / "tok", out)
    before = digest(out)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(bpe, "write_manifest", full_disk)
    with pytest.raises(OSError, match="No space left"):
        bpe.run_train_tokenizer(bpe.TokenizerConfig(output_dir=str(out), dataset_dir=str(sample_pipeline / "data"),
                                                    vocab_size=512, overwrite=True))
    assert digest(out) == before
    assert not list(tmp_path.glob(".tmp-*")) and not list(tmp_path.glob(".*.lock"))
    from tonsai.cli import run_main

    assert run_main(lambda: full_disk()) == 1
    assert "the disk is full" in capsys.readouterr().err


def test_a_run_refused_before_any_work_leaves_no_mark_on_its_folder(sample_pipeline, tmp_path):
    """A training refused after claiming its folder (here: a budget that cannot be planned) leaves
    the folder as it found it, so that another stage may use that path afterwards."""
    from tonsai.train.config import TrainConfig
    from tonsai.train.run import run_train

    for out in (tmp_path / "new", tmp_path / "empty"):
        if out.name == "empty":
            out.mkdir()
        with pytest.raises(StageError, match="global"):
            run_train(TrainConfig(dataset_dir=str(sample_pipeline / "data"), tokenizer_dir=str(sample_pipeline / "tok"),
                                  model_config=str(REPO / "configs/model/gpt2_tiny.json"), output_dir=str(out),
                                  block_size=64, micro_batch_size=4, max_tokens=1e4, global_batch_tokens=1000,
                                  device="cpu"))
        assert (out.exists(), list(out.iterdir()) if out.exists() else []) == (out.name == "empty", [])


def test_a_folder_that_cannot_be_written_is_named_in_one_line(tmp_path):
    """A --work-dir where no file can be made: a StageError naming the folder and its lock, not an OSError."""
    with pytest.raises(StageError, match=r"cannot write beside /proc/nope \(No such file or directory: /proc/\.nope\.lock\)"):
        FolderLock(Path("/proc/nope"), "prepare-work").acquire()  # /proc takes no new files, root or not


def test_a_read_only_folder_is_named_in_one_line(tmp_path):
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o555)
    try:
        if os.access(readonly, os.W_OK):  # root ignores the mode bits
            pytest.skip("this user can write anywhere (root): the read-only folder case needs another user")
        with pytest.raises(StageError, match=r"cannot write beside .*ro/work \(Permission denied"):
            FolderLock(readonly / "work", "prepare-work").acquire()
    finally:
        readonly.chmod(0o755)


def test_a_forked_child_does_not_keep_a_killed_stages_lock(tmp_path):
    """A stage's forked children (DataLoader workers, datatrove's Manager) may outlive a kill -9 by
    seconds: they must not hold the folder's lock meanwhile, and a child's release() is not the stage's."""
    out = tmp_path / "run"
    code = (f"import os, signal, time; from tonsai.folders import FolderLock; "
            f"lock = FolderLock({str(out)!r}, 'train').acquire(); "
            "child = os.fork()\n"
            "if child == 0:\n"
            "    lock.release(); time.sleep(60); os._exit(0)\n"
            "print(child, flush=True); time.sleep(0.5); os.kill(os.getpid(), signal.SIGKILL)")
    stage = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    child = int(stage.stdout.readline())
    try:
        stage.wait(timeout=60)
        assert (tmp_path / ".run.lock").exists()  # the child's release() removed nothing
        os.kill(child, 0)  # the child is still running
        with FolderLock(out, "train"):  # and yet the lock is free at once
            pass
    finally:
        os.kill(child, signal.SIGKILL)
