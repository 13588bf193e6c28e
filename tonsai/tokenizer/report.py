"""The standalone fertility report (scripts/tokenizer_report.py) for an existing tokenizer folder."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from tonsai.manifest import read_manifest
from tonsai.tokenizer import fertility

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TokenizerReportConfig:
    """Options of scripts/tokenizer_report.py."""

    tokenizer_dir: str = dataclasses.field(metadata={"help": "folder written by train_tokenizer.py"})
    output_dir: str | None = dataclasses.field(default=None, metadata={
        "help": "where to write fertility.json and fertility.md (default: --tokenizer-dir)"})
    dataset_dir: str | None = dataclasses.field(default=None, metadata={
        "help": "a prepared dataset whose validation split to measure"})
    parity_file: list[str] = fertility.parity_file_field()
    compare: list[str] = fertility.compare_field()
    fertility_docs: int = fertility.fertility_docs_field()

    def __post_init__(self) -> None:
        if len(self.parity_file) % 2:
            raise ValueError("--parity-file takes pairs: KM_FILE EN_FILE [KM_FILE EN_FILE ...]")
        if not self.parity_file and self.dataset_dir is None:
            raise ValueError("give --parity-file or --dataset-dir: there is nothing to measure otherwise")


def run_tokenizer_report(cfg: TokenizerReportConfig) -> dict:
    read_manifest(cfg.tokenizer_dir, "tokenizer")
    validation = cfg.dataset_dir and fertility.validation_texts(cfg.dataset_dir, cfg.fertility_docs)
    out = Path(cfg.output_dir or cfg.tokenizer_dir)
    report = fertility.write_fertility_report(out, cfg.tokenizer_dir, cfg.parity_file, cfg.compare, validation)
    log.info("wrote %s", out / "fertility.md")
    return report
