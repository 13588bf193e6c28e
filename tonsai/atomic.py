"""Write outputs so that a reader never sees a half-written file or folder.

Every stage writes to a temporary name beside the target and renames it into place at the end:
a crash leaves either the old complete output or an obviously temporary ``.tmp-*`` entry, never a
truncated file under the real name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, TextIO


@contextlib.contextmanager
def open_atomic(path: str | Path) -> Iterator[TextIO]:
    """Open a UTF-8 text file for writing that appears at ``path`` only when the block succeeds
    (temp file in the same folder, fsync, rename); on error the temp file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~umask())  # mkstemp makes 0600: a team sharing the folder could not read it
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask is not thread-safe)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with open_atomic(path) as f:
        f.write(text)


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented UTF-8 JSON, atomically."""
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


@contextlib.contextmanager
def staged_dir(final: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``final`` only if the block finishes without error.

    The temporary folder sits beside ``final`` (same file system, so the rename is atomic).
    On error it is removed and ``final`` is left untouched. Whether ``final`` may be replaced is
    decided before the work starts (:mod:`tonsai.folders`); ``overwrite=False`` refuses any existing one.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    tmp.chmod(0o777 & ~umask())  # mkdtemp makes 0700
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        if not overwrite:
            shutil.rmtree(tmp, ignore_errors=True)
            raise FileExistsError(f"{final} already exists; pass --overwrite or choose another folder")
        old = final.with_name(f".old-{final.name}-{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def replace_dir(staging: str | Path, final: str | Path) -> None:
    """Put the finished folder ``staging`` in place of ``final`` (a run's ``.final-incomplete`` becoming
    ``final/``): a fixed staging name, unlike :func:`staged_dir`'s, lets a rerun of a killed run find
    and clear it before writing it again."""
    final = Path(final)
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)

