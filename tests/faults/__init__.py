"""Fault injection and bad inputs (issue 13): each probe runs the real stage, the script where the exit
code matters."""

from __future__ import annotations

import subprocess
import sys

from ..conftest import REPO


def script(name: str, *args, timeout: int = 600, check_rc: int | None = None) -> subprocess.CompletedProcess:
    """Run scripts/NAME as a user would (the test session's offline Hub settings are inherited); with
    ``check_rc``, assert its exit status."""
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / name), *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    if check_rc is not None:
        assert proc.returncode == check_rc, proc.stderr[-3000:]
    return proc
