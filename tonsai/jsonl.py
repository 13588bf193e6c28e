"""Reading JSON-lines files that a stage must read whole and exactly (suite items, prompt sets,
saved generations, metrics.jsonl): every non-blank line one JSON value, a line that does not parse
an error naming ``file:line``. Corpus files, where a bad record may be skipped and counted, go
through :mod:`tonsai.data.sources` instead."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from tonsai.errors import StageError


def json_lines(path: str | Path, hint: str = "", objects: bool = True) -> Iterator[tuple[int, Any]]:
    """(line number, value) of every non-blank line of the UTF-8 file ``path``. A line that is not JSON,
    or (with ``objects``) not a JSON object, is a StageError naming the file and line; ``hint`` is
    added to the message (what the file is, what to do)."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                raise StageError(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno}){hint}") from None
            if objects and not isinstance(value, dict):
                raise StageError(f"{path}:{lineno}: expected a JSON object, got {type(value).__name__}{hint}")
            yield lineno, value
