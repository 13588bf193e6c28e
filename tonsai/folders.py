"""Where a stage may write, and one writer at a time.

The rule, the same for every stage (README "Safety of your data"):

- A stage writes only into a folder that does not exist, is empty, or holds that same stage's own
  earlier output: its ``manifest.json`` names the stage, or, for folders a stage fills over time
  and resumes (a training run, prepare's work folder, token folders), the ownership mark
  ``.tonsai-stage.json`` that the stage left when it started there.
- A complete earlier output is replaced only with ``--overwrite``; a stage that resumes (training,
  token folders, prepare's shards) continues its own folder without it.
- Never a folder that is, holds, or lies inside one of the stage's inputs, and never inside another
  tonsai output (a run, a model, a checkpoint, a dataset): ``eval_model.py --output-dir RUN`` would
  otherwise replace the run it evaluates.
- One writer per folder: :class:`FolderLock` holds ``.<name>.lock`` beside the folder (beside, not
  inside, because staged outputs appear by a rename at the end). The lock is an ``flock`` on that
  file, which the kernel drops when its process dies, and the file records pid, host and start
  time for the message a second writer gets. A lock file whose ``flock`` is free was left by a
  killed process: it is taken over with a log line.

Written here rather than borrowed: datatrove's executors mark completed tasks but neither lock a
folder nor refuse a foreign one, and git's rules ("never touch what you did not make") are what a
user expects of a stage's ``--output-dir``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import fnmatch
import json
import logging
import os
import shutil
import socket
from pathlib import Path
from typing import Iterable, Iterator

from tonsai.atomic import umask, write_json
from tonsai.errors import StageError

log = logging.getLogger(__name__)
OWNER_FILE = ".tonsai-stage.json"
MANIFEST_NAME = "manifest.json"


def folder_stage(path: Path) -> str | None:
    """The tonsai stage whose output ``path`` holds (its manifest, else its ownership mark), or None."""
    for name in (MANIFEST_NAME, OWNER_FILE):
        try:
            stage = json.loads((path / name).read_text(encoding="utf-8")).get("stage")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(stage, str):
            return stage
    return None


def _is_tonsai_or_model_folder(p: Path) -> str | None:
    """What ``p`` is when it is a folder no other stage may write inside, else None."""
    stage = folder_stage(p)
    if stage:
        return f"a tonsai {stage} output"
    if (p / "trainer_state.json").is_file():
        return "a training checkpoint"
    if (p / "config.json").is_file() and any((p / f).is_file() for f in
                                             ("model.safetensors", "model.safetensors.index.json",
                                              "pytorch_model.bin")):
        return "a model folder"
    return None


def static_prefix(pattern: str) -> Path:
    """The folder part of a path or glob before its first wildcard (``corpus/*/a.txt`` -> ``corpus``)."""
    parts = Path(pattern).parts
    for i, part in enumerate(parts):
        if any(c in part for c in "*?["):
            return Path(*parts[:i]) if i else Path(".")
    return Path(pattern)


def _listing(entries: list[Path]) -> str:
    names = sorted(e.name + ("/" if e.is_dir() else "") for e in entries)
    return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")


def check_inputs_apart(out: Path, inputs: Iterable[str | Path], flag: str = "--output-dir") -> None:
    """Refuse an output that is, holds, or lies inside one of ``inputs``."""
    target = out.resolve()
    for inp in inputs:
        if not Path(inp).exists():
            continue  # a Hub name or a tokenizer name, not a local path
        src = Path(inp).resolve()
        if src == target or src.is_relative_to(target):
            raise StageError(f"{flag} {out} holds the input {inp}: writing there would replace it. "
                             f"Choose an {flag} outside the inputs.")
        if target.is_relative_to(src) and src.is_dir():
            raise StageError(f"{flag} {out} lies inside the input folder {inp}: a later run would read the "
                             f"output as input. Choose an {flag} outside it.")


def check_output_dir(out: str | Path, stage: str, *, inputs: Iterable[str | Path] = (), overwrite: bool = False,
                     resumable: bool = False, flag: str = "--output-dir",
                     legacy: Iterable[str] = ()) -> None:
    """Raise :class:`StageError` unless ``stage`` may write ``out`` (see the module docstring).

    ``resumable``: the stage continues its own incomplete or complete folder without --overwrite.
    ``legacy``: name patterns (fnmatch) of the entries of this stage's own folders made before
    ownership marks existed.
    """
    out = Path(out)
    check_inputs_apart(out, inputs, flag)
    for parent in out.resolve().parents:
        what = _is_tonsai_or_model_folder(parent)
        if what:
            raise StageError(f"{flag} {out} lies inside {parent}, {what}: a stage never writes inside another "
                             f"stage's output. Choose a folder beside it instead (e.g. {parent.parent / out.name}).")
    if not out.exists():
        return
    if not out.is_dir():
        raise StageError(f"{flag} {out} is a file, not a folder: choose another {flag}")
    entries = list(out.iterdir())
    if not entries:
        return
    owner = folder_stage(out)
    legacy = list(legacy)
    if owner is None and legacy and all(any(fnmatch.fnmatchcase(e.name, p) for p in legacy) for e in entries):
        owner = stage  # made by this stage before ownership marks existed
    if owner != stage:
        made = f"the output of tonsai's {owner} stage" if owner else "files tonsai did not make"
        article = "An" if stage[:1] in "aeiou" else "A"
        raise StageError(f"{flag} {out} already holds {_listing(entries)} ({made}). {article} {stage} stage writes only "
                         f"into a new or empty folder, or over its own earlier output: choose another {flag}.")
    if resumable or overwrite:
        return
    if (out / MANIFEST_NAME).is_file():
        raise StageError(f"{flag} {out} already holds a complete {stage} output: pass --overwrite to replace it, "
                         f"or choose another {flag}.")


_HELD: dict[int, "FolderLock"] = {}  # lock fd -> its lock, in this process


def _drop_inherited_locks() -> None:
    """In a forked child (DataLoader workers, datatrove's Manager): close the copies of this process's
    lock files. The lock belongs to the stage's process: a child holding a copy kept the folder locked
    after the stage was killed (5-15 s for DataLoader workers), and the next run was refused."""
    for fd, lock in _HELD.items():
        with contextlib.suppress(OSError):
            os.close(fd)
        lock.fd = None  # so the child's release() leaves the parent's lock file alone
    _HELD.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


class FolderLock:
    """An exclusive, process-lifetime lock on ``folder`` (``.<name>.lock`` beside it); forked
    children do not hold it."""

    def __init__(self, folder: str | Path, stage: str):
        self.folder = Path(folder)
        self.path = self.folder.parent / f".{self.folder.name}.lock"
        self.stage = stage
        self.fd: int | None = None

    def acquire(self) -> FolderLock:
        while True:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~umask())
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise
                raise StageError(f"cannot write beside {self.folder} ({e.strerror}: {self.path}); choose a folder "
                                 f"in a place you can write") from e
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise StageError(
                    f"{self.folder} is being written by another run: {holder} (lock {self.path}). Wait for it to "
                    f"finish or stop it, or choose another folder. Two writers would mix their files.") from None
            try:  # the holder may have released and removed the file between our open and flock
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        stale = _read_holder(fd, raw=True)
        if stale:
            log.warning("taking over the lock on %s left by a process that is gone (%s)", self.folder, stale)
        info = {"stage": self.stage, "pid": os.getpid(), "host": socket.gethostname(),
                "started_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        os.fsync(fd)
        self.fd = fd
        _HELD[fd] = self
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        _HELD.pop(self.fd, None)
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int, raw: bool = False) -> str:
    data = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
    if raw or not data:
        return data or ("" if raw else "a process that left no details")
    try:
        h = json.loads(data)
        return f"{h.get('stage')} stage, pid {h.get('pid')} on host {h.get('host')}, since {h.get('started_utc')}"
    except ValueError:
        return data


def remove_stale_staging(folder: Path) -> None:
    """Delete ``.tmp-<name>-*`` / ``.old-<name>-*`` beside ``folder``: the staging folders of an earlier
    run of this stage that was killed before its rename. Call only while holding the folder's lock."""
    for pattern in (f".tmp-{folder.name}-*", f".old-{folder.name}-*"):
        for p in folder.parent.glob(pattern):
            log.info("removing %s, left by an interrupted run", p)
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


@contextlib.contextmanager
def claim_output(out: str | Path, stage: str, *, inputs: Iterable[str | Path] = (), overwrite: bool = False,
                 flag: str = "--output-dir") -> Iterator[Path]:
    """Hold ``out`` for a stage that writes it at the end by a rename (:func:`tonsai.atomic.staged_dir`):
    check the rule, take the lock, clear this stage's leftovers, and release the lock afterwards."""
    out = Path(out)
    check_output_dir(out, stage, inputs=inputs, overwrite=overwrite, flag=flag)
    with FolderLock(out, stage):
        check_output_dir(out, stage, inputs=inputs, overwrite=overwrite, flag=flag)  # as seen under the lock
        remove_stale_staging(out)
        yield out


@contextlib.contextmanager
def claim_in_place(folder: str | Path, stage: str, *, inputs: Iterable[str | Path] = (), flag: str = "--output-dir",
                   legacy: Iterable[str] = (), lock: bool = True) -> Iterator[Path]:
    """Hold ``folder`` for a stage that fills it over time and resumes there (a run, a work folder):
    check the rule, take the lock, and leave the ownership mark that lets a rerun continue."""
    folder = Path(folder)
    check_output_dir(folder, stage, inputs=inputs, resumable=True, flag=flag, legacy=legacy)
    held = FolderLock(folder, stage).acquire() if lock else None
    created, marked = not folder.exists(), False
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if folder_stage(folder) is None:
            write_json(folder / OWNER_FILE, {"stage": stage, "created_utc": _dt.datetime.now(
                _dt.timezone.utc).isoformat(timespec="seconds")})
            marked = True
        yield folder
    except BaseException:
        # refused before it wrote anything (a bad budget, a wrong tokenizer): leave no mark that
        # would make the folder this stage's for every other stage
        if marked and [p.name for p in folder.iterdir()] == [OWNER_FILE]:
            (folder / OWNER_FILE).unlink()
            if created:
                folder.rmdir()
        raise
    finally:
        if held:
            held.release()
