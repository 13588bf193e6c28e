"""Process-group environment for DeepSpeed with or without a launcher.

``deepspeed`` and ``torchrun`` set RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT.
A plain ``python scripts/train_gpt2.py --deepspeed ...`` sets none of them, and DeepSpeed then
falls back to MPI discovery and fails (no mpi4py). :func:`ensure_single_process_env` fills in a
one-process world on a free local port, only for variables that are not already set.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_single_process_env() -> bool:
    """Set a single-process world if no launcher did. Returns True when it filled anything in."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return False
    defaults = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
                "MASTER_ADDR": "127.0.0.1"}
    for k, v in defaults.items():
        os.environ.setdefault(k, v)
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    log.info("no launcher detected: running as a single process (MASTER_PORT=%s)", os.environ["MASTER_PORT"])
    return True


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))
