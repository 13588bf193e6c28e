"""Reading what the prepare stage wrote: its DatasetDict (train and validation splits with text,
lang, source, id) after checking its manifest. Kept apart from tonsai.data.prepare so that the
tokenizer, token packing and evaluation read a dataset without importing the stage's engine."""

from __future__ import annotations

from pathlib import Path

from tonsai.manifest import read_manifest

STAGE = "prepare"


def load_prepared(dataset_dir: str | Path):
    """(DatasetDict, manifest) of the folder written by scripts/prepare_dataset.py."""
    import datasets  # about a second to import; most callers of this module need only STAGE

    manifest = read_manifest(dataset_dir, STAGE)
    return datasets.load_from_disk(str(Path(dataset_dir) / "dataset")), manifest
