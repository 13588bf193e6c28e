"""tonsai.executors.QuietLocalExecutor: datatrove's local executor with each task's log (pipeline,
stats) in its file only; errors and a progress line still reach the console."""

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from datatrove.pipeline.base import PipelineStep
from loguru import logger

from tonsai import executors


class Note(PipelineStep):
    """Logs one line per task through datatrove's logger (loguru), then waits ``sleep_s``."""

    name = "note"

    def __init__(self, sleep_s: float = 0.0, fail_rank: int | None = None):
        super().__init__()
        self.sleep_s, self.fail_rank = sleep_s, fail_rank

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        logger.info(f"note from task {rank}")
        time.sleep(self.sleep_s)
        if rank == self.fail_rank:
            raise ValueError(f"task {rank} broke on purpose")
        return
        yield


class Hold(PipelineStep):
    """Writes its process id to ``<folder>/pid-<rank>``, then waits (a task that is still running)."""

    name = "hold"

    def __init__(self, folder: str):
        super().__init__()
        self.folder = folder

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        Path(self.folder, f"pid-{rank}").write_text(str(os.getpid()))
        time.sleep(120)
        return
        yield


REPO = Path(__file__).resolve().parents[1]


def run_tasks(logs: Path, workers: int, tasks: int, fail_rank: int | None = None) -> subprocess.CompletedProcess:
    """The executor in a fresh process, as a stage runs it: a fork server started by an earlier test
    would keep writing to that test's captured stderr."""
    code = ("import sys; from tonsai.executors import local_executor; from tests.test_executors import Note; "
            f"local_executor([Note(fail_rank={fail_rank})], tasks={tasks}, workers={workers}, "
            f"logging_dir={str(logs)!r}).run()")
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("workers", [1, 2])
def test_each_task_logs_to_its_file_and_the_console_stays_quiet(tmp_path, workers):
    r = run_tasks(tmp_path / "logs", workers, tasks=3)
    assert r.returncode == 0, r.stderr[-2000:]
    err = r.stderr
    # datatrove alone prints each task's pipeline, its stats and "k/N tasks completed" here
    for noise in ("PIPELINE", "Stats:", "tasks completed", "note from task", "Launching pipeline"):
        assert noise not in err, err[-2000:]
    for rank in range(3):
        text = (tmp_path / "logs" / "logs" / f"task_{rank:05d}.log").read_text(encoding="utf-8")
        assert f"note from task {rank}" in text and f"Stats: Task {rank}" in text
        assert (tmp_path / "logs" / "completions" / f"{rank:05d}").is_file()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_task_still_shows_its_error_on_the_console(tmp_path, workers):
    r = run_tasks(tmp_path / "logs", workers, tasks=2, fail_rank=1)
    assert r.returncode != 0
    # datatrove's own error line, with the traceback (Python's, of the uncaught error, is there anyway)
    assert "| ERROR    | datatrove.executor.base" in r.stderr and r.stderr.count("Traceback") >= 2
    assert "ValueError: task 1 broke on purpose" in r.stderr


def test_a_long_run_logs_how_many_tasks_are_done(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(executors, "PROGRESS_EVERY_S", 0.1)
    with caplog.at_level(logging.INFO, logger="tonsai.executors"):
        executors.local_executor([Note(sleep_s=0.3)], tasks=2, workers=1, logging_dir=str(tmp_path / "logs")).run()
    lines = [r.getMessage() for r in caplog.records if "tasks done" in r.getMessage()]
    assert lines and lines[0].startswith("note: 0 of 2 tasks done after ")
    assert str(Path(tmp_path / "logs" / "logs")) in lines[0]
    # a step run again over the same folder (skip_completed=False) does not count the earlier run's marks
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tonsai.executors"):
        executors.local_executor([Note(sleep_s=0.3)], tasks=2, workers=1, logging_dir=str(tmp_path / "logs"),
                                 skip_completed=False).run()
    lines = [r.getMessage() for r in caplog.records if "tasks done" in r.getMessage()]
    assert lines and lines[0].startswith("note: 0 of 2 tasks done after ")


def test_loguru_handlers_reuse_the_library_folders_per_sys_path(monkeypatch):
    """tonsai.executors keeps loguru's library folders per sys.path (datatrove adds three handlers
    a task): the folders are loguru's own answer, computed again when sys.path changes."""
    from loguru import _better_exceptions

    formatter = _better_exceptions.ExceptionFormatter
    assert formatter._get_lib_dirs.tonsai_cached
    first = formatter._get_lib_dirs()
    assert first == formatter._get_lib_dirs.uncached()  # loguru's own computation
    assert formatter._get_lib_dirs() is not first  # a copy each time, so no caller can change the kept one
    assert formatter()._lib_dirs == first  # the formatter a handler builds gets the same folders
    extra = str(Path(sys.prefix, "lib").resolve())
    monkeypatch.setattr(sys, "path", [*sys.path, extra])
    assert formatter._get_lib_dirs() == formatter._get_lib_dirs.uncached()


def _identity(pid: int) -> tuple[int, str] | None:
    """(pid, start time) of a live process (not a zombie), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in "ZX" else (pid, fields[19])


def _holders(folder: Path) -> list[str]:
    """The processes with the folder's lock file open."""
    lock = str(folder.parent / f".{folder.name}.lock")
    found = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            if any(os.readlink(fd) == lock for fd in fd_dir.iterdir()):
                found.append((fd_dir.parent / "cmdline").read_text().replace("\0", " ")[:200])
        except OSError:
            continue
    return found


def _descendants(pid: int) -> set[tuple[int, str]]:
    """(pid, start time) of every live process below ``pid``."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
    tree, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier} - tree
        tree |= frontier
    return {ident for ident in map(_identity, tree) if ident}


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
@pytest.mark.parametrize("workers", [1, 2])
def test_nothing_a_killed_stage_started_outlives_it_or_keeps_its_folder_locked(tmp_path, workers):
    """kill -9 of a stage while its tasks run: datatrove's Manager process and the task processes
    end too (within seconds), and the output folder's lock is free for the next run (one worker
    starts no other process at all)."""
    from tonsai.errors import StageError
    from tonsai.folders import FolderLock

    out, held = tmp_path / "out", tmp_path / "held"
    held.mkdir()
    code = ("from tonsai.folders import FolderLock; from tonsai.executors import local_executor; "
            "from tests.test_executors import Hold; "
            f"lock = FolderLock({str(out)!r}, 'test').acquire(); "
            f"local_executor([Hold({str(held)!r})], tasks=2, workers={workers}, "
            f"logging_dir={str(tmp_path / 'logs')!r}).run()")
    stage = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stderr=subprocess.DEVNULL)
    helpers: set[tuple[int, str]] = set()
    try:
        deadline = time.monotonic() + 60
        while not (held / "pid-0").exists() or (workers == 2 and not (held / "pid-1").exists()):
            assert stage.poll() is None and time.monotonic() < deadline, "the tasks did not start"
            time.sleep(0.1)
        helpers = _descendants(stage.pid)
        # one worker runs its tasks in the stage's process, with no helper (datatrove alone would
        # start its Manager); two: the Manager, the fork server and its workers
        assert len(helpers) >= 2 if workers == 2 else not helpers, helpers
        stage.send_signal(signal.SIGKILL)
        stage.wait()
        deadline = time.monotonic() + 10
        while True:
            alive = {h for h in helpers if _identity(h[0]) == h}
            try:
                FolderLock(out, "test").acquire().release()
            except StageError:
                locked = True
            else:
                locked = False
            if (not alive and not locked) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert not alive, f"still running 10 s after the stage was killed: {alive}"
        assert not locked, f"{out} is still locked 10 s after the stage was killed: {_holders(out)}"
    finally:  # whatever the outcome, leave no process behind
        helpers |= _descendants(stage.pid)
        stage.kill()
        stage.wait()
        for pid, _ in {h for h in helpers if _identity(h[0]) == h}:
            os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_a_task_process_watches_the_stage_with_one_thread_however_many_tasks_it_runs():
    me = _identity(os.getpid())

    def watchers():
        return sum(t.name == "tonsai-stage-watch" for t in threading.enumerate())

    before = watchers()
    executors._end_with(me)  # as each task of a pool worker does
    executors._end_with(me)
    assert watchers() == before + 1
