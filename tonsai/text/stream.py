"""Streaming normalization of files, folders or stdin (scripts/normalize_text.py).

Text is read in chunks of at most ``chunk_chars`` characters and never as a whole file. A chunk is
cut after its last space or newline (never between CR and LF), so a line of any length streams in
bounded memory; every rule of :func:`tonsai.text.normalize` acts within runs of non-space
characters, so normalizing the pieces equals normalizing the whole line. Writing to a pipe whose
reader has gone (``normalize_text.py big.txt | head``) ends the run quietly with exit status 0.
"""

from __future__ import annotations

import dataclasses
import io
import os
import sys
from pathlib import Path
from typing import Iterable, Iterator, TextIO

from tonsai.atomic import open_atomic, staged_dir
from tonsai.errors import StageError
from tonsai.folders import MANIFEST_NAME, check_inputs_apart, claim_output
from tonsai.manifest import write_manifest
from tonsai.text.normalize import normalize

STAGE = "normalize"


@dataclasses.dataclass
class NormalizeTextConfig:
    """Options of scripts/normalize_text.py."""

    inputs: list[str] = dataclasses.field(default_factory=lambda: ["-"], metadata={
        "help": "files or folders to read ('-' for stdin)", "metavar": "PATH"})
    output: str = dataclasses.field(default="-", metadata={
        "help": "'-' for stdout; a file when the one input is a file or stdin; a folder (mirroring the inputs, "
                "with a manifest.json) otherwise"})
    errors: str = dataclasses.field(default="replace", metadata={
        "help": "invalid UTF-8: replace with U+FFFD, or stop with an error", "choices": ["replace", "strict"]})
    chunk_chars: int = dataclasses.field(default=1 << 20, metadata={"help": "largest piece normalized at once"})
    overwrite: bool = dataclasses.field(default=False, metadata={
        "help": "replace an existing --output file, or a folder of an earlier normalize_text run (never an input)"})

    def __post_init__(self) -> None:
        if self.chunk_chars < 16:
            raise ValueError("--chunk-chars must be at least 16")


def normalize_chunks(reader: TextIO, chunk_chars: int = 1 << 20) -> Iterator[str]:
    """Yield the normalized text of ``reader`` piece by piece (see the module docstring).

    A run of more than ``4 * chunk_chars`` characters without any space or newline is cut where it
    stands (and before a trailing CR); only there can a piece boundary fall inside a syllable.
    """
    carry = ""
    while block := reader.read(chunk_chars):
        text = carry + block
        cut = max(text.rfind(" "), text.rfind("\n")) + 1  # just after a space or LF, never after CR
        if cut == 0:
            if len(text) < 4 * chunk_chars:
                carry = text
                continue
            cut = len(text) - text.endswith("\r")
        carry = text[cut:]
        yield normalize(text[:cut])
    if carry:
        yield normalize(carry)


def _files(paths: Iterable[str]) -> list[tuple[Path | None, Path | None]]:
    """(input file, path relative to its root) pairs; (None, None) for stdin."""
    out: list[tuple[Path | None, Path | None]] = []
    for p in paths:
        if p == "-":
            out.append((None, None))
            continue
        path = Path(p)
        if path.is_dir():
            out += [(f, f.relative_to(path)) for f in sorted(path.rglob("*")) if f.is_file()]
        elif path.is_file():
            out.append((path, Path(path.name)))
        else:
            raise StageError(f"{p}: no such file or folder")
    return out


def run_normalize_text(cfg: NormalizeTextConfig) -> int:
    """Normalize every input; returns the number of characters written."""
    files = _files(cfg.inputs)
    written = 0

    def pump(src: TextIO, dst: TextIO, name: str) -> None:
        nonlocal written
        try:
            for piece in normalize_chunks(src, cfg.chunk_chars):
                dst.write(piece)
                written += len(piece)
        except UnicodeDecodeError as e:
            raise StageError(f"{name}: invalid UTF-8 at byte {e.start} (use --errors replace to keep going)") from e

    def open_in(f: Path | None) -> TextIO:
        if f is None:
            return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors=cfg.errors, newline="")
        return open(f, encoding="utf-8", errors=cfg.errors, newline="")

    if cfg.output == "-":
        try:
            for f, _ in files:
                with open_in(f) as src:
                    pump(src, sys.stdout, str(f or "stdin"))
            sys.stdout.flush()
        except BrokenPipeError:
            # the reader stopped early (`... | head`): end quietly, as the Python docs advise ("Note on
            # SIGPIPE"): stdout goes to devnull so the flush at exit cannot fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return written
    out = Path(cfg.output)
    inputs = [p for p in cfg.inputs if p != "-"]
    if len(files) == 1 and not out.is_dir() and not any(Path(p).is_dir() for p in inputs):
        f = files[0][0]
        check_inputs_apart(out, inputs, "--output")
        if out.exists() and not cfg.overwrite:
            raise StageError(f"--output {out} already exists: pass --overwrite to replace it, or choose another file")
        with open_atomic(out) as dst, open_in(f) as src:
            pump(src, dst, str(f or "stdin"))
        return written
    if any(rel == Path(MANIFEST_NAME) for _, rel in files):
        raise StageError(f"an input is named {MANIFEST_NAME}, the name of the output folder's manifest: rename it")
    with claim_output(out, STAGE, inputs=inputs, overwrite=cfg.overwrite, flag="--output"), staged_dir(out) as tmp:
        for f, rel in files:
            if f is None:
                raise StageError("stdin cannot be combined with other inputs when --output is a folder")
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with open_in(f) as src, open(target, "w", encoding="utf-8", newline="") as dst:
                pump(src, dst, str(f))
        write_manifest(tmp, STAGE, cfg, files=len(files), characters_written=written)
    return written
