"""Reading what the prepare stage wrote: its splits (train and validation, with text, lang, source,
id) after checking its manifest. Kept apart from tonsai.data.prepare so that the tokenizer, token
packing and evaluation read a dataset without importing the stage's engine.

Each split is a folder of Arrow stream files (``data-0000k-of-0000K.arrow``, see
tonsai.data.writer); :func:`load_splits` joins them through ``datasets``' public API only.
"""

from __future__ import annotations

from pathlib import Path

from tonsai.errors import StageError
from tonsai.manifest import read_manifest

STAGE = "prepare"
SPLIT_FILES = "data-*-of-*.arrow"


def load_splits(dataset_path: str | Path):
    """``datasets.DatasetDict`` of a prepared ``dataset/`` folder: one split per subfolder, its
    Arrow files memory-mapped (``Dataset.from_file``) and joined in order (``concatenate_datasets``),
    nothing copied. Also reads a folder that ``DatasetDict.save_to_disk`` wrote."""
    import datasets  # about a second to import; most callers of this module need only STAGE

    root = Path(dataset_path)
    splits = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        files = sorted(folder.glob(SPLIT_FILES))
        if files:
            splits[folder.name] = datasets.concatenate_datasets(
                [datasets.Dataset.from_file(str(f), split=folder.name) for f in files])
    if not splits:
        raise StageError(f"{root}: no split folders with {SPLIT_FILES} files; "
                         f"prepare the dataset again with scripts/prepare_dataset.py")
    return datasets.DatasetDict(splits)


def load_prepared(dataset_dir: str | Path):
    """(DatasetDict, manifest) of the folder written by scripts/prepare_dataset.py."""
    manifest = read_manifest(dataset_dir, STAGE)
    return load_splits(Path(dataset_dir) / "dataset"), manifest
