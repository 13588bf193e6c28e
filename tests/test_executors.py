"""tonsai.executors.QuietLocalExecutor: datatrove's local executor with each task's log (pipeline,
stats) in its file only; errors and a progress line still reach the console."""

import logging
import subprocess
import sys
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
