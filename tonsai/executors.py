"""Where a stage's datatrove tasks run: this machine, a Slurm cluster or a Ray cluster.

:class:`ExecutorOptions` holds the flags every datatrove stage shares (``--executor``, the Slurm
job settings, the Ray address); a stage's config inherits it. :func:`local_executor`,
:func:`slurm_executor` and :func:`run_on_ray` build datatrove's own executors, so the stages differ
only in their pipelines. Every job runs in the Python environment that submitted it, in the same folder, and
datatrove's completion marks let a rerun skip finished tasks.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

import multiprocess
from datatrove.executor import LocalPipelineExecutor, RayPipelineExecutor, SlurmPipelineExecutor
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.stats import PipelineStats
from loguru import logger

log = logging.getLogger(__name__)

EXECUTORS = ("local", "slurm", "ray")
# imported once by the fork server that starts local task processes (see local_executor)
PRELOAD = ("tonsai.data.blocks", "tonsai.data.dedup_steps", "tonsai.data.splitwrite")


def local_executor(pipeline: list, *, tasks: int, workers: int, logging_dir: str, **kwargs) -> LocalPipelineExecutor:
    """datatrove's executor for this machine, ``workers`` processes at a time (1: in this process).

    Processes start from a fork server that imported tonsai's pipeline modules (numpy, pyarrow,
    datatrove) once, not by spawning: a spawned process imported them again, about 0.5 s each time,
    and the prepare merge starts processes for six steps. Forking this process itself is not safe:
    it may hold threads (pyarrow, tokenizers, torch). The server is started once per process, with
    the modules of the first pipeline that needs it: later pipelines' own modules load per task."""
    if workers > 1:
        modules = {type(step).__module__ for step in pipeline} | set(PRELOAD)
        multiprocess.get_context("forkserver").set_forkserver_preload(sorted(m for m in modules if m != "__main__"))
    return QuietLocalExecutor(pipeline, tasks=tasks, workers=workers, logging_dir=logging_dir,
                              start_method="forkserver", **kwargs)


def _cache_loguru_lib_dirs() -> None:
    """Make loguru's handlers cheap to add: datatrove adds three per task (a console and a file
    handler, then its default one back), and loguru builds each handler's exception formatter
    with the interpreter's library folders, 72 ``sysconfig.get_path`` calls (about 5 ms, 0.3 s of
    a 26-task prepare on the shared data, profiled). The folders depend only on ``sys.path``, so
    they are kept per ``sys.path``. A loguru without this private hook is left as it is."""
    from loguru import _better_exceptions

    formatter = getattr(_better_exceptions, "ExceptionFormatter", None)
    compute = getattr(formatter, "_get_lib_dirs", None)
    if compute is None or getattr(compute, "tonsai_cached", False):
        return
    per_path = functools.lru_cache(maxsize=8)(lambda path: compute())

    def lib_dirs():
        return list(per_path(tuple(sys.path)))

    lib_dirs.tonsai_cached, lib_dirs.uncached = True, compute
    formatter._get_lib_dirs = staticmethod(lib_dirs)


_cache_loguru_lib_dirs()

PROGRESS_EVERY_S = 30.0


class QuietLocalExecutor(LocalPipelineExecutor):
    """datatrove's LocalPipelineExecutor with a console for people, not for datatrove's developers.

    datatrove prints, for every task, its pipeline, its full stats and a "k/N tasks completed" line
    (a 6-task prepare: about 450 lines). Here each task's log, stats included, goes only to its file
    (``<logging_dir>/logs/task_NNNNN.log``; the stats also to ``stats/``), through datatrove's own
    switch: a task whose ``local_rank`` is not 0 logs only errors to the console (so a task's
    loguru warnings are in its file only). Errors and their tracebacks still reach the console; a
    run longer than :data:`PROGRESS_EVERY_S` logs a line with the finished tasks; the stage logs its
    own summary."""

    stage_process: tuple[int, str] | None = None  # (pid, start time) of the process that runs the executor

    def _run_for_rank(self, rank: int, local_rank: int = 0, node_rank: int = -1):
        logger.disable("datatrove.executor.local")  # "k/N tasks completed", logged in a pool worker
        if self.stage_process and self.stage_process[0] != os.getpid():
            _end_with(self.stage_process)
        return super()._run_for_rank(rank, 1, node_rank)

    def run(self):
        logger.disable("datatrove.executor.local")  # the merged stats of all tasks (in stats.json)
        self.stage_process = _identity(os.getpid())
        done = threading.Event()
        watcher = threading.Thread(target=self._report_progress, args=(done,), daemon=True)
        watcher.start()
        _helpers_end_with_stage.add(threading.get_ident())
        try:
            return self._run_here() if self.workers == 1 and not self.depends else super().run()
        finally:
            _helpers_end_with_stage.discard(threading.get_ident())
            done.set()
            watcher.join()
            logger.enable("datatrove.executor.local")

    def _run_here(self):
        """datatrove's ``run`` for one worker (the tasks one after the other in this process),
        without the multiprocess Manager it starts for any number of workers: a forked server
        process that only hands out local rank 0 here, 15-35 ms to start and stop (measured in a
        200 MB process), and the prepare stage runs seven executors."""
        ranks = range(self.local_rank_offset, self.local_rank_offset + self.local_tasks)
        self._launched = True
        if all(map(self.is_rank_completed, ranks)):
            logger.info(f"Not doing anything as all {self.local_tasks} tasks have already been completed.")
            return None
        self.save_executor_as_json()
        todo = self.get_incomplete_ranks(ranks)
        if (skipped := self.local_tasks - len(todo)) > 0:
            logger.info(f"Skipping {skipped} already completed tasks")
        pipeline, stats = self.pipeline, []
        for rank in todo:
            self.pipeline = copy.deepcopy(pipeline)  # each task starts from the pipeline as given
            stats.append(self._run_for_rank(rank, 0))
        total = sum(stats, start=PipelineStats())
        with self.logging_dir.open("stats.json", "wt") as statsfile:
            total.save_to_disk(statsfile)  # (datatrove also prints them: this console stays quiet)
        return total

    def _report_progress(self, done: threading.Event) -> None:
        """Log the tasks done every PROGRESS_EVERY_S while the count changes, and at least every 10
        times that. Tasks skipped as complete count as done; with ``skip_completed=False`` a task
        counts when its completion mark is newer than this run's start (a step run again finds the
        marks of its earlier run). Local folders only."""
        marks = Path(self.logging_dir.path) / "completions"
        ranks = range(self.local_rank_offset, self.local_rank_offset + self.local_tasks)
        start, since = time.monotonic(), -math.inf if self.skip_completed else time.time()
        last, last_log = -1, start
        while not done.wait(PROGRESS_EVERY_S):
            n = sum(1 for r in ranks if _marked_since(marks / f"{r:05d}", since))
            now = time.monotonic()
            if n != last or now - last_log >= 10 * PROGRESS_EVERY_S:
                log.info("%s: %d of %d tasks done after %.0f s (logs: %s)", self._label(), n, len(ranks),
                         now - start, Path(self.logging_dir.path) / "logs")
                last, last_log = n, now

    def _label(self) -> str:
        names = [getattr(step, "name", type(step).__name__) for step in self.pipeline]
        return names[0] if len(names) == 1 else f"{names[0]} ... {names[-1]}"


# Nothing a stage starts outlives it. Killed (kill -9, an out-of-memory kill, a Colab runtime
# restart), a stage cannot stop its helper processes itself, and before this they went on: datatrove's
# Manager server, forked from the stage's process, ran idle for ever, holding a copy of the output
# folder's lock (so every later run into that folder was refused, naming a process that was gone),
# and the task processes finished their tasks unseen. Now, on Linux:
# - a process forked by a thread that is running a local executor (datatrove's Manager) is killed by
#   the kernel when that thread's process dies (prctl PR_SET_PDEATHSIG, set in the child at fork);
# - a task process (its parent is the fork server, which may outlive the stage) checks twice a second
#   that the stage's process still exists, and stops itself when it does not.
_helpers_end_with_stage: set[int] = set()  # threads inside QuietLocalExecutor.run
_PR_SET_PDEATHSIG = 1
_forking_stage: int | None = None  # set in the parent just before a fork, read in the child
_watched: set[tuple[int, str]] = set()  # stages a thread of this process watches (task processes)


def _before_fork() -> None:
    global _forking_stage
    _forking_stage = os.getpid() if threading.get_ident() in _helpers_end_with_stage else None


def _after_fork_in_child() -> None:
    global _forking_stage
    parent, _forking_stage = _forking_stage, None
    _helpers_end_with_stage.clear()
    _watched.clear()  # the watching thread is not in the child
    if parent is None or not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the stage died before prctl took effect
        os._exit(1)


os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)

STAGE_CHECK_EVERY_S = 0.5


def _identity(pid: int) -> tuple[int, str] | None:
    """(pid, start time in clock ticks since boot) of a live process, None when it is gone or a
    zombie; the start time tells a reused pid apart. Linux only (None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in "ZX" else (pid, fields[19])


def _end_with(stage: tuple[int, str]) -> None:
    """In a task process: a daemon thread (one per process, however many tasks it runs) that kills
    this process once the stage's process is gone."""
    if stage in _watched:
        return
    _watched.add(stage)

    def watch() -> None:
        while _identity(stage[0]) == stage:
            time.sleep(STAGE_CHECK_EVERY_S)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="tonsai-stage-watch", daemon=True).start()


def _marked_since(path: Path, since: float) -> bool:
    try:
        return path.stat().st_mtime >= since
    except FileNotFoundError:
        return False


def unfinished_ranks(logging_dir: Path, outputs: list[Path]) -> list[int]:
    """Ranks without datatrove's completion mark in ``logging_dir``, or without their output file
    (``outputs[rank]``, written last by the task): a mark alone is not trusted."""
    done = Path(logging_dir) / "completions"
    return [r for r, out in enumerate(outputs) if not (done / f"{r:05d}").is_file() or not out.is_file()]


def forget_ranks(logging_dir: Path, outputs: list[Path], ranks: list[int]) -> None:
    """Tasks to redo from scratch: their completion marks and output files go first."""
    for r in ranks:
        (Path(logging_dir) / "completions" / f"{r:05d}").unlink(missing_ok=True)
        outputs[r].unlink(missing_ok=True)


class FinalStep(PipelineStep):
    """A stage's last part as a one-task datatrove step, for the job Slurm runs after the stage's
    tasks succeeded: ``fn(config_cls(**config), **kwargs)`` (for example the prepare merge, or the
    tokenize stage's meta files and manifest)."""

    type = "🏁 - FINISH"

    def __init__(self, name: str, fn, config_cls: type, config: dict, **kwargs):
        super().__init__()
        self.name = name
        # one callable, not the config class as an attribute: datatrove's executor.json encoder
        # calls dataclasses.asdict on any dataclass attribute, and fails on a class
        self.call = functools.partial(fn, config_cls(**config), **kwargs)

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        self.call()
        return
        yield


@dataclasses.dataclass(kw_only=True)
class ExecutorOptions:
    """Executor flags of a datatrove stage (a mixin for the stage's config dataclass)."""

    executor: str = dataclasses.field(default="local", metadata={
        "help": "where the tasks run: local processes, Slurm array jobs (the command submits and returns), "
                "or a Ray cluster", "choices": list(EXECUTORS)})
    slurm_partition: str | None = dataclasses.field(default=None, metadata={
        "help": "Slurm partition (needed with --executor slurm)"})
    slurm_time: str = dataclasses.field(default="12:00:00", metadata={"help": "Slurm time limit per job"})
    slurm_cpus_per_task: int = dataclasses.field(default=1, metadata={"help": "CPUs per Slurm task"})
    slurm_mem_per_cpu_gb: int = dataclasses.field(default=4, metadata={"help": "memory per CPU in GB (Slurm)"})
    slurm_qos: str | None = dataclasses.field(default=None, metadata={"help": "Slurm QOS"})
    slurm_sbatch: list[str] = dataclasses.field(default_factory=list, metadata={
        "help": "extra #SBATCH lines as KEY=VALUE (e.g. account=myproj constraint=cpu), or KEY for a flag",
        "metavar": "KEY=VALUE"})
    slurm_env_command: str | None = dataclasses.field(default=None, metadata={
        "help": "shell line run before each Slurm job (default: cd here and activate this Python environment)"})
    ray_address: str | None = dataclasses.field(default=None, metadata={
        "help": "Ray cluster address (e.g. ray://head:10001 or auto); default: start a local Ray instance"})
    ray_mem_per_cpu_gb: float = dataclasses.field(default=2.0, metadata={
        "help": "memory Ray reserves per task, in GB"})

    def check_executor(self) -> None:
        """Validate the executor flags (call from the config's ``__post_init__``)."""
        if self.executor not in EXECUTORS:
            raise ValueError(f"--executor {self.executor!r}: choose one of {', '.join(EXECUTORS)}")
        if self.executor == "slurm" and not self.slurm_partition:
            raise ValueError("--executor slurm needs --slurm-partition")
        if self.slurm_cpus_per_task < 1 or self.slurm_mem_per_cpu_gb < 1:
            raise ValueError("--slurm-cpus-per-task and --slurm-mem-per-cpu-gb must be at least 1")
        if not self.ray_mem_per_cpu_gb > 0:
            raise ValueError("--ray-mem-per-cpu-gb must be > 0")
        self.parsed_sbatch_args()

    def parsed_sbatch_args(self) -> dict[str, str]:
        out = {}
        for item in self.slurm_sbatch:
            key, _, value = item.partition("=")
            key = key.strip().removeprefix("--")
            if not key or any(c.isspace() for c in key):
                raise ValueError(f"--slurm-sbatch {item!r}: expected KEY=VALUE, e.g. account=myproj")
            out[key] = value
        return out

    def slurm_settings(self) -> dict:
        """Keyword arguments of datatrove's SlurmPipelineExecutor common to every job of a stage."""
        return dict(time=self.slurm_time, partition=self.slurm_partition, cpus_per_task=self.slurm_cpus_per_task,
                    mem_per_cpu_gb=self.slurm_mem_per_cpu_gb, qos=self.slurm_qos or None,
                    env_command=self.slurm_env_command or f"cd {os.getcwd()} && source {sys.prefix}/bin/activate",
                    sbatch_args=self.parsed_sbatch_args(), mail_user=None, requeue=True)


def slurm_executor(opts: ExecutorOptions, pipeline: list, *, tasks: int, workers: int, job_name: str,
                   logging_dir: str, depends=None):
    """A datatrove SlurmPipelineExecutor: one array job of ``tasks`` tasks, at most ``workers`` at a
    time (1: no limit), after ``depends`` succeeded when given."""
    return SlurmPipelineExecutor(pipeline, tasks=tasks, workers=workers if workers > 1 else -1, job_name=job_name,
                                 logging_dir=logging_dir, depends=depends, **opts.slurm_settings())


def run_on_ray(opts: ExecutorOptions, pipeline: list, *, tasks: int, workers: int, logging_dir: str) -> None:
    """Run the pipeline's tasks on Ray: the cluster at ``--ray-address``, else a local instance of
    ``workers`` CPUs started (and stopped) here. Paths must be on a filesystem every node sees."""
    if not opts.ray_address and "ray" not in sys.modules:
        # a local instance's workers share this environment; Ray's `uv run` hook would package the
        # working folder and start every worker through uv (measured: 4 trivial tasks 97 s against
        # 1 s; under `uv run --no-sync` the workers' new environment lacks Ray and they never start).
        # Ray reads the variable once, when it is imported.
        os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    import ray  # here: Ray reads RAY_ENABLE_UV_RUN_RUNTIME_ENV when imported (and takes 0.5 s)

    started = not ray.is_initialized()
    if started:
        ray.init(address=opts.ray_address or None, num_cpus=None if opts.ray_address else workers,
                 include_dashboard=False, log_to_driver=False)
    try:
        RayPipelineExecutor(pipeline, tasks=tasks, workers=workers, logging_dir=logging_dir, cpus_per_task=1,
                            mem_per_cpu_gb=opts.ray_mem_per_cpu_gb).run()
    finally:
        if started:
            ray.shutdown()
