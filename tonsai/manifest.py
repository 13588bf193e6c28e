"""The manifest.json that every stage leaves in its output folder.

A manifest records what a stage was asked to do (its resolved config), what it read (the
manifests or content hashes of its inputs), what it produced (counts) and the versions that make
its output comparable (tonsai version, normalizer version, tokenizer hash). The next stage reads it
with :func:`read_manifest` and refuses an input made by the wrong stage.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import platform
from pathlib import Path
from typing import Any

from tonsai import __version__
from tonsai.atomic import write_json
from tonsai.errors import StageError
from tonsai.text.normalize import NORMALIZER_VERSION

MANIFEST_NAME = "manifest.json"
log = logging.getLogger(__name__)


class ManifestError(RuntimeError):
    """An input folder is missing its manifest, or was made by another stage or version."""


def accounting_line(name: str, counts: dict[str, int]) -> str:
    """The line a stage logs per input from the counts its manifest records for it: read, kept,
    and every ``dropped:<reason>``, the largest first (``read == kept + dropped`` by the stages'
    own checks)."""
    drops = sorted(((k.removeprefix("dropped:"), n) for k, n in counts.items() if k.startswith("dropped:") and n),
                   key=lambda kn: (-kn[1], kn[0]))
    reasons = ", ".join(f"{k} {n:,}" for k, n in drops)
    return (f"{name}: read {counts.get('read', 0):,}, kept {counts.get('kept', 0):,}, "
            f"dropped {sum(n for _, n in drops):,}" + (f" ({reasons})" if reasons else ""))


def file_sha256(path: str | Path) -> str:
    """Content hash of a file, streamed (hashlib releases the GIL while it reads, so threads can hash
    several files at once)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def tokenizer_hash(tokenizer_dir: str | Path) -> str:
    """SHA-256 of a tokenizer folder's tokenizer.json: the token files, models and evaluations it made
    record it, and readers refuse another tokenizer's."""
    path = Path(tokenizer_dir) / "tokenizer.json"
    if not path.is_file():
        raise StageError(f"{tokenizer_dir} has no tokenizer.json; pass a folder written by train_tokenizer.py")
    return file_sha256(path)


def dataset_hash(dataset_dir: str | Path) -> str:
    """SHA-256 of a prepared dataset's manifest.json: it changes whenever prepare is rerun, so token
    folders made from an older preparation are not reused."""
    path = Path(dataset_dir) / MANIFEST_NAME
    if not path.is_file():
        raise StageError(f"{dataset_dir} has no {MANIFEST_NAME}: not a folder written by prepare_dataset.py")
    return file_sha256(path)


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_manifest(out_dir: str | Path, stage: str, config: Any, **fields: Any) -> dict:
    """Write ``out_dir/manifest.json`` for ``stage`` with the resolved ``config`` and extra fields."""
    manifest = {
        "stage": stage,
        "tonsai_version": __version__,
        "normalizer_version": NORMALIZER_VERSION,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "config": _jsonable(config),
        **_jsonable(fields),
    }
    write_json(Path(out_dir) / MANIFEST_NAME, manifest)
    return manifest


def read_manifest(in_dir: str | Path, stage: str | None = None) -> dict:
    """Read the manifest of ``in_dir`` and check it comes from ``stage``.

    A different normalizer version is logged as a warning: text normalized differently at two
    stages costs tokens and skews evaluation, but old artifacts stay usable.
    """
    path = Path(in_dir) / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(
            f"{in_dir} has no {MANIFEST_NAME}: it is not a complete tonsai output folder "
            f"(an interrupted run leaves no manifest). Re-run the stage that makes it."
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ManifestError(f"{path} is not valid JSON ({e}); re-run the stage that makes it") from e
    if stage is not None and manifest.get("stage") != stage:
        raise ManifestError(
            f"{in_dir} was written by stage {manifest.get('stage')!r}, but a {stage!r} folder is "
            f"expected here. Check the path."
        )
    other = manifest.get("normalizer_version")
    if other is not None and other != NORMALIZER_VERSION:
        log.warning(
            "%s was made with normalizer %s but this tonsai uses %s: text may be normalized "
            "differently between stages; re-run that stage to be consistent.",
            in_dir, other, NORMALIZER_VERSION,
        )
    return manifest
