"""Reading raw documents from local files.

A source is a path (file, folder or glob) declared as Khmer or English. Supported files:

- ``.txt``: one document per line (``doc_mode="line"``, the default) or per block separated by
  blank lines (``doc_mode="paragraph"``);
- ``.jsonl``: one JSON object per line with a text field (``text_column``, default ``text``).

Every document gets a stable id, ``<source name>:<file>:<line>``, that the deterministic
validation split and deduplication rely on. Invalid UTF-8 is decoded with U+FFFD replacements and
counted, so it is never lost silently.
"""

from __future__ import annotations

import dataclasses
import glob
import json
from pathlib import Path
from typing import Iterator

from tonsai.cli import StageError

TEXT_SUFFIXES = {".txt"}
JSONL_SUFFIXES = {".jsonl"}


@dataclasses.dataclass
class Document:
    id: str
    text: str
    lang: str
    source: str
    location: str  # file:line, for messages


@dataclasses.dataclass
class Source:
    """One input declared by the user: a path and the language it is supposed to hold."""

    path: str
    lang: str
    name: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            self.name = f"{self.lang}:{Path(self.path).name}"

    def files(self) -> list[Path]:
        p = Path(self.path)
        if any(ch in self.path for ch in "*?["):
            found = sorted(Path(x) for x in glob.glob(self.path, recursive=True))
        elif p.is_dir():
            found = sorted(x for x in p.rglob("*") if x.is_file())
        elif p.is_file():
            return [p]
        else:
            raise StageError(f"{self.lang} source {self.path}: no such file or folder")
        found = [x for x in found if x.suffix in TEXT_SUFFIXES | JSONL_SUFFIXES]
        if not found:
            raise StageError(
                f"{self.lang} source {self.path}: no .txt or .jsonl files found there"
            )
        return found


@dataclasses.dataclass
class ReadStats:
    documents: int = 0
    invalid_utf8_lines: int = 0


def _decode(raw: bytes, stats: ReadStats) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        stats.invalid_utf8_lines += 1
        return raw.decode("utf-8", errors="replace")


def iter_documents(source: Source, stats: ReadStats, doc_mode: str = "line",
                   text_column: str = "text") -> Iterator[Document]:
    """Yield the documents of ``source``, streaming each file line by line."""
    for path in source.files():
        rel = path.name
        if path.suffix in JSONL_SUFFIXES:
            yield from _iter_jsonl(path, rel, source, stats, text_column)
            continue
        with open(path, "rb") as f:
            buf: list[str] = []
            start = 0
            for lineno, raw in enumerate(f, 1):
                line = _decode(raw, stats).rstrip("\r\n")
                if doc_mode == "line":
                    if line.strip():
                        stats.documents += 1
                        yield Document(f"{source.name}:{rel}:{lineno}", line, source.lang, source.name,
                                       f"{path}:{lineno}")
                    continue
                if line.strip():
                    if not buf:
                        start = lineno
                    buf.append(line)
                elif buf:
                    stats.documents += 1
                    yield Document(f"{source.name}:{rel}:{start}", "\n".join(buf), source.lang,
                                   source.name, f"{path}:{start}")
                    buf = []
            if buf:
                stats.documents += 1
                yield Document(f"{source.name}:{rel}:{start}", "\n".join(buf), source.lang,
                               source.name, f"{path}:{start}")


def _iter_jsonl(path: Path, rel: str, source: Source, stats: ReadStats,
                text_column: str) -> Iterator[Document]:
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            line = _decode(raw, stats).strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise StageError(f"{path}:{lineno}: malformed JSON ({e.msg}); fix or remove that line") from e
            if not isinstance(obj, dict) or text_column not in obj:
                cols = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
                raise StageError(
                    f"{path}:{lineno}: no {text_column!r} field (found {cols}); "
                    f"pass --text-column with one of these"
                )
            text = obj[text_column]
            if not isinstance(text, str):
                raise StageError(f"{path}:{lineno}: field {text_column!r} is {type(text).__name__}, not a string")
            stats.documents += 1
            yield Document(f"{source.name}:{rel}:{lineno}", text, source.lang, source.name, f"{path}:{lineno}")
