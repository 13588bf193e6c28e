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
import sys
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port free on this machine now (for MASTER_PORT)."""
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
    os.environ.setdefault("MASTER_PORT", str(free_port()))
    log.info("no launcher detected: running as a single process (MASTER_PORT=%s)", os.environ["MASTER_PORT"])
    return True


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


SHM_OP = "deepspeed_shm_comm"  # DeepSpeed's shared-memory communication op for CPU processes


def default_extensions_dir() -> str | None:
    """Point TORCH_EXTENSIONS_DIR into this virtual environment unless the user has set it.

    torch's default cache (~/.cache/torch_extensions/<python>_<cuda>) is keyed by path only, so two
    checkouts with their own .venv (different torch or DeepSpeed builds) rebuild each other's
    DeepSpeed ops in turn, minutes each time. Outside a virtual environment sys.prefix may not be
    writable, and torch's default is left alone. Returns the folder in use, or None for torch's default.
    """
    if "TORCH_EXTENSIONS_DIR" not in os.environ and sys.prefix != sys.base_prefix:
        os.environ["TORCH_EXTENSIONS_DIR"] = str(Path(sys.prefix) / "torch_extensions")
        log.info("DeepSpeed ops are cached in %s (this virtual environment; set TORCH_EXTENSIONS_DIR to "
                 "choose another folder)", os.environ["TORCH_EXTENSIONS_DIR"])
    return os.environ.get("TORCH_EXTENSIONS_DIR")


def announce_cpu_op_build() -> bool:
    """On a machine without a GPU DeepSpeed compiles its shared-memory op the first time it starts,
    silently, for minutes: say so first. Returns True when the op is not built yet."""
    if torch.cuda.is_available():
        return False
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if root is not None and list(Path(root).glob(f"{SHM_OP}/*.so")):
        return False
    where = root or "torch's extension cache (~/.cache/torch_extensions)"
    log.info("DeepSpeed compiles its CPU communication op (%s) in %s before training starts: this takes a few "
             "minutes, once per virtual environment (later runs reuse it)", SHM_OP, where)
    return True
